"""Benchmark supersede against lm-evaluation-harness on the same jobs, in one run, one table.

A performance benchmark, not a test. It builds what the rows need (offline: a random ~28M Llama
with a word-level tokenizer over 2,000 generated reviews; the real SmolLM2-135M-Instruct from
``real_model``, with the shipped review task few-shot), then, for each row, runs as subprocesses:

* ``supersede bench ... --no-cache --json`` with a fresh result store (wall time measured here,
  scoring time and score read from its JSON);
* lm-eval's CLI, ``lm_eval --model hf ...``, through ``lmeval_timed`` (wall time measured here,
  its model load and scoring phase timed inside, the score read from its results file).

The rows (``bench_rows``): ``single`` and ``multi`` (2,000 one- and two-token-choice examples on
the random model; ``multi-exact`` is ``multi`` with ``--exact``), ``real-mc`` and ``real-gen``
(40 few-shot examples on the real model, multiple choice and generation) and ``real-chat`` (the
chat template; skipped while ``supersede bench`` cannot apply one). It prints one table: wall and
scoring seconds with their ratios (supersede / lm-eval), both scores and whether they are
identical. It exits 1 when a score differs (a correctness failure), 2 when a command fails;
timings are reported, never asserted.

    .venv/bin/python perf/bench_vs_lmeval.py                        # every row
    .venv/bin/python perf/bench_vs_lmeval.py --rows single,real-mc  # some rows

The pieces live beside this script: ``bench_setup`` and ``bench_real`` (models and tasks),
``bench_rows`` (the rows), ``bench_runs`` (each side's command, timed), ``lmeval_timed``
(lm-eval's CLI with its phases timed) and ``bench_report`` (medians, ratios, the table).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_report import not_run, render, summarise_row
from bench_rows import DEFAULT_ROWS, ROWS, Row, build, pick
from bench_runs import Side, SubprocessFailed, run_lmeval, run_supersede, warm_datasets
from bench_setup import Setup


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    rows = ", ".join(f"{row.key} ({row.title})" for row in ROWS)
    parser = argparse.ArgumentParser(
        description="Run supersede and lm-eval side by side on the same jobs; one table.",
    )
    parser.add_argument(
        "--rows",
        default=",".join(DEFAULT_ROWS),
        help=f"comma-separated rows to run (default: all): {rows}",
    )
    parser.add_argument(
        "--examples", type=int, default=2000, help="test documents, random-model rows (2000)"
    )
    parser.add_argument(
        "--real-examples", type=int, default=40, help="test documents, real-model rows (40)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size for both (32)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each; >1 reports medians (1)"
    )
    parser.add_argument(
        "--multi-token",
        action="store_true",
        help="only the two-token-choice rows (same as --rows multi,multi-exact)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS/MKL_NUM_THREADS for every command (default: torch's own choice)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="build here and keep it (default: a temp dir)"
    )
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    args = parser.parse_args(argv)
    if min(args.examples, args.real_examples, args.batch_size, args.repeats) < 1:
        parser.error("--examples, --real-examples, --batch-size and --repeats must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    keys = ["multi", "multi-exact"] if args.multi_token else args.rows.split(",")
    try:
        args.picked = pick([k.strip() for k in keys if k.strip()])
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    if not args.picked:
        parser.error("--rows names no row")
    return args


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_rows(
    runnable: Sequence[tuple[Row, Setup]], workdir: Path, args: argparse.Namespace
) -> tuple[dict[str, list[tuple[Side, Side]]], dict[str, str], dict[str, str]]:
    """Every repeat of every row, rows alternating within a repeat: (runs, failures, shared)."""
    runs: dict[str, list[tuple[Side, Side]]] = {row.key: [] for row, _ in runnable}
    failures: dict[str, str] = {}
    shared: dict[str, str] = {}
    for repeat in range(1, args.repeats + 1):
        lmeval_now: dict[str, Side] = {}
        for row, setup in runnable:
            if row.key in failures:
                continue
            _log(f"repeat {repeat}/{args.repeats}, row {row.key}: {row.title} ...")
            try:
                sup = run_supersede(
                    setup,
                    workdir,
                    args.batch_size,
                    args.threads,
                    row.supersede_args,
                    workdir / f"store-{row.key}-{repeat}.db",
                )
                if row.peer in lmeval_now:
                    lm = lmeval_now[row.peer]
                    shared[row.key] = row.peer
                else:
                    output = workdir / f"lmeval-{row.key}-{repeat}"
                    lm = run_lmeval(
                        setup, workdir, args.batch_size, args.threads, row.lmeval_args, output
                    )
            except SubprocessFailed as exc:
                failures[row.key] = str(exc)
                _log(f"error: {exc}")
                continue
            lmeval_now[row.key] = lm
            runs[row.key].append((sup, lm))
            _log(
                f"  wall {sup.wall_s:.2f} / {lm.wall_s:.2f} s, "
                f"scoring {sup.scoring_s:.2f} / {lm.scoring_s:.2f} s"
            )
    return runs, failures, shared


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="supersede-perf-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        _log(f"building the models and tasks in {workdir} ...")
        setups = build(args.picked, workdir, args.examples, args.real_examples)
        runnable = [(r, s) for r in args.picked if isinstance(s := setups[r.key], Setup)]
        try:
            warm_datasets(sorted({s.task_dir for _, s in runnable}), workdir, args.threads)
        except SubprocessFailed as exc:
            _log(f"warning: lm-eval's data set cache could not be warmed: {exc}")
        runs, failures, shared = run_rows(runnable, workdir, args)
        summaries: list[dict[str, Any]] = []
        for row in args.picked:
            setup = setups[row.key]
            if isinstance(setup, str):
                summaries.append(not_run(row, "skipped", setup))
            elif row.key in failures:
                summaries.append(not_run(row, "failed", failures[row.key].splitlines()[0]))
            else:
                summary = summarise_row(
                    row, setup, runs[row.key], args.batch_size, shared.get(row.key)
                )
                summaries.append(summary)
    settings = {
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "threads": args.threads,
        "reproduce": shlex.join([sys.executable, *sys.argv]),
    }
    print(render(summaries, settings))
    differ = [s["row"] for s in summaries if s["status"] == "ran" and not s["score"]["identical"]]
    status = 2 if failures else 1 if differ else 0
    if args.json:
        print(json.dumps({"settings": settings, "rows": summaries, "status": status}, indent=2))
    if failures:
        _log(f"error: a command failed in row {', '.join(failures)}")
    if differ:
        _log(f"error: supersede and lm-eval scores differ in row {', '.join(differ)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
