"""Celery workers: ``celery -A workers worker -Q gpu-80g -c 1`` (or ``supersede run``).

``workers.app`` is built from the settings on first use (``$SUPERSEDE_CONFIG``, else
``config/supersede.yaml``), so importing the package's modules reads no configuration. It is the
entry point of the ``celery`` command: a config that cannot be read ends the process with one
line and exit code 2, never a traceback. A worker then checks everything it will need before it
consumes anything (:mod:`workers.preflight`, from the ``celeryd_init`` signal). Nothing here
imports torch: a worker's parent process never initialises CUDA, models load only inside the
pool processes that run benchmarks.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from config.settings import load_settings
        from core.errors import ConfigError
        from workers.app import make_app
        from workers.preflight import exit_fatal

        try:
            settings = load_settings()
        except ConfigError as exc:
            exit_fatal(exc)
        built = make_app(settings)
        globals()["app"] = globals()["celery"] = built
        return built
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
