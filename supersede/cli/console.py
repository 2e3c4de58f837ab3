"""What every CLI command shares: the consoles, exit codes, common options, error display."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from core.errors import ConfigError, RetryableError, SupersedeError
from core.logs import JsonFormatter, Redact

err = Console(stderr=True)
out = Console()

#: Exit codes: 2 = fatal (fix the input), 75 = temporary (try again later, EX_TEMPFAIL).
EXIT_FATAL = 2
EXIT_RETRYABLE = 75

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config (default: $SUPERSEDE_CONFIG, config/supersede.yaml)."
    ),
]
LimitOption = Annotated[int | None, typer.Option(min=1, help="Score only the first N documents.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


#: Below this many columns tables give way to one block per row.
WIDE_COLUMNS = 180


def typeable(arguments: str) -> str:
    """``supersede ARGUMENTS`` as the user can type it in this shell: plain ``supersede`` when
    that is this program on the PATH, else its path (``.venv/bin/supersede`` before the
    virtualenv is activated), or ``python -m supersede.cli`` when run that way."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if program is not None and program.name == "supersede" and program.exists():
        on_path = shutil.which("supersede")
        if on_path and Path(on_path).resolve() == program.resolve():
            return f"supersede {arguments}"
        command = shlex.quote(_relative(program.absolute()))
    else:
        command = f"{shlex.quote(_relative(Path(sys.executable).absolute()))} -m supersede.cli"
    return f"{command} {arguments}"


def _relative(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def usable_workdir(path: Path, variable: str) -> Path:
    """``path`` made absolute and created, once a file could be written in it; else one
    :class:`ConfigError` naming the folder and how to choose another (``--workdir`` or
    ``variable``)."""
    root = path.resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".supersede-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot write in {root} ({reason}): choose a writable folder with --workdir DIR "
            f"or ${variable}"
        ) from None
    return root


def quiet_libraries() -> None:
    """Library progress bars and advisories would interleave with ours; errors still show."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The same for the processes started from this one (a model's run in its own process).
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def setup_logging(
    verbose: bool = False, *, log_format: str = "auto", secrets: list[str] | None = None
) -> None:
    """Log lines on stderr (JSON when it is not a terminal, or as configured), secrets redacted;
    the libraries' own chatter only at warning level."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler.setFormatter(
        JsonFormatter()
        if as_json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(Redact(secrets or []))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("httpx", "httpx2", "apscheduler.executors", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # huggingface_hub warns on each retry through a handler of its own as well as ours (every
    # line twice); Supersede reports each failed call once, with its reason.
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def fail(exc: SupersedeError) -> typer.Exit:
    """Print ``exc`` as one line and pick the exit code: 75 retryable, 2 otherwise."""
    err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_RETRYABLE if isinstance(exc, RetryableError) else EXIT_FATAL)


def configure_logging(settings: Any, verbose: bool = False) -> None:
    """:func:`setup_logging` as the settings ask, redacting the secrets they can see."""
    from config.settings import secret_values

    setup_logging(
        verbose,
        log_format=settings.observability.log_format,
        secrets=secret_values(settings),
    )
