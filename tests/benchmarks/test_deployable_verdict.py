"""``supersede compare`` with the deploy checks, against the local Hub with tiny models.

The fine-tune is the zoo's base with its adapter; the candidate is the zoo's stronger release,
published on the local Hub under a repo id of its own per licence. A licence or size that blocks
it is read from the Hub's metadata and ``config.json`` only: its weights are never requested.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.compare import compare
from benchmarks.verdict import Verdict, VerdictReport
from config.settings import Settings
from supersede.demo.zoo import Zoo, write_card
from tests.conftest import SHIPPED_TASK
from tests.support.hub_server import HubServer
from tests.support.serving import served
from tests.support.settings import build_settings

FINETUNE = "review-sentiment"
#: Published with the zoo's own card (apache-2.0); scored once, then read from the store.
ALLOWED = "acme/Stronger-apache"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store and Hub cache for the module: the fine-tune is scored once."""
    return tmp_path_factory.mktemp("deployable")


@pytest.fixture(scope="module")
def local_hub(zoo: Zoo) -> Iterator[HubServer]:
    for server in served(HubServer()):
        server.add_repo(ALLOWED, zoo.stronger)
        yield server


def settings_for(
    folder: Path, hub: HubServer, zoo: Zoo, economics: dict[str, Any] | None = None, **deploy: Any
) -> Settings:
    finetune = {"name": FINETUNE, "task": str(SHIPPED_TASK), "base": str(zoo.base),
                "adapter": str(zoo.adapter), "economics": economics or {}}  # fmt: skip
    return build_settings(
        folder, endpoint=hub, hub={"timeout_s": 10}, finetunes=[finetune], deploy=deploy
    )


def weights_requested(hub: HubServer, repo_id: str) -> list[str]:
    return [path for _, path in hub.requests if repo_id in path and ".safetensors" in path]


def check(report: VerdictReport, name: str) -> dict[str, str]:
    (found,) = [c for c in report.checks if c["check"] == name]
    return found


def test_a_licence_not_allowed_blocks_before_any_download(
    zoo: Zoo, folder: Path, local_hub: HubServer
) -> None:
    repo = "acme/Stronger-nc"
    card = {"cardData": {"license": "cc-by-nc-4.0"}, "tags": ["license:cc-by-nc-4.0"]}
    local_hub.add_repo(repo, zoo.stronger, extra=card)
    report = compare(settings_for(folder, local_hub, zoo), FINETUNE, repo)
    assert report.verdict is Verdict.BLOCKED
    assert "licence cc-by-nc-4.0 not allowed" in report.reason
    assert report.summary.startswith("Licence cc-by-nc-4.0 not allowed: ")
    assert "not downloaded or benchmarked" in report.summary
    assert report.benchmarked is False and report.n == 0
    assert report.score_candidate is None and report.score_finetune is None
    assert report.blockers == ("licence cc-by-nc-4.0 not allowed",)
    assert report.license == "cc-by-nc-4.0"
    # Read from the Hub's metadata and config.json; not one weight file was asked for.
    assert weights_requested(local_hub, repo) == []
    assert any(repo in path and path.endswith("config.json") for _, path in local_hub.requests)


def test_an_allowed_licence_supersedes(zoo: Zoo, folder: Path, local_hub: HubServer) -> None:
    report = compare(settings_for(folder, local_hub, zoo), FINETUNE, ALLOWED)
    assert report.verdict is Verdict.SUPERSEDED, report.reason
    assert report.license == "apache-2.0" and report.benchmarked
    assert check(report, "licence") == {"check": "licence", "status": "ok",
                                        "detail": "licence apache-2.0 allowed"}  # fmt: skip
    assert report.blockers == () and report.reviews == ()
    # The control of the test above: a candidate that is benchmarked has its weights fetched.
    assert weights_requested(local_hub, ALLOWED)


def test_a_custom_licence_needs_review(
    zoo: Zoo, folder: Path, local_hub: HubServer, tmp_path: Path
) -> None:
    repo = "acme/Stronger-research"
    carded = shutil.copytree(zoo.stronger, tmp_path / "research")
    # The Hub derives cardData from the README.md front matter it is published with.
    write_card(carded, "other", license_name="acme-research",
               license_link="https://acme.example/research-license")  # fmt: skip
    local_hub.add_repo(repo, carded)
    report = compare(settings_for(folder, local_hub, zoo), FINETUNE, repo)
    assert report.verdict is Verdict.NEEDS_REVIEW, report.reason
    assert report.license == "other (acme-research)"
    assert any("acme-research" in review for review in report.reviews)
    assert "acme-research" in report.summary and report.blockers == ()
    # Allowed by its name, the same candidate is judged on its merits.
    listed = settings_for(folder, local_hub, zoo, licenses=["apache-2.0", "acme-research"])
    assert compare(listed, FINETUNE, repo).verdict is Verdict.SUPERSEDED


def test_too_large_for_the_serving_gpus_blocks_naming_both_figures(
    zoo: Zoo, folder: Path, local_hub: HubServer
) -> None:
    repo = "acme/Stronger-large"
    local_hub.add_repo(repo, zoo.stronger)
    report = compare(settings_for(folder, local_hub, zoo, gpu_memory_gb=0.0001), FINETUNE, repo)
    assert report.verdict is Verdict.BLOCKED and report.benchmarked is False
    (blocker,) = report.blockers
    assert re.match(r"needs [\d.]+ [GM]iB, serving GPUs have 0\.0001 GiB", blocker), blocker
    assert blocker in report.reason
    assert report.serving_memory_gb is not None and report.serving_memory_gb > 0.0001
    assert weights_requested(local_hub, repo) == []


def test_a_blocked_candidate_is_benchmarked_when_asked(
    zoo: Zoo, folder: Path, local_hub: HubServer
) -> None:
    settings = settings_for(folder, local_hub, zoo, gpu_memory_gb=0.0001, benchmark_blocked=True)
    report = compare(settings, FINETUNE, ALLOWED)
    assert report.verdict is Verdict.BLOCKED and report.benchmarked is True
    assert report.score_candidate is not None and report.score_finetune is not None
    assert report.ci_low is not None and report.ci_low > 0  # better, and still not deployable
    assert "not deployable" in report.reason and "serving GPUs have 0.0001 GiB" in report.reason
    assert check(report, "memory")["status"] == "blocked"


def test_a_latency_target_the_candidate_misses_blocks(
    zoo: Zoo, folder: Path, local_hub: HubServer
) -> None:
    report = compare(settings_for(folder, local_hub, zoo, latency_p95_ms=0.001), FINETUNE, ALLOWED)
    assert report.verdict is Verdict.BLOCKED, report.reason
    assert report.latency_p95_ms is not None and report.latency_p95_ms > 0.001
    assert report.latency_target_ms == 0.001
    assert re.search(r"p95 latency [\d.,]+ ms misses the 0.001 ms target", report.reason), (
        report.reason
    )
    assert check(report, "latency")["status"] == "blocked"
    # Met, the same candidate supersedes.
    relaxed = settings_for(folder, local_hub, zoo, latency_p95_ms=60_000)
    again = compare(relaxed, FINETUNE, ALLOWED)
    assert again.verdict is Verdict.SUPERSEDED and check(again, "latency")["status"] == "ok"


def test_a_local_folder_without_a_card_is_not_licence_checked(
    zoo: Zoo, folder: Path, local_hub: HubServer, tmp_path: Path
) -> None:
    bare = shutil.copytree(zoo.stronger, tmp_path / "stronger")
    (bare / "README.md").unlink()
    report = compare(settings_for(folder, local_hub, zoo), FINETUNE, str(bare))
    assert report.verdict is Verdict.SUPERSEDED, report.reason
    licence = check(report, "licence")
    assert licence["status"] == "unchecked" and "not checked" in licence["detail"]
    assert report.license is None


def test_the_json_report_carries_the_money_and_the_deploy_checks(
    zoo: Zoo, folder: Path, local_hub: HubServer
) -> None:
    # Priced (the upkeep saved dwarfs the tiny models' serving costs, whatever their timings),
    # so the payback is a number: nothing to recover, paid back at once.
    economics = {"monthly_upkeep_usd": 1200, "monthly_requests": 2_000_000}
    report = compare(settings_for(folder, local_hub, zoo, economics), FINETUNE, ALLOWED)
    row = json.loads(json.dumps(report.to_dict()))
    assert row["verdict"] == "SUPERSEDED"
    assert row["payback_months"] == 0
    assert row["monthly_net_usd"] == pytest.approx(1200, abs=50)
    assert row["blockers"] == [] and row["license"] == "apache-2.0"
    assert row["serving_memory_gb"] > 0 and row["latency_p95_ms"] > 0
    assert {c["check"] for c in row["checks"]} == {"licence", "memory", "latency"}
