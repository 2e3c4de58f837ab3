"""Benchmark supersede against lm-evaluation-harness on the same model and task, in one run.

A performance benchmark, not a test: it builds (offline, from a seed) a word-level tokenizer with
a ~8k vocabulary and a random ~25M-parameter Llama model saved as safetensors, writes a
2,000-example ``multiple_choice`` task in lm-eval's YAML format, and then runs, as subprocesses:

* ``supersede bench ... --no-cache --json`` with a fresh result store (wall time measured here,
  scoring time and score read from its JSON);
* ``lm_eval --model hf ...`` through its CLI (wall time measured here, score read from the results
  file it writes);
* a small lm-eval driver (this file, ``_lmeval-scoring``) that builds ``HFLM`` and times its whole
  ``loglikelihood()`` call (tokenization included, as supersede's ``scoring_s`` includes it)
  inside ``lm_eval.simple_evaluate``.

It prints wall and scoring-phase seconds with their ratios (supersede / lm-eval), both scores and
whether they are identical. It exits 1 when the scores differ (a correctness failure), 2 when a
subprocess fails; timings are reported, never asserted.

    .venv/bin/python perf/bench_vs_lmeval.py                 # single-token choices (fast path)
    .venv/bin/python perf/bench_vs_lmeval.py --multi-token   # multi-token choices

The pieces live beside this script: ``bench_setup`` (the model and task), ``bench_runs`` (each
side's command, timed) and ``bench_report`` (medians, ratios, the table).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_report import render, summarise
from bench_runs import DRIVER_COMMAND, DRIVER_MARKER, SubprocessFailed, run_once
from bench_setup import build_setup


def lmeval_scoring_driver(model_dir: str, task_dir: str, task: str, batch_size: int) -> None:
    """Time lm-eval's whole ``HFLM.loglikelihood`` call; print one marked JSON line."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    spent: list[float] = []
    original = HFLM.loglikelihood

    def timed(self: Any, requests: Any, disable_tqdm: bool = False) -> Any:
        started = time.perf_counter()
        try:
            return original(self, requests, disable_tqdm=disable_tqdm)
        finally:
            spent.append(time.perf_counter() - started)

    HFLM.loglikelihood = timed
    started = time.perf_counter()
    lm = HFLM(pretrained=model_dir, dtype="float32", device="cpu", batch_size=batch_size)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    results = simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=TaskManager(include_path=task_dir, include_defaults=False),
    )
    evaluate_s = time.perf_counter() - started
    if results is None:
        raise SystemExit("simple_evaluate returned no results")
    summary = {
        "loglikelihood_s": sum(spent),
        "loglikelihood_calls": len(spent),
        "load_s": load_s,
        "evaluate_s": evaluate_s,
        "score": float(results["results"][task]["acc,none"]),
        "torch_threads": torch.get_num_threads(),
    }
    sys.stdout.write(DRIVER_MARKER + json.dumps(summary) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run supersede and lm-eval side by side on the same model and task.",
    )
    parser.add_argument("--examples", type=int, default=2000, help="test documents (2000)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size for both (32)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each; >1 reports medians (1)"
    )
    parser.add_argument(
        "--multi-token",
        action="store_true",
        help="multi-token choices, so supersede's single-token fast path is not used",
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
    if args.examples < 1 or args.batch_size < 1 or args.repeats < 1:
        parser.error("--examples, --batch-size and --repeats must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == DRIVER_COMMAND:
        model_dir, task_dir, task, batch_size = argv[1:5]
        lmeval_scoring_driver(model_dir, task_dir, task, int(batch_size))
        return 0
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="supersede-perf-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"building the model and task in {workdir} ...", file=sys.stderr, flush=True)
        setup = build_setup(workdir, args.examples, args.multi_token)
        runs = []
        for repeat in range(1, args.repeats + 1):
            print(f"repeat {repeat}/{args.repeats} ...", file=sys.stderr, flush=True)
            try:
                runs.append(run_once(setup, workdir, args.batch_size, args.threads, repeat))
            except SubprocessFailed as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        summary = summarise(setup, runs, args)
    print(render(summary))
    if args.json:
        print(json.dumps(summary, indent=2))
    if not summary["score"]["identical"]:
        print("error: supersede and lm-eval scores differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
