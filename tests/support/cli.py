"""Run the ``supersede`` command as a user would: a subprocess with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without Supersede or Hub settings, telemetry off."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SUPERSEDE_") and k not in ("HF_TOKEN", "HF_ENDPOINT")
    }
    environ.update({"HF_HUB_DISABLE_TELEMETRY": "1", **(extra or {})})
    return environ


def supersede(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``supersede ARGS`` run to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "supersede.cli", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
