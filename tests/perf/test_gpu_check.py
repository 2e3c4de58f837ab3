"""``perf/gpu_check.py --dry-run``: the GPU check's whole path on CPU with a tiny model, so the
script cannot rot while no GPU runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Settings the run was given, not measured (a zero there is meaningful: vocabulary 0 = the
#: tokenizer's own size).
NOT_MEASURED = {"plan", "shape"}


def numbers(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every measured number in the report, with where it is."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in NOT_MEASURED:
                yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numbers(item, f"{path}[{i}]")


@pytest.mark.slow
def test_dry_run_measures_every_figure_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, "perf/gpu_check.py", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| model | figure | value | of roofline |" in done.stdout
    assert "Traceback" not in done.stderr

    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["dry_run"] is True
    assert report["device"] == {"name": "cpu", "bandwidth_gbs": "n/a", "source": "n/a"}
    (model,) = report["models"]
    assert set(model) >= {"name", "parameters", "weight_bytes_per_pass", "scoring", "decode"}
    assert set(model["scoring"]) >= {"tokens_per_s", "roofline_fraction", "examples", "tokens"}
    assert [d["batch"] for d in model["decode"]] == [1, 32]
    for figure in [model["scoring"], *model["decode"]]:
        assert figure["roofline_fraction"] == "n/a"
        assert figure["tokens_per_s"] > 0
    assert set(model["memory"]) >= {"peak_gib", "estimate_gib", "memory_overhead"}
    lora = report["lora"]
    assert lora["adapters"] == 4
    assert len(lora["shared_score_s"]) == len(lora["fresh_load_s"]) == 4
    assert lora["predictions_equal"] is True
    assert lora["adapters_differ"] is True

    found = dict(numbers(report))
    assert len(found) > 20
    assert {path: n for path, n in found.items() if not n > 0} == {}
