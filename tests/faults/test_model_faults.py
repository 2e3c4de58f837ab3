"""Hostile or broken candidate repos on the Hub, run through the pipeline as a worker would.

Each candidate is published on the local Hub and benchmarked by ``Pipeline.run_benchmark``
against a fine-tune made of local folders. What must be kept: the job ends (failed or skipped)
with a reason a person can read, the verdict jobs end with it and are notified once, no code from
the repo runs, and nothing unsafe or half-written is left in the Hub cache.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.cache import ResultStore
from config.settings import FineTune, Settings
from core.clock import now
from core.constants import TASK_BENCHMARK, TASK_NOTIFY, TASK_VERDICT
from supersede.demo.zoo import Zoo
from tests.conftest import SHIPPED_TASK, copy_model
from tests.support.hub_server import HubServer
from tests.support.settings import build_settings
from watcher.events import ModelReleased
from workers.jobs import Job, JobStore
from workers.pipeline import Pipeline

FINETUNES = ("reviews", "reviews-2")
MAX_ATTEMPTS = 3
TRACEBACK_MARKS = ("Traceback (most recent call last)", '\n  File "', "site-packages")

SENTINEL_CODE = """
import pathlib
pathlib.Path({path!r}).write_text("remote code ran")
from transformers import {base} as {name}
"""


class Recorder:
    """Stands in for the broker: every message the pipeline would send, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def __call__(self, name: str, key: str, queue: str) -> None:
        self.sent.append((name, key, queue))

    def keys(self, name: str) -> list[str]:
        return [key for sent, key, _ in self.sent if sent == name]


class Notes:
    """A notifier that keeps what it was asked to deliver."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def send(self, job: Job) -> None:
        self.jobs.append(job)


@dataclass
class Run:
    """A candidate benchmarked to its end, and everything it left behind."""

    pipeline: Pipeline
    sent: Recorder
    notes: Notes
    key: str
    job: Job
    children: list[Job]
    cache: Path


def settings_for(tmp_path: Path, zoo: Zoo, hub: HubServer) -> Settings:
    finetunes = tuple(
        FineTune(name=name, task=str(SHIPPED_TASK), base=str(zoo.base), adapter=str(zoo.adapter))
        for name in FINETUNES
    )
    return build_settings(
        tmp_path,
        endpoint=hub,
        hub={"timeout_s": 10},
        finetunes=finetunes,
        workers={"max_attempts": MAX_ATTEMPTS, "retry_backoff": 0},
    )


def run_candidate(tmp_path: Path, zoo: Zoo, hub: HubServer, repo_id: str, sha: str) -> Run:
    """Plan the release and run its benchmark job as often as the worker would (retries too)."""
    settings = settings_for(tmp_path, zoo, hub)
    sent, notes = Recorder(), Notes()
    pipeline = Pipeline(settings, JobStore(settings.store.url), sent, notes)
    event = ModelReleased(
        source="hub", detected_at=now(), repo_id=repo_id, revision=sha, params=1_000_000
    )
    (key,) = pipeline.plan(event)
    assert sent.keys(TASK_BENCHMARK) == [key]
    for _ in range(MAX_ATTEMPTS + 1):
        if pipeline.run_benchmark(key, "worker-1").outcome != "retry":
            break
    job = pipeline.jobs.get(key)
    assert job is not None
    return Run(
        pipeline,
        sent,
        notes,
        key,
        job,
        pipeline.jobs.children(key),
        Path(str(settings.hub.cache_dir)),
    )


def cached(run: Run, pattern: str) -> list[Path]:
    return sorted(run.cache.rglob(pattern)) if run.cache.exists() else []


def resolve_paths(hub: HubServer) -> list[str]:
    return [path for _, path in hub.requests if "/resolve/" in path]


def assert_ended_and_notified_once(run: Run, states: tuple[str, ...]) -> None:
    """The benchmark ended in one of ``states``; each verdict job ended with it, was sent to
    be notified exactly once, and a redelivered notification tells nobody twice."""
    state = run.job.state
    assert state in states, (state, run.job.reason)
    assert run.job.reason
    assert not any(mark in run.job.reason for mark in TRACEBACK_MARKS), run.job.reason
    assert sorted(c.finetune or "" for c in run.children) == sorted(FINETUNES)
    for child in run.children:
        assert child.state == state
        assert child.reason == f"benchmark {state}: {run.job.reason}"
    assert run.sent.keys(TASK_VERDICT) == []  # no verdict is computed on a candidate not scored
    notify = run.sent.keys(TASK_NOTIFY)
    assert sorted(notify) == sorted(c.key for c in run.children)
    for key in notify + notify:  # every notification delivered twice by the broker
        run.pipeline.notify(key)
    assert sorted(j.key for j in run.notes.jobs) == sorted(notify)
    assert {run.pipeline.jobs.get(k).state for k in notify} == {"notified"}  # type: ignore[union-attr]
    assert run.pipeline.notify(run.key) is False  # the benchmark itself is told via its verdicts


# ---------------------------------------------------------------------------- corrupt weights


def _corrupt(kind: str, good: bytes) -> bytes:
    size = int.from_bytes(good[:8], "little")
    if kind == "length-past-end":
        return (len(good) * 1000).to_bytes(8, "little") + good[8:64]
    if kind == "garbage-json":
        garbage = b'{"model.embed_tokens.weight": {"dtype": "F32", "shape": [' + b"\xff" * 40
        return len(garbage).to_bytes(8, "little") + garbage + b"\0" * 64
    assert kind == "truncated-tensors"
    return good[: 8 + size + (len(good) - 8 - size) // 2]


def _corrupt_repo(tmp_path: Path, zoo: Zoo, hub: HubServer, kind: str) -> tuple[str, str]:
    folder = copy_model(zoo.base, tmp_path / f"broken-{kind}", drop=(".safetensors",))
    good = (zoo.base / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(_corrupt(kind, good))
    repo_id = f"acme/Broken-{kind}"
    return repo_id, hub.add_repo(repo_id, folder)


CORRUPTIONS = ["length-past-end", "garbage-json", "truncated-tensors"]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_weights_end_the_job_and_its_verdicts(
    kind: str, tmp_path: Path, zoo: Zoo, hub: HubServer
) -> None:
    repo_id, sha = _corrupt_repo(tmp_path, zoo, hub, kind)

    run = run_candidate(tmp_path, zoo, hub, repo_id, sha)

    assert_ended_and_notified_once(run, ("failed", "skipped"))
    assert 1 <= run.job.attempts <= MAX_ATTEMPTS
    assert run.job.result is None
    # The fine-tune's baseline was scored once and kept, however often the candidate was tried.
    # (Both fine-tunes share base, adapter and task: one baseline.)
    assert ResultStore(run.pipeline.settings.store.url).count() == 1
    assert cached(run, "*.incomplete") == []
    assert all(sha in path for path in resolve_paths(hub))  # only the pinned commit was fetched


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_weights_reason_names_the_model_or_the_corruption(
    kind: str, tmp_path: Path, zoo: Zoo, hub: HubServer
) -> None:
    repo_id, sha = _corrupt_repo(tmp_path, zoo, hub, kind)

    run = run_candidate(tmp_path, zoo, hub, repo_id, sha)

    reason = str(run.job.reason)
    assert repo_id in reason or re.search(r"corrupt|unreadable|cannot be read", reason, re.I)


# ---------------------------------------------------------------------------- remote code


def _remote_code_repo(zoo: Zoo, folder: Path, sentinel: Path) -> Path:
    copy_model(
        zoo.base,
        folder,
        add={
            "modeling_evil.py": SENTINEL_CODE.format(
                path=str(sentinel), base="LlamaForCausalLM", name="EvilModel"
            ).encode(),
            "configuration_evil.py": SENTINEL_CODE.format(
                path=str(sentinel), base="LlamaConfig", name="EvilConfig"
            ).encode(),
        },
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_remote_code_candidate_is_skipped_and_its_code_never_fetched_or_run(
    tmp_path: Path, zoo: Zoo, hub: HubServer
) -> None:
    sentinel = tmp_path / "sentinel"
    sha = hub.add_repo("acme/Evil-1B", _remote_code_repo(zoo, tmp_path / "evil", sentinel))

    run = run_candidate(tmp_path, zoo, hub, "acme/Evil-1B", sha)

    assert_ended_and_notified_once(run, ("skipped",))
    assert run.job.attempts == 1  # a refusal is not retried
    assert re.search(r"remote[ _]code", str(run.job.reason), re.I), run.job.reason
    assert "acme/Evil-1B" in str(run.job.reason)
    assert not sentinel.exists()
    assert cached(run, "*.py") == []
    assert not [path for path in resolve_paths(hub) if path.endswith(".py")]


def test_remote_code_candidate_downloads_no_weights(
    tmp_path: Path, zoo: Zoo, hub: HubServer
) -> None:
    sentinel = tmp_path / "sentinel"
    sha = hub.add_repo("acme/Evil-1B", _remote_code_repo(zoo, tmp_path / "evil", sentinel))

    run = run_candidate(tmp_path, zoo, hub, "acme/Evil-1B", sha)

    assert run.job.state == "skipped"
    assert cached(run, "*.safetensors") == []
    assert not [p for p in resolve_paths(hub) if p.endswith(".safetensors")]


# ---------------------------------------------------------------------------- pickle weights


def test_pickle_only_candidate_is_skipped_before_any_download(
    tmp_path: Path, zoo: Zoo, hub: HubServer
) -> None:
    folder = copy_model(
        zoo.base,
        tmp_path / "pickled",
        drop=(".safetensors",),
        add={"pytorch_model.bin": b"\x80\x04 pickle bytes that must never be unpickled"},
    )
    sha = hub.add_repo("acme/Pickled-1B", folder)

    run = run_candidate(tmp_path, zoo, hub, "acme/Pickled-1B", sha)

    assert_ended_and_notified_once(run, ("skipped",))
    assert run.job.attempts == 1
    assert "pickle" in str(run.job.reason).lower()
    assert cached(run, "*.bin") == []
    assert resolve_paths(hub) == []


# ---------------------------------------------------------------------------- gated repos


@pytest.mark.parametrize(
    "token", [None, "hf_FAKEnotGrantedToken0001"], ids=["no-token", "ungranted"]
)
def test_gated_candidate_without_access_is_skipped_with_nothing_downloaded(
    token: str | None,
    tmp_path: Path,
    zoo: Zoo,
    hub: HubServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if token is not None:
        monkeypatch.setenv("HF_TOKEN", token)
    sha = hub.add_repo("vendor/Gated-1B", zoo.base, gated=True)
    hub.grant("vendor/Gated-1B", "hf_someone_else")

    run = run_candidate(tmp_path, zoo, hub, "vendor/Gated-1B", sha)

    assert_ended_and_notified_once(run, ("skipped",))
    assert run.job.attempts == 1
    reason = str(run.job.reason)
    assert "gated" in reason.lower() and "HF_TOKEN" in reason
    if token is not None:
        assert token not in reason
    assert cached(run, "*.safetensors") == []
    assert [p for p in cached(run, "*") if p.is_file() and "blobs" in p.parts] == []
