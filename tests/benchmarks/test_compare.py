"""``supersede compare`` end to end on tiny models: a release trained to beat the fine-tune is
SUPERSEDED, one that was not HOLDS; a refused candidate is INCONCLUSIVE with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.compare import compare
from benchmarks.verdict import Verdict
from config.settings import Settings, load_settings
from core.errors import ConfigError
from supersede.demo.zoo import Zoo
from tests.conftest import SHIPPED_TASK, copy_model
from tests.support.settings import write_settings

ECONOMICS = {"tuning_cost_usd": 18000, "monthly_upkeep_usd": 1200, "monthly_requests": 2000000}


def write_config(tmp_path: Path, zoo: Zoo, **sections: Any) -> Path:
    """The fine-tune ``review-sentiment`` (the zoo's adapter) at $3 a GPU hour, and ``sections``."""
    finetune = {"name": "review-sentiment", "task": str(SHIPPED_TASK), "base": str(zoo.base),
                "adapter": str(zoo.adapter), "economics": ECONOMICS}  # fmt: skip
    return write_settings(
        tmp_path,
        serving={"gpu_hour_usd": 3.0},
        verdict={"margin": 0.03},
        finetunes=[finetune],
        **sections,
    )


@pytest.fixture
def config_file(zoo: Zoo, tmp_path: Path) -> Path:
    return write_config(tmp_path, zoo)


@pytest.fixture
def settings(config_file: Path) -> Settings:
    return load_settings(config_file)


def test_stronger_release_supersedes_the_fine_tune(zoo: Zoo, settings: Settings) -> None:
    report = compare(settings, "review-sentiment", str(zoo.stronger))
    assert report.verdict is Verdict.SUPERSEDED
    assert report.n == 300
    assert report.score_candidate is not None and report.score_finetune is not None
    assert report.score_candidate > report.score_finetune
    assert report.ci_low is not None and report.ci_low > 0
    assert report.p_value is not None and report.p_value < 0.05
    assert "$18,000 spent on tuning is sunk" in report.summary
    assert report.hint is not None and "re-tuning" in report.hint
    # The fine-tune's monthly cost includes its upkeep: the candidate's cannot.
    assert report.monthly_cost_finetune is not None and report.monthly_cost_finetune > 1200
    assert report.details["finetune"]["adapter_revision"].startswith("sha256:")


def test_weaker_release_holds(zoo: Zoo, settings: Settings) -> None:
    report = compare(settings, "review-sentiment", str(zoo.weaker))
    assert report.verdict is Verdict.HOLDS
    assert report.ci_high is not None and report.ci_high < -settings.verdict.margin
    assert "keeps a +" in report.summary and "$1,200/month of upkeep" in report.summary


def test_fine_tune_side_is_computed_once(zoo: Zoo, settings: Settings) -> None:
    first = compare(settings, "review-sentiment", str(zoo.weaker), limit=60)
    second = compare(settings, "review-sentiment", str(zoo.stronger), limit=60)
    assert first.details["finetune"]["cached"] is False
    assert second.details["finetune"]["cached"] is True
    assert second.details["candidate"]["cached"] is False
    assert first.score_finetune == second.score_finetune


def test_refused_candidate_is_inconclusive_with_the_reason(
    zoo: Zoo, settings: Settings, tmp_path: Path
) -> None:
    pickled = copy_model(
        zoo.stronger,
        tmp_path / "pickled",
        drop=(".safetensors",),
        add={"pytorch_model.bin": b"never loaded"},
    )
    report = compare(settings, "review-sentiment", str(pickled), limit=40)
    assert report.verdict is Verdict.INCONCLUSIVE
    assert "pickle" in report.reason and "pickle" in report.summary
    assert report.delta is None and report.monthly_savings_usd is None


def test_unknown_fine_tune_suggests_the_close_name(zoo: Zoo, settings: Settings) -> None:
    with pytest.raises(ConfigError, match="did you mean 'review-sentiment'"):
        compare(settings, "review-sentimnet", str(zoo.stronger))


def test_cli_compare_json(zoo: Zoo, config_file: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERSEDE_")}
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "supersede.cli",
            "compare",
            "--config",
            str(config_file),
            "--finetune",
            "review-sentiment",
            "--candidate",
            str(zoo.weaker),
            "--limit",
            "120",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    for key in (
        "verdict",
        "finetune",
        "candidate",
        "task",
        "metric",
        "score_finetune",
        "score_candidate",
        "delta",
        "ci_low",
        "ci_high",
        "p_value",
        "n",
        "cost_per_1k_finetune",
        "cost_per_1k_candidate",
        "monthly_savings_usd",
        "summary",
        "payback_months",
        "monthly_net_usd",
        "blockers",
        "reviews",
        "license",
        "serving_memory_gb",
        "latency_p95_ms",
    ):
        assert key in row, key
    assert isinstance(row["blockers"], list) and isinstance(row["reviews"], list)
    assert row["verdict"] == "HOLDS" and row["n"] == 120 and row["metric"] == "acc"
    assert row["delta"] == pytest.approx(row["score_candidate"] - row["score_finetune"])


def test_api_candidate_is_compared_through_its_endpoint(
    zoo: Zoo, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.openai_server import OpenAIServer

    with OpenAIServer(logprobs=False) as server:
        server.require_key("sk-test-123")
        monkeypatch.setenv("VENDOR_KEY", "sk-test-123")
        # The endpoint's rule is about as good as the fine-tune: a 10-point margin makes
        # 300 examples enough to call it.
        monkeypatch.setenv("SUPERSEDE_VERDICT__MARGIN", "0.1")
        vendor = {"name": "vendor-mini", "base_url": server.url, "model": "mini-2026",
                  "api_key_env": "VENDOR_KEY", "input_usd_per_1m": 0.15,
                  "output_usd_per_1m": 0.60, "max_concurrency": 4}  # fmt: skip
        write_config(tmp_path, zoo, api_candidates=[vendor])
        report = compare(load_settings(config_file), "review-sentiment", "vendor-mini")
    assert report.verdict in (Verdict.SUPERSEDED, Verdict.AT_RISK), report.reason
    assert report.margin == 0.1
    assert report.candidate == "vendor-mini" and report.n == 300
    assert report.cost_basis_candidate is not None and report.cost_basis_candidate.startswith("API")
    candidate = report.details["candidate"]
    assert candidate["multiple_choice_mode"] == "choice"
    assert candidate["input_tokens"] > 0 and candidate["output_tokens"] > 0
    expected_per_1k = (
        (candidate["input_tokens"] * 0.15 + candidate["output_tokens"] * 0.60) / 1e6 / 300 * 1000
    )
    assert report.cost_per_1k_candidate == pytest.approx(expected_per_1k)
    assert report.hint is None  # not declared open weights
    assert "sk-test-123" not in json.dumps(report.to_dict())
