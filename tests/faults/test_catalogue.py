"""The fault catalogue is complete and true: every case has tests that exist, and the README's
reliability table is the catalogue."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.faults.catalogue import FAULTS, markdown

REPO = Path(__file__).resolve().parents[2]


def test_every_case_names_tests_that_exist() -> None:
    files = sorted({prefix.split("::")[0] for fault in FAULTS for prefix in fault.tests})
    for file in files:
        assert (REPO / file).is_file(), file
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    ids = [line.strip() for line in collected.stdout.splitlines() if "::" in line]
    for fault in FAULTS:
        for prefix in fault.tests:
            assert any(i.startswith(prefix) for i in ids), f"{fault.fault}: no test {prefix}"


def test_the_readme_table_is_the_catalogue() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert markdown() in readme, (
        "README's reliability table differs: python -m tests.faults.catalogue"
    )


def test_the_catalogue_covers_each_kind_of_fault() -> None:
    groups = {fault.group for fault in FAULTS}
    assert groups == {
        "model",
        "outage",
        "process",
        "topology",
        "slack",
        "judge",
        "config",
        "input",
        "secrets",
        "security",
    }
    assert len(FAULTS) >= 30
