"""The report of perf/bench_vs_lmeval.py: medians over the repeats, ratios, the score check,
and the printed table."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench_runs import Figures, driver_command, lmeval_command, supersede_command
from bench_setup import Setup

#: Scores are means of 0/1 outcomes; anything beyond float noise is a different prediction.
SCORE_TOLERANCE = 1e-9
#: Warn when other processes took more than this many CPU seconds per second of the runs.
DISTURBED_FRACTION = 0.1


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


def summarise(
    setup: Setup,
    runs: Sequence[Figures],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Median of every figure over the repeats, plus the ratios and the identity check."""
    med = {key: _median([getattr(r, key) for r in runs]) for key in asdict(runs[0])}
    sup_score, lm_score = runs[-1].supersede_score, runs[-1].lmeval_score
    scores = [s for r in runs for s in (r.supersede_score, r.lmeval_score, r.lmeval_driver_score)]
    identical = max(scores) - min(scores) <= SCORE_TOLERANCE

    def pair(key: str) -> dict[str, float]:
        sup, lm = med[f"supersede_{key}"], med[f"lmeval_{key}"]
        return {"supersede": sup, "lmeval": lm, "ratio": _ratio(sup, lm)}

    return {
        "variant": setup.variant,
        "task": setup.task_name,
        "n": runs[-1].supersede_n,
        "parameters": setup.parameters,
        "vocab_size": setup.vocab_size,
        "batch_size": args.batch_size,
        "repeats": len(runs),
        "torch_threads": runs[-1].lmeval_torch_threads,
        "cpu_count": os.cpu_count(),
        "others_cpu_s": {
            "supersede": sum(r.supersede_others_cpu_s for r in runs),
            "lmeval": sum(r.lmeval_others_cpu_s for r in runs),
            "window_s": sum(r.supersede_window_s + r.lmeval_window_s for r in runs),
        },
        "wall_s": pair("wall_s"),
        "cpu_s": pair("cpu_s"),
        "scoring_s": pair("scoring_s"),
        "supersede_load_s": med["supersede_load_s"],
        "supersede_outside_scoring_s": med["supersede_wall_s"] - med["supersede_scoring_s"],
        "lmeval_outside_scoring_s": med["lmeval_wall_s"] - med["lmeval_scoring_s"],
        "lmeval_driver_load_s": med["lmeval_driver_load_s"],
        "lmeval_driver_evaluate_s": med["lmeval_driver_eval_s"],
        "score": {"supersede": sup_score, "lmeval": lm_score, "identical": identical},
        "per_repeat": [asdict(r) for r in runs],
        "commands": {
            "reproduce": shlex.join([sys.executable, *sys.argv]),
            "cwd": str(setup.task_dir),
            "supersede": shlex.join(supersede_command(setup, args.batch_size)),
            "lmeval": shlex.join(lmeval_command(setup, args.batch_size, Path("OUT"))),
            "lmeval_scoring_driver": shlex.join(driver_command(setup, args.batch_size)),
        },
    }


def _figure_row(label: str, figure: dict[str, float]) -> tuple[str, str, str, str]:
    return (
        label,
        f"{figure['supersede']:.2f}",
        f"{figure['lmeval']:.2f}",
        f"{figure['ratio']:.3f}",
    )


def _seconds(value: float) -> str:
    # A difference of timings from two processes goes negative only when a run was disturbed.
    return f"{value:.2f}" if value >= 0 else "n/a"


def render(summary: dict[str, Any]) -> str:
    """The human-readable table."""
    score = summary["score"]
    of = f" (median of {summary['repeats']})" if summary["repeats"] > 1 else ""
    rows = [
        ("", "supersede", "lm-eval", "supersede/lm-eval"),
        _figure_row(f"wall s, whole command{of}", summary["wall_s"]),
        _figure_row(f"scoring s{of}", summary["scoring_s"]),
        _figure_row(f"CPU s, whole command{of}", summary["cpu_s"]),
        (
            "score (acc)",
            f"{score['supersede']:.4f}",
            f"{score['lmeval']:.4f}",
            "identical: " + ("yes" if score["identical"] else "NO"),
        ),
        (
            "wall s outside scoring",
            _seconds(summary["supersede_outside_scoring_s"]),
            _seconds(summary["lmeval_outside_scoring_s"]),
            "",
        ),
        ("  supersede load_s", f"{summary['supersede_load_s']:.2f}", "", ""),
        (
            "  lm-eval HFLM() s / evaluate s",
            "",
            f"{summary['lmeval_driver_load_s']:.2f} / {summary['lmeval_driver_evaluate_s']:.2f}",
            "",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    others = summary["others_cpu_s"]
    lines = [
        f"supersede vs lm-eval: {summary['task']} ({summary['variant']} choices)",
        f"  n={summary['n']}  parameters={summary['parameters']:,}  "
        f"vocab={summary['vocab_size']}  batch_size={summary['batch_size']}  "
        f"torch threads={summary['torch_threads']}  repeats={summary['repeats']}",
        f"  cpus={summary['cpu_count']}  CPU s other processes took from the cores in use: "
        f"{others['supersede']:.1f} during supersede, {others['lmeval']:.1f} during lm-eval",
        "",
    ]
    for i, row in enumerate(rows):
        cells = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        lines.append("  " + cells.rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    if summary["repeats"] > 1:
        lines += ["", "  per repeat (supersede / lm-eval):"]
        for i, r in enumerate(summary["per_repeat"], 1):
            lines.append(
                f"    {i}: wall {r['supersede_wall_s']:.2f} / {r['lmeval_wall_s']:.2f} s, "
                f"scoring {r['supersede_scoring_s']:.2f} / {r['lmeval_scoring_s']:.2f} s"
            )
    if others["supersede"] + others["lmeval"] > DISTURBED_FRACTION * others["window_s"]:
        lines += [
            "",
            "  warning: other processes used the CPUs during the runs; timings are unreliable",
            "  (rerun on a quiet machine, or with --threads 1 --repeats 3).",
        ]
    commands = summary["commands"]
    lines += [
        "",
        f"reproduce:   {commands['reproduce']}",
        f"  commands run from {commands['cwd']}:",
        f"  supersede: {commands['supersede']}",
        f"  lm-eval:   {commands['lmeval']}",
        f"  scoring:   {commands['lmeval_scoring_driver']}",
    ]
    return "\n".join(lines)
