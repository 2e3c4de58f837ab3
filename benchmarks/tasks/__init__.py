"""Task files (moved from benchmarks/tasks.py; split into modules next)."""

from benchmarks.tasks.schema import *  # noqa: F403
