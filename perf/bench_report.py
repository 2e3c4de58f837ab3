"""The report of perf/bench_vs_lmeval.py: medians over the repeats, ratios, the score check,
and the one side-by-side table."""

from __future__ import annotations

import math
import os
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench_rows import Row
from bench_runs import LMEVAL_TIMED, Side, lmeval_args, supersede_command, tool
from bench_setup import Setup

#: Scores are means of 0/1 outcomes; anything beyond float noise is a different prediction.
SCORE_TOLERANCE = 1e-9
#: Warn when other processes took more than this many CPU seconds per second of the runs.
DISTURBED_FRACTION = 0.1


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


def commands(row: Row, setup: Setup, batch_size: int) -> dict[str, str]:
    """The row's two commands, as a user would type them (run from the task folder)."""
    lm_eval = [tool("lm_eval"), *lmeval_args(setup, batch_size, Path("OUT"), row.lmeval_args)]
    return {
        "cwd": str(setup.task_dir),
        "supersede": shlex.join(supersede_command(setup, batch_size, row.supersede_args)),
        "lmeval": shlex.join(lm_eval),
        "lmeval_timed": shlex.join([sys.executable, str(LMEVAL_TIMED), "TIMINGS.json", "--"]),
    }


def summarise_row(
    row: Row,
    setup: Setup,
    runs: Sequence[tuple[Side, Side]],
    batch_size: int,
    shared_with: str | None = None,
) -> dict[str, Any]:
    """One row that ran: the median of every figure over the repeats, ratios, the score check.
    ``shared_with`` names the row whose lm-eval runs these are, when they were reused."""
    sup_runs, lm_runs = [r[0] for r in runs], [r[1] for r in runs]

    def pair(key: str) -> dict[str, float]:
        sup = _median([getattr(s, key) for s in sup_runs])
        lm = _median([getattr(s, key) for s in lm_runs])
        return {"supersede": sup, "lmeval": lm, "ratio": _ratio(sup, lm)}

    scores = [s.score for s in sup_runs + lm_runs]
    return {
        "row": row.key,
        "status": "ran",
        "job": row.title,
        "task": setup.task_name,
        "variant": setup.variant,
        "model": setup.model_label,
        "parameters": setup.parameters,
        "metric": setup.metric,
        "n": sup_runs[-1].n,
        "repeats": len(runs),
        "lmeval_shared_with": shared_with,
        "wall_s": pair("wall_s"),
        "scoring_s": pair("scoring_s"),
        "cpu_s": pair("cpu_s"),
        "load_s": pair("load_s"),
        "lmeval_evaluate_s": _median([s.evaluate_s or 0.0 for s in lm_runs]),
        "supersede_warmup_s": _median([s.warmup_s or 0.0 for s in sup_runs]),
        "supersede_latency_s": _median([s.latency_s or 0.0 for s in sup_runs]),
        "torch_threads": lm_runs[-1].torch_threads,
        "score": {
            "supersede": sup_runs[-1].score,
            "lmeval": lm_runs[-1].score,
            "identical": max(scores) - min(scores) <= SCORE_TOLERANCE,
        },
        "others_cpu_s": sum(s.others_cpu_s for s in sup_runs + lm_runs),
        "window_s": sum(s.wall_s for s in sup_runs + lm_runs),
        "per_repeat": [{"supersede": asdict(a), "lmeval": asdict(b)} for a, b in runs],
        "commands": commands(row, setup, batch_size),
    }


def not_run(row: Row, status: str, reason: str) -> dict[str, Any]:
    """A row that was skipped (its model cannot be had, or the feature is missing) or failed."""
    return {"row": row.key, "status": status, "job": row.title, "reason": reason}


def _cells(s: dict[str, Any]) -> list[str]:
    wall, scoring, score = s["wall_s"], s["scoring_s"], s["score"]
    disturbed = s["others_cpu_s"] / s["window_s"] if s["window_s"] > 0 else 0.0
    return [
        s["row"],
        s["job"],
        str(s["n"]),
        f"{wall['supersede']:.2f}",
        f"{wall['lmeval']:.2f}",
        f"{wall['ratio']:.3f}",
        f"{scoring['supersede']:.2f}",
        f"{scoring['lmeval']:.2f}",
        f"{scoring['ratio']:.3f}",
        f"{s['metric']} {score['supersede']:.4f}",
        f"{score['lmeval']:.4f}",
        "yes" if score["identical"] else "NO",
        f"{s['others_cpu_s']:.1f} ({disturbed:.0%})",
    ]


_SIDES = ["supersede", "lm-eval"]
HEADER = [
    ["", "", "", "wall s", "", "", "scoring s", "", "", "score", "", "", ""],
    ["row", "job", "n", *_SIDES, "ratio", *_SIDES, "ratio", *_SIDES, "equal", "others CPU s"],
]


def _table(table: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = []
    for i, cells in enumerate(table):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
        if i == len(HEADER) - 1:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return [line.rstrip() for line in lines]


def render(rows: Sequence[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The human-readable report: one table, the details under it, the commands."""
    ran = [s for s in rows if s["status"] == "ran"]
    of = f", medians of {settings['repeats']} repeats" if settings["repeats"] > 1 else ""
    threads = sorted({str(s["torch_threads"]) for s in ran}) or ["-"]
    lines = [
        f"supersede vs lm-eval, the same jobs side by side (wall s: the whole command; "
        f"ratio = supersede / lm-eval{of})",
        f"  cpus={os.cpu_count()}  torch threads={'/'.join(threads)}  "
        f"batch_size={settings['batch_size']}  repeats={settings['repeats']}",
        "",
        *_table([*HEADER, *(_cells(s) for s in ran)]),
    ]
    for s in rows:
        if s["status"] != "ran":
            lines.append(f"  {s['row']}  {s['job']}: {s['status']}: {s['reason']}")
    lines += ["", "  others CPU s: CPU seconds other processes took from the cores in use"]
    lines += ["  during the row's commands (share of the row's wall time)."]
    models = sorted({(s["model"], s["parameters"]) for s in ran})
    lines += [f"  models: {', '.join(f'{m} ({p:,} parameters)' for m, p in models)}", ""]
    lines.append("  per row: load s (supersede load_s / lm-eval HFLM()); supersede's first batch s")
    lines.append("  (from the model loaded to its first batch scored: rendering, tokenizing, the")
    lines.append("  warm-up pass and that batch, so it overlaps scoring s) and latency pass s")
    lines.append("  (outside scoring s); lm-eval's simple_evaluate s;")
    lines.append("  CPU s of the whole command (supersede / lm-eval = ratio)")
    for s in ran:
        load, cpu = s["load_s"], s["cpu_s"]
        peer = s["lmeval_shared_with"]
        shared = f"  (lm-eval's figures are row {peer}'s)" if peer else ""
        lines.append(
            f"    {s['row']}: load {load['supersede']:.2f} / {load['lmeval']:.2f}, "
            f"first batch {s['supersede_warmup_s']:.2f}, latency {s['supersede_latency_s']:.2f}, "
            f"evaluate {s['lmeval_evaluate_s']:.2f}, "
            f"CPU {cpu['supersede']:.1f} / {cpu['lmeval']:.1f} = {cpu['ratio']:.3f}{shared}"
        )
    if settings["repeats"] > 1:
        lines += ["", "  per repeat, wall s and scoring s (supersede / lm-eval):"]
        for s in ran:
            for i, r in enumerate(s["per_repeat"], 1):
                a, b = r["supersede"], r["lmeval"]
                lines.append(
                    f"    {s['row']} {i}: wall {a['wall_s']:.2f} / {b['wall_s']:.2f}, "
                    f"scoring {a['scoring_s']:.2f} / {b['scoring_s']:.2f}"
                )
    others = sum(s["others_cpu_s"] for s in ran)
    if ran and others > DISTURBED_FRACTION * sum(s["window_s"] for s in ran):
        lines += [
            "",
            "  warning: other processes used the CPUs during the runs; timings are unreliable",
            "  (rerun on a quiet machine, or with --threads 1 --repeats 3).",
        ]
    lines += ["", f"reproduce: {settings['reproduce']}"]
    for s in ran:
        c = s["commands"]
        lines += [
            f"  {s['row']}, from {c['cwd']}:",
            f"    supersede: {c['supersede']}",
            f"    lm-eval:   {c['lmeval']}",
        ]
    if ran:
        lines.append(f"  (lm-eval runs as {ran[0]['commands']['lmeval_timed']} <its arguments>)")
    return "\n".join(lines)
