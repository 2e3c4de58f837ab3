"""The ``supersede`` command as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks.verdict import VerdictReport
from supersede.demo.zoo import Zoo
from tests.support import verdicts
from tests.support.cli import supersede
from tests.support.settings import write_settings
from tests.support.tasks import REVIEW_DIR, shipped_task_copy
from workers.jobs import JobStore

REQUIRED = {
    "model",
    "adapter",
    "task",
    "metric",
    "score",
    "stderr",
    "n",
    "wall_s",
    "examples_per_s",
    "tokens_per_s",
    "peak_memory_mb",
    "model_revision",
    "adapter_revision",
    "cached",
}


def test_bench_json_is_one_object_and_repeat_is_cached(zoo: Zoo, tmp_path: Path) -> None:
    task = shipped_task_copy(tmp_path / "task")
    args = (
        "bench",
        "--model",
        str(zoo.base),
        "--adapter",
        str(zoo.adapter),
        "--task",
        str(task),
        "--limit",
        "50",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--json",
    )
    first = supersede(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert set(row) >= REQUIRED
    assert row["n"] == 50 and row["cached"] is False and row["metric"] == "acc"
    assert row["adapter_revision"].startswith("sha256:")
    assert (tmp_path / ".supersede" / "supersede.db").is_file()  # the default store, in the cwd
    second = json.loads(supersede(*args, cwd=tmp_path).stdout)
    assert second["cached"] is True and second["score"] == row["score"]
    fresh = json.loads(supersede(*args, "--no-cache", cwd=tmp_path).stdout)
    assert fresh["cached"] is False and fresh["score"] == row["score"]


def test_table_output_by_default(zoo: Zoo, tmp_path: Path) -> None:
    task = shipped_task_copy(tmp_path / "task")
    done = supersede("bench", "-m", str(zoo.base), "-t", str(task), "--limit", "5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "review_sentiment" in done.stdout and "acc" in done.stdout


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("runtime:\n  batchsize: 3\n", "runtime.batchsize"),
        ("runtime:\n  batch_size: lots\n", "runtime.batch_size"),
        ("runtime: [\n", "not valid YAML"),
    ],
)
def test_bad_config_is_one_clear_line(
    zoo: Zoo, tmp_path: Path, yaml_text: str, expected: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    task = shipped_task_copy(tmp_path / "task")
    done = supersede(
        "bench", "-m", str(zoo.base), "-t", str(task), "--config", str(config), cwd=tmp_path
    )
    assert done.returncode == 2
    assert expected in done.stderr and str(config) in done.stderr.replace("\n", "")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_bad_task_file_is_a_clear_error(zoo: Zoo, tmp_path: Path) -> None:
    task = shipped_task_copy(tmp_path / "task")
    task.write_text(task.read_text() + "doc_to_txt: oops\n")
    done = supersede("bench", "-m", str(zoo.base), "-t", str(task), "--json", cwd=tmp_path)
    assert done.returncode == 2
    flat = done.stderr.replace("\n", "")
    assert "doc_to_txt" in flat and "doc_to_text" in flat and "Traceback" not in flat
    assert done.stdout == ""


def test_refused_model_exits_fatal(zoo: Zoo, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (pickled / name).write_bytes((zoo.base / name).read_bytes())
    (pickled / "pytorch_model.bin").write_bytes(b"x")
    task = shipped_task_copy(tmp_path / "task")
    done = supersede("bench", "-m", str(pickled), "-t", str(task), cwd=tmp_path)
    assert done.returncode == 2 and "refused" in done.stderr


def test_unreachable_hub_exits_retryable(tmp_path: Path) -> None:
    task = shipped_task_copy(tmp_path / "task")
    done = supersede(
        "bench",
        "-m",
        "acme/tiny",
        "-t",
        str(task),
        cwd=tmp_path,
        env={"HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert done.returncode == 75, done.stderr
    assert "the Hub at http://127.0.0.1:9 is unreachable" in done.stderr.replace("\n", "")


def test_help_does_not_import_torch(tmp_path: Path) -> None:
    code = "import sys; from supersede.cli import app; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.stdout.strip() == "False", done.stderr


# ---------------------------------------------------------------------- start-up checks

SHIPPED_TASK = REVIEW_DIR / "review_sentiment.yaml"
SLACK_WITHOUT_CHANNEL = {"SLACK_BOT_TOKEN": "xoxb-start-up-check"}


def assert_refused_at_start(done: subprocess.CompletedProcess[str], elapsed: float) -> None:
    """Exit 2 within the 5 s the product promises, one line naming the key and its variable."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert elapsed < 5, f"took {elapsed:.1f} s"
    flat = done.stderr.replace("\n", "")
    assert "notify.slack.channel" in flat and "SUPERSEDE_NOTIFY__SLACK__CHANNEL" in flat
    assert "Traceback" not in done.stderr and "xoxb-start-up-check" not in done.stderr


def test_demo_with_a_slack_token_and_no_channel_stops_before_any_work(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    started = time.monotonic()
    done = supersede(
        "demo", "--workdir", str(workdir), cwd=tmp_path, env=SLACK_WITHOUT_CHANNEL, timeout=20
    )
    assert_refused_at_start(done, time.monotonic() - started)
    assert not (workdir / "zoo").exists()  # no model was built


def test_run_with_a_slack_token_and_no_channel_stops_before_any_work(tmp_path: Path) -> None:
    store = tmp_path / "store" / "supersede.db"
    config = write_settings(
        tmp_path,
        store={"url": f"sqlite:///{store}"},
        finetunes=[{"name": "reviews", "task": str(SHIPPED_TASK), "base": "a/b", "adapter": "a/c"}],
        observability={"metrics_port": 0},
    )
    started = time.monotonic()
    done = supersede("run", "-c", str(config), cwd=tmp_path, env=SLACK_WITHOUT_CHANNEL, timeout=20)
    assert_refused_at_start(done, time.monotonic() - started)
    assert not store.parent.exists()  # no store, no queue: nothing was started


def test_poll_needs_no_slack_channel(tmp_path: Path) -> None:
    config = write_settings(
        tmp_path,
        store={"url": f"sqlite:///{tmp_path / 'supersede.db'}"},
        watch={"hub": {"authors": []}},
    )
    done = supersede("poll", "--once", "-c", str(config), cwd=tmp_path, env=SLACK_WITHOUT_CHANNEL)
    assert done.returncode == 0, done.stderr
    assert "nothing new" in done.stdout


def test_bench_json_reports_where_start_up_went(zoo: Zoo, tmp_path: Path) -> None:
    task = shipped_task_copy(tmp_path / "task")
    args = ("bench", "-m", str(zoo.base), "-a", str(zoo.adapter), "-t", str(task))
    started = time.perf_counter()
    done = supersede(*args, "--limit", "8", "--device", "cpu", "--json", cwd=tmp_path)
    command_s = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    startup = row["startup"]
    phases = ("imports", "settings", "task", "resolve", "store", "libraries", "model")
    assert set(startup) >= {*phases, "first_batch"}
    assert all(isinstance(s, float) and s >= 0 for s in startup.values()), startup
    # The phases fit in the command's own wall time, and the model's share is within load_s.
    assert all(startup[phase] > 0 for phase in ("imports", "libraries", "model", "first_batch"))
    assert sum(startup.values()) <= command_s
    assert startup["libraries"] + startup["model"] <= row["load_s"] <= row["wall_s"]
    # A stored result loads no model: those phases are 0, the rest still measured.
    cached = json.loads(supersede(*args, "--limit", "8", "--json", cwd=tmp_path).stdout)
    assert cached["cached"] is True
    assert cached["startup"]["libraries"] == cached["startup"]["model"] == 0
    assert cached["startup"]["first_batch"] == 0 and cached["startup"]["imports"] > 0


# --------------------------------------------------------------- verdicts with deploy checks

#: One verdict of each new kind and a switch that pays back, as the store keeps them.
DEPLOY_VERDICTS = {
    "blocked": verdicts.blocked_unbenchmarked,
    "review": verdicts.needs_review,
    "switch": verdicts.superseded,
}


def _verdict_store(folder: Path) -> Path:
    """A config whose store holds the three verdicts and one stored before the new figures."""
    url = f"sqlite:///{folder / 'verdicts.db'}"
    jobs = JobStore(url)
    results = {name: made().to_dict() for name, made in DEPLOY_VERDICTS.items()}
    old = {k: v for k, v in results["switch"].items() if k in OLD_KEYS}
    for n, (name, result) in enumerate([*results.items(), ("old", old)]):
        jobs.add(key=f"{name:x<64}", kind="verdict", candidate=f"acme/Acme-7B@{'0' * 40}",
                 finetune="support-triage", queue="default", state="notified", attempts=1,
                 payload={}, result=result, finished_at=T0 + timedelta(minutes=n))  # fmt: skip
    return write_settings(folder, store={"url": url})


T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
#: What a verdict held before the deploy checks and payback entered it: the fields up to details.
_FIELDS = [spec.name for spec in dataclasses.fields(VerdictReport)]
OLD_KEYS = _FIELDS[: _FIELDS.index("details") + 1]


@pytest.mark.parametrize("columns", [80, 200])
def test_status_shows_payback_and_blockers_within_the_width(tmp_path: Path, columns: int) -> None:
    config = _verdict_store(tmp_path)
    done = supersede("status", "-c", str(config), cwd=tmp_path, env={"COLUMNS": str(columns)})
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert max(len(line.rstrip()) for line in text.splitlines()) <= columns, text
    assert "None" not in text and "nan" not in text.split()
    if columns == 80:  # one block per job: each verdict's line reads whole
        flowing = " ".join(text.split())
        for line in (
            "BLOCKED: Licence cc-by-nc-4.0 not allowed: acme/Acme-7B was not downloaded "
            "or benchmarked",
            "NEEDS_REVIEW: Review before switching: licence llama3.1 (the vendor's own) needs "
            "review. acme/Acme-7B is at +5.0 points acc (95% CI +2.0 points to +8.0 points). "
            "Switching: pays back in 8 months · +$1,000/month after · $16,000 over 24 months.",
            "SUPERSEDED: Switch to acme/Acme-7B: pays back in 8 months, +$1,000/month after "
            "that; $16,000 over 24 months.",
        ):
            assert line in flowing, flowing
        assert flowing.count("SUPERSEDED: Switch to acme/Acme-7B") == 2  # the old one too


@pytest.mark.parametrize("name", sorted(DEPLOY_VERDICTS))
def test_compare_view_shows_payback_deploy_and_blockers(name: str) -> None:
    from rich.console import Console

    from supersede.cli.app import _verdict_view

    report = DEPLOY_VERDICTS[name]()
    console = Console(width=80, record=True, color_system=None)
    console.print(_verdict_view(report))
    text = console.export_text()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80, text
    assert "None" not in text and "nan" not in text.split()
    flowing = " ".join(text.split())
    expected = {
        "blocked": ["verdict BLOCKED", "not benchmarked (blocked before the download)",
                    "blocked by licence cc-by-nc-4.0 not allowed",
                    "deploy Licence cc-by-nc-4.0 · needs 15.2 GiB"],
        "review": ["verdict NEEDS_REVIEW", "needs review licence llama3.1 (the vendor's own)",
                   "switching pays back in 8 months · +$1,000/month after · $16,000 over 24",
                   "p95 12 ms per request (target 500 ms)"],
        "switch": ["verdict SUPERSEDED", "switching pays back in 8 months",
                   "deploy Licence apache-2.0 · needs 0.1 GiB"],
    }[name]  # fmt: skip
    for fragment in expected:
        assert fragment in flowing, flowing
    if name != "blocked":
        assert "blocked by" not in flowing and "switching" in flowing
    else:
        assert "switching" not in flowing and "difference" not in flowing
