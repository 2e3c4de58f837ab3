"""The runs behind perf/bench_vs_lmeval.py: each side's command, run and timed from outside.

Supersede's CLI, lm-eval's CLI and the lm-eval scoring driver run one after another as
subprocesses; each is timed (wall, CPU, and the CPU other processes took meanwhile) and its score
read back.
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

#: The script that runs the lm-eval scoring driver (``bench_vs_lmeval.py _lmeval-scoring ...``).
SCRIPT = Path(__file__).resolve().with_name("bench_vs_lmeval.py")
DRIVER_COMMAND = "_lmeval-scoring"
DRIVER_MARKER = "LMEVAL_SCORING_JSON="


@dataclass(frozen=True)
class Figures:
    """One repeat's measurements."""

    supersede_wall_s: float
    supersede_cpu_s: float
    #: CPU seconds other processes took from the cores supersede used, and how long it ran.
    supersede_others_cpu_s: float
    supersede_window_s: float
    supersede_load_s: float
    supersede_scoring_s: float
    supersede_score: float
    supersede_n: int
    lmeval_wall_s: float
    lmeval_cpu_s: float
    #: The same for the lm-eval CLI and driver together.
    lmeval_others_cpu_s: float
    lmeval_window_s: float
    lmeval_scoring_s: float
    lmeval_score: float
    lmeval_driver_score: float
    lmeval_driver_load_s: float
    lmeval_driver_eval_s: float
    lmeval_torch_threads: int


class SubprocessFailed(RuntimeError):
    """A benchmarked command exited non-zero."""


def _env(workdir: Path, threads: int | None, store_db: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # lm-eval's data set cache stays inside the work folder (warm after the first use).
            "HF_DATASETS_CACHE": str(workdir / "hf_datasets"),
        }
    )
    if store_db is not None:
        env["SUPERSEDE_STORE__URL"] = f"sqlite:///{store_db}"
    return env


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


def _run(cmd: Sequence[str], cwd: Path, env: dict[str, str], threads: int | None) -> Timed:
    """Run ``cmd`` and time it. Raises :class:`SubprocessFailed`.

    CPU seconds (user + system, all threads) come from the children's rusage; the commands run
    one at a time, so the difference is this command's alone. ``others_cpu_s`` is the CPU time
    the rest of the machine used meanwhile beyond the cores this command left idle (``threads``
    of them busy): well above zero means the timings were disturbed.
    """
    cpu, busy = _children_cpu_s(), _machine_busy_s()
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    cpu = _children_cpu_s() - cpu
    cpus = os.cpu_count() or 1
    spare = max(0, cpus - (threads or cpus)) * wall
    others = max(0.0, _machine_busy_s() - busy - cpu - spare)
    if proc.returncode != 0:
        tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]).strip()
        raise SubprocessFailed(f"{shlex.join(cmd)} exited {proc.returncode}:\n{tail}")
    return Timed(wall, cpu, others, proc.stdout)


def _tool(name: str) -> str:
    """A console script next to this interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found next to {sys.executable} or on PATH")
    return found


def supersede_command(setup: Setup, batch_size: int) -> list[str]:
    return [
        _tool("supersede"),
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
    ]


def lmeval_command(setup: Setup, batch_size: int, output: Path) -> list[str]:
    return [
        _tool("lm_eval"),
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
    ]


def driver_command(setup: Setup, batch_size: int) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        DRIVER_COMMAND,
        str(setup.model_dir),
        str(setup.task_dir),
        setup.task_name,
        str(batch_size),
    ]


def _lmeval_results_score(output: Path, task: str) -> float:
    files = sorted(output.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise SubprocessFailed(f"lm_eval wrote no results_*.json under {output}")
    results = json.loads(files[-1].read_text(encoding="utf-8"))
    return float(results["results"][task]["acc,none"])


def run_once(
    setup: Setup, workdir: Path, batch_size: int, threads: int | None, repeat: int
) -> Figures:
    """One repeat: supersede, then the lm-eval scoring driver, then the lm-eval CLI."""
    store_db = workdir / f"store-{repeat}.db"
    store_db.unlink(missing_ok=True)
    sup_run = _run(
        supersede_command(setup, batch_size),
        setup.task_dir,
        _env(workdir, threads, store_db),
        threads,
    )
    sup = json.loads(sup_run.stdout.strip().splitlines()[-1])

    # The driver runs before the CLI so that the CLI finds lm-eval's data set cache warm, as a
    # regular user's would be (the driver's timed phase does not read the data set).
    drv_run = _run(
        driver_command(setup, batch_size), setup.task_dir, _env(workdir, threads), threads
    )
    lines = [ln for ln in drv_run.stdout.splitlines() if ln.startswith(DRIVER_MARKER)]
    if not lines:
        raise SubprocessFailed(f"the lm-eval driver printed no {DRIVER_MARKER} line")
    drv = json.loads(lines[-1][len(DRIVER_MARKER) :])

    output = workdir / f"lmeval-out-{repeat}"
    shutil.rmtree(output, ignore_errors=True)
    lm_run = _run(
        lmeval_command(setup, batch_size, output), setup.task_dir, _env(workdir, threads), threads
    )
    return Figures(
        supersede_wall_s=sup_run.wall_s,
        supersede_cpu_s=sup_run.cpu_s,
        supersede_others_cpu_s=sup_run.others_cpu_s,
        supersede_window_s=sup_run.wall_s,
        supersede_load_s=float(sup["load_s"]),
        supersede_scoring_s=float(sup["scoring_s"]),
        supersede_score=float(sup["score"]),
        supersede_n=int(sup["n"]),
        lmeval_wall_s=lm_run.wall_s,
        lmeval_cpu_s=lm_run.cpu_s,
        lmeval_others_cpu_s=lm_run.others_cpu_s + drv_run.others_cpu_s,
        lmeval_window_s=lm_run.wall_s + drv_run.wall_s,
        lmeval_scoring_s=float(drv["loglikelihood_s"]),
        lmeval_score=_lmeval_results_score(output, setup.task_name),
        lmeval_driver_score=float(drv["score"]),
        lmeval_driver_load_s=float(drv["load_s"]),
        lmeval_driver_eval_s=float(drv["evaluate_s"]),
        lmeval_torch_threads=int(drv["torch_threads"]),
    )
