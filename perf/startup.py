"""Where ``supersede bench`` spends its time before the first batch, on the tiny zoo model.

Runs the whole command as a subprocess (``--json --no-cache``) a few times and prints the median
of every ``startup`` phase, beside the command's wall time as the caller saw it. A benchmark,
not a test: nothing is asserted.

    .venv/bin/python perf/startup.py                 # 3 runs, the zoo built in a temp dir
    .venv/bin/python perf/startup.py --runs 5 --workdir build/startup --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "config" / "tasks" / "review_sentiment" / "review_sentiment.yaml"


def build(workdir: Path) -> tuple[Path, Path]:
    """The tiny zoo's base and adapter (reused when already built in ``workdir``)."""
    sys.path.insert(0, str(REPO))
    from supersede.demo.zoo import build_zoo, read_jsonl

    zoo = build_zoo(workdir / "zoo", read_jsonl(TASK.parent / "train.jsonl"))
    return zoo.base, zoo.adapter


def one_run(base: Path, adapter: Path | None, workdir: Path, limit: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "supersede.cli", "bench", "-m", str(base), "-t", str(TASK)]
    command += ["-a", str(adapter)] if adapter else []
    command += ["--limit", str(limit), "--device", "cpu", "--json", "--no-cache"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"supersede bench failed ({done.returncode}):\n{done.stderr}")
    row = json.loads(done.stdout)
    return {"command_s": wall, "load_s": row["load_s"], **row["startup"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=50, help="Examples scored per run.")
    parser.add_argument("--no-adapter", action="store_true", help="Score the base model alone.")
    parser.add_argument("--workdir", type=Path, help="Build and keep the zoo there.")
    parser.add_argument("--json", action="store_true", help="Also print the medians as JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        workdir = (args.workdir or Path(temp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        base, adapter = build(workdir)
        runs = [
            one_run(base, None if args.no_adapter else adapter, workdir, args.limit)
            for _ in range(args.runs)
        ]
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    phases = [k for k in medians if k not in ("command_s", "load_s")]
    before_scoring = sum(medians[k] for k in phases)
    print(f"supersede bench start-up, median of {args.runs} runs (seconds)")
    for key in phases:
        share = medians[key] / medians["command_s"]
        print(f"  {key:<12} {medians[key]:7.3f}  {share:6.1%}")
    print(f"  {'sum':<12} {before_scoring:7.3f}  {before_scoring / medians['command_s']:6.1%}")
    print(f"  {'command':<12} {medians['command_s']:7.3f}  (load_s {medians['load_s']:.3f})")
    if args.json:
        print(json.dumps({k: round(v, 4) for k, v in medians.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
