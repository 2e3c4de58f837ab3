"""The command line as a new user meets it: the version, the help, a read-only folder, a narrow
terminal, and the commands it suggests. Each runs the installed ``supersede`` as a subprocess."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from supersede.cli.app import app
from tests.support.cli import cli_env, supersede
from tests.support.settings import write_settings
from workers.jobs import JobStore

SHA = "595e891e838115d9008992679a98b2bd51461533"
assert len(SHA) == 40
REASON = (
    "HOLDS: The fine-tune keeps a +23.0 points edge over otherlab/Tiny-Mini-Instruct-2025 for "
    "$1,200/month of upkeep; re-tuning the adapter on it as the new base may recover the edge."
)


def test_version_is_the_installed_package_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    done = supersede("--version", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"supersede {version('supersede')}"


def test_help_shows_flags_as_flags_for_every_command(tmp_path: Path) -> None:
    done = supersede("status", "--help", cwd=tmp_path, env={"COLUMNS": "80"}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^\s+--json\s+Print JSON", done.stdout, re.MULTILINE), done.stdout
    assert "<bool>" not in done.stdout
    # Every other command's page, rendered the same way in this process (one start-up, not ten).
    commands = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {"demo", "status", "compare", "run", "poll"} <= set(commands)
    for command in ["", *commands]:
        page = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "80"})
        assert page.exit_code == 0, page.output
        assert "<bool>" not in page.output, f"{command}: {page.output}"
        assert max(len(line) for line in page.output.splitlines()) <= 80, page.output


# ---------------------------------------------------------------------- a read-only folder


def _in_a_read_only_folder(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``supersede ARGS`` run from a folder on a read-only file system (a tmpfs mounted read-only
    in a private mount namespace), so even root cannot write there."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux's unshare to mount a read-only file system")
    folder = tmp_path / "read-only"
    folder.mkdir()
    script = 'mount -t tmpfs -o ro tmpfs "$1" && cd "$1" && shift && exec "$@"'
    command = [unshare, "-rm", "sh", "-c", script, "sh", str(folder),
               sys.executable, "-m", "supersede.cli", *args]  # fmt: skip
    done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=60)
    if "mount" in done.stderr and done.returncode != 2:
        pytest.skip(f"this machine cannot mount a private read-only tmpfs: {done.stderr.strip()}")
    return done


@pytest.mark.parametrize(
    ("command", "variable"),
    [("demo", "SUPERSEDE_DEMO_WORKDIR"), ("example", "SUPERSEDE_EXAMPLE_WORKDIR")],
)
def test_a_read_only_working_folder_is_one_line_naming_the_way_out(
    tmp_path: Path, command: str, variable: str
) -> None:
    done = _in_a_read_only_folder(tmp_path, command)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f".supersede/{command}" in lines[0] and "Read-only file system" in lines[0]
    assert "--workdir" in lines[0] and variable in lines[0]
    assert "Traceback" not in done.stderr


def test_the_workdir_variable_is_read(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = supersede(
        "example", cwd=tmp_path, env={"SUPERSEDE_EXAMPLE_WORKDIR": str(blocker / "x")}, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert str(blocker / "x") in done.stderr.replace("\n", "")


# ---------------------------------------------------------------------- a narrow terminal


@pytest.fixture
def store_config(tmp_path: Path) -> Path:
    """A config whose store holds a benchmark and a verdict of a pinned Hub release."""
    url = f"sqlite:///{tmp_path / 'supersede.db'}"
    jobs = JobStore(url)
    candidate = f"otherlab/Tiny-Mini-Instruct-2025@{SHA}"
    jobs.add(key="b" * 64, kind="benchmark", candidate=candidate, queue="gpu-24g", state="done",
             payload={})  # fmt: skip
    jobs.add(key="v" * 64, kind="verdict", candidate=candidate, finetune="review-sentiment",
             queue="default", state="failed", reason=REASON, payload={})  # fmt: skip
    return write_settings(tmp_path, store={"url": url})


@pytest.mark.parametrize("columns", [80, 200])
def test_status_is_readable_at_any_width_with_short_shas(
    store_config: Path, tmp_path: Path, columns: int
) -> None:
    done = supersede(
        "status", "-c", str(store_config), cwd=tmp_path, env={"COLUMNS": str(columns)}, timeout=60
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert max(len(line.rstrip()) for line in text.splitlines()) <= columns, text
    assert SHA not in text and SHA[:12] in text
    assert "b" * 12 in text and "b" * 13 not in text
    if columns == 80:  # no word of the reason is broken across lines
        words = set(text.split())
        assert all(word in words for word in REASON.split()), text


def test_status_json_keeps_the_full_sha(store_config: Path, tmp_path: Path) -> None:
    done = supersede("status", "--json", "-c", str(store_config), cwd=tmp_path, timeout=60)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert {row["candidate"] for row in rows} == {f"otherlab/Tiny-Mini-Instruct-2025@{SHA}"}
    assert {row["key"] for row in rows} == {"b" * 64, "v" * 64}


# ---------------------------------------------------------------------- suggested commands


@pytest.mark.parametrize("activated", [False, True])
def test_suggested_commands_are_typeable_as_printed(
    store_config: Path, tmp_path: Path, activated: bool
) -> None:
    """Before the virtualenv is activated ``supersede`` is not on the PATH: the hint a command
    prints is the program's own path; once activated, plain ``supersede``. Either runs as
    printed."""
    program = Path(sys.executable).parent / "supersede"
    if not program.exists():
        pytest.skip("the supersede console script is not installed next to this Python")
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    path = [p for p in path if not (Path(p) / "supersede").exists()]
    if activated:
        path.insert(0, str(program.parent))
    env = cli_env({"PATH": os.pathsep.join(path)})
    arguments = f"status -c {shlex.quote(str(store_config))}"
    code = (
        f"import sys; sys.argv = [{str(program)!r}]; "
        f"from supersede.cli.console import typeable; print(typeable({arguments!r}))"
    )
    shown = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert shown.startswith("supersede " if activated else f"{program} "), shown
    ran = subprocess.run(shlex.split(shown), env=env, cwd=tmp_path, capture_output=True, text=True)
    assert ran.returncode == 0 and "review-sentiment" in ran.stdout, ran.stderr


# ---------------------------------------------------------------------- offline


def test_poll_once_offline_gives_each_source_up_at_once(tmp_path: Path) -> None:
    """No network: every source fails fast, once, each on one line; the summary lists them all,
    and the exit code says "try again later"."""
    import socket
    import time

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    config = write_settings(
        tmp_path,
        store={"url": f"sqlite:///{tmp_path / 'supersede.db'}"},
        hub={"endpoint": "http://hub.supersede-offline.invalid"},
        watch={
            "hub": {"authors": [f"org{i}" for i in range(10)]},
            "feeds": [{"name": "vendor-blog", "url": f"{dead}/blog/rss.xml"},
                      {"name": "other-news", "url": "http://news.supersede-offline.invalid/f"}],
        },
    )  # fmt: skip
    started = time.monotonic()
    done = supersede("poll", "--once", "-c", str(config), cwd=tmp_path, env={"COLUMNS": "80"},
                     timeout=120)  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 75, done.stdout + done.stderr
    assert elapsed < 15, f"took {elapsed:.0f} s"
    lines = done.stderr.strip().splitlines()
    assert sorted(line.split(": ")[0] for line in lines) == [
        "feed:other-news", "feed:vendor-blog", "hub"], done.stderr  # fmt: skip
    assert "the Hub at http://hub.supersede-offline.invalid is unreachable" in done.stderr
    for source in ("hub", "feed:vendor-blog", "feed:other-news"):
        assert source in done.stdout
    assert "3 of 3 sources failed" in done.stdout
