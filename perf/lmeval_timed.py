"""lm-eval's own command line, with its phases timed: what perf/bench_vs_lmeval.py runs as the
lm-eval side.

    python perf/lmeval_timed.py TIMINGS_JSON -- <lm_eval arguments>

runs ``lm_eval.__main__.cli_evaluate`` (the function the ``lm_eval`` console script calls) with
the given arguments, after wrapping ``HFLM.__init__`` (load), ``HFLM.loglikelihood`` and
``HFLM.generate_until`` (scoring: tokenizing plus the forward passes, the phase supersede reports
as ``scoring_s``) and ``lm_eval.simple_evaluate`` in timers; the seconds are written to
``TIMINGS_JSON`` as the process exits. The wrappers add microseconds, so the process's wall time
is the CLI's.

    python perf/lmeval_timed.py --warm TASK_DIR ...

loads each task folder's JSON data set once through ``datasets`` (run from that folder, as
lm-eval resolves ``data_files`` against the working directory), so that the timed runs find the
data set cache warm, as a regular user's would be.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _timed(spent: list[float], function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    return wrapper


def run_cli(timings_file: Path, cli_args: list[str]) -> None:
    """Run lm-eval's CLI on ``cli_args`` with its load, scoring and evaluate phases timed."""
    import lm_eval
    import torch
    from lm_eval.__main__ import cli_evaluate
    from lm_eval.models.huggingface import HFLM

    load: list[float] = []
    scoring: list[float] = []
    evaluate: list[float] = []
    HFLM.__init__ = _timed(load, HFLM.__init__)
    HFLM.loglikelihood = _timed(scoring, HFLM.loglikelihood)
    HFLM.generate_until = _timed(scoring, HFLM.generate_until)
    lm_eval.simple_evaluate = _timed(evaluate, lm_eval.simple_evaluate)

    def write() -> None:
        figures = {
            "load_s": sum(load),
            "scoring_s": sum(scoring),
            "scoring_calls": len(scoring),
            "evaluate_s": sum(evaluate),
            "torch_threads": torch.get_num_threads(),
        }
        timings_file.write_text(json.dumps(figures), encoding="utf-8")

    atexit.register(write)
    sys.argv = ["lm_eval", *cli_args]
    cli_evaluate()


def warm(task_dirs: list[Path]) -> None:
    """Load each task folder's JSON data set once, as lm-eval does, filling the cache."""
    import datasets
    import yaml

    for task_dir in task_dirs:
        (config_file,) = task_dir.glob("*.yaml")
        config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        os.chdir(task_dir)
        datasets.load_dataset(
            path=config["dataset_path"],
            name=config.get("dataset_name"),
            **config.get("dataset_kwargs", {}),
        )


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--warm":
        warm([Path(p).resolve() for p in argv[1:]])
        return 0
    if len(argv) < 2 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    run_cli(Path(argv[0]), argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
