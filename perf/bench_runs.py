"""The runs behind perf/bench_vs_lmeval.py: each side's command, run and timed from outside.

Supersede's CLI and lm-eval's CLI (through ``lmeval_timed``, which also times lm-eval's phases)
run one after the other as subprocesses; each is timed (wall, CPU, and the CPU other processes
took meanwhile) and its score read back.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_setup import Setup

#: Runs lm-eval's CLI with its phases timed (see its docstring).
LMEVAL_TIMED = Path(__file__).resolve().with_name("lmeval_timed.py")


@dataclass(frozen=True)
class Side:
    """One side's command, measured once."""

    wall_s: float
    cpu_s: float
    #: CPU seconds other processes took from the cores in use while it ran.
    others_cpu_s: float
    #: Loading the model (supersede's ``load_s``; lm-eval's ``HFLM()``).
    load_s: float
    scoring_s: float
    score: float
    n: int | None = None
    #: supersede only: the seconds from its model loaded to its first batch scored
    #: (``startup.first_batch``: rendering, tokenizing, the small warm-up pass and that batch, so
    #: it overlaps scoring_s), and the latency pass after scoring (``runtime.latency_sample``
    #: requests at batch 1, outside scoring_s).
    warmup_s: float | None = None
    latency_s: float | None = None
    #: lm-eval only: the whole ``simple_evaluate`` call, and torch's thread count.
    evaluate_s: float | None = None
    torch_threads: int | None = None


class SubprocessFailed(RuntimeError):
    """A benchmarked command exited non-zero."""


def env(workdir: Path, threads: int | None, store_db: Path | None = None) -> dict[str, str]:
    """The environment of every command: offline, quiet, the data set cache in ``workdir``."""
    variables = dict(os.environ)
    if threads is not None:
        variables["OMP_NUM_THREADS"] = variables["MKL_NUM_THREADS"] = str(threads)
    variables.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # lm-eval's data set cache stays inside the work folder (warmed before the runs).
            "HF_DATASETS_CACHE": str(workdir / "hf_datasets"),
        }
    )
    if store_db is not None:
        variables["SUPERSEDE_STORE__URL"] = f"sqlite:///{store_db}"
        # Like for like: lm-eval times no requests one at a time after its run.
        variables["SUPERSEDE_RUNTIME__LATENCY_SAMPLE"] = "0"
    return variables


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine_busy_s() -> float:
    """CPU seconds the machine has spent busy (all processes), from /proc/stat; 0 if absent."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Timed:
    """A finished command: wall and CPU seconds, CPU seconds others took meanwhile, stdout."""

    wall_s: float
    cpu_s: float
    others_cpu_s: float
    stdout: str


def run(cmd: Sequence[str], cwd: Path, variables: dict[str, str], threads: int | None) -> Timed:
    """Run ``cmd`` and time it. Raises :class:`SubprocessFailed`.

    CPU seconds (user + system, all threads) come from the children's rusage; the commands run
    one at a time, so the difference is this command's alone. ``others_cpu_s`` is the CPU time
    the rest of the machine used meanwhile beyond the cores this command left idle (``threads``
    of them busy): well above zero means the timings were disturbed.
    """
    cpu, busy = _children_cpu_s(), _machine_busy_s()
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=variables, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    cpu = _children_cpu_s() - cpu
    cpus = os.cpu_count() or 1
    spare = max(0, cpus - (threads or cpus)) * wall
    others = max(0.0, _machine_busy_s() - busy - cpu - spare)
    if proc.returncode != 0:
        tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]).strip()
        raise SubprocessFailed(f"{shlex.join(cmd)} exited {proc.returncode}:\n{tail}")
    return Timed(wall, cpu, others, proc.stdout)


def tool(name: str) -> str:
    """A console script next to this interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found next to {sys.executable} or on PATH")
    return found


def supersede_command(setup: Setup, batch_size: int, extra: Sequence[str] = ()) -> list[str]:
    """``supersede bench`` on the setup, fresh (``--no-cache``), JSON on stdout."""
    return [
        tool("supersede"),
        "bench",
        "--model",
        str(setup.model_dir),
        "--task",
        str(setup.task_file),
        "--batch-size",
        str(batch_size),
        "--device",
        "cpu",
        "--no-cache",
        "--json",
        *extra,
    ]


def lmeval_args(
    setup: Setup, batch_size: int, output: Path, extra: Sequence[str] = ()
) -> list[str]:
    """lm-eval's CLI arguments for the same model, task and batch size."""
    return [
        "--model",
        "hf",
        "--model_args",
        f"pretrained={setup.model_dir},dtype=float32",
        "--device",
        "cpu",
        "--include_path",
        str(setup.task_dir),
        "--tasks",
        setup.task_name,
        "--batch_size",
        str(batch_size),
        "--output_path",
        str(output),
        *extra,
    ]


def run_supersede(
    setup: Setup,
    workdir: Path,
    batch_size: int,
    threads: int | None,
    extra: Sequence[str],
    store_db: Path,
) -> Side:
    """``supersede bench`` with a fresh SQLite store, timed; its figures from its JSON."""
    store_db.unlink(missing_ok=True)
    done = run(
        supersede_command(setup, batch_size, extra),
        setup.task_dir,
        env(workdir, threads, store_db),
        threads,
    )
    row = json.loads(done.stdout.strip().splitlines()[-1])
    latency = row.get("latency") or {}
    return Side(
        wall_s=done.wall_s,
        cpu_s=done.cpu_s,
        others_cpu_s=done.others_cpu_s,
        load_s=float(row["load_s"]),
        scoring_s=float(row["scoring_s"]),
        score=float(row["score"]),
        n=int(row["n"]),
        warmup_s=float((row.get("startup") or {}).get("first_batch", 0.0)),
        latency_s=float(latency.get("sample", 0)) * float(latency.get("mean_ms", 0.0)) / 1000,
    )


def _results_score(output: Path, task: str, metric: str) -> float:
    files = sorted(output.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise SubprocessFailed(f"lm_eval wrote no results_*.json under {output}")
    results = json.loads(files[-1].read_text(encoding="utf-8"))
    return float(results["results"][task][f"{metric},none"])


def run_lmeval(
    setup: Setup,
    workdir: Path,
    batch_size: int,
    threads: int | None,
    extra: Sequence[str],
    output: Path,
) -> Side:
    """lm-eval's CLI (through ``lmeval_timed``), timed; the score from its results file."""
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    timings = output / "timings.json"
    cmd = [
        sys.executable,
        str(LMEVAL_TIMED),
        str(timings),
        "--",
        *lmeval_args(setup, batch_size, output / "results", extra),
    ]
    done = run(cmd, setup.task_dir, env(workdir, threads), threads)
    phases = json.loads(timings.read_text(encoding="utf-8"))
    return Side(
        wall_s=done.wall_s,
        cpu_s=done.cpu_s,
        others_cpu_s=done.others_cpu_s,
        load_s=float(phases["load_s"]),
        scoring_s=float(phases["scoring_s"]),
        score=_results_score(output / "results", setup.task_name, setup.metric),
        evaluate_s=float(phases["evaluate_s"]),
        torch_threads=int(phases["torch_threads"]),
    )


def warm_datasets(task_dirs: Sequence[Path], workdir: Path, threads: int | None) -> None:
    """Fill lm-eval's data set cache for these task folders (untimed)."""
    if task_dirs:
        cmd = [sys.executable, str(LMEVAL_TIMED), "--warm", *map(str, task_dirs)]
        run(cmd, workdir, env(workdir, threads), threads)
