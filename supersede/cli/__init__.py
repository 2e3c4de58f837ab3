"""The ``supersede`` command, one module per command group (assembled in ``app``)."""

from supersede.cli.app import app, main

__all__ = ["app", "main"]
