"""Hosted candidates: scoring a model reachable only through an OpenAI-compatible API.

:mod:`benchmarks.api.runner` runs a task against the endpoint (prompts, answers, scores);
:mod:`benchmarks.api.endpoint` is the HTTP side (concurrency, retries, token accounting).
"""

from benchmarks.api.runner import run_api_task

__all__ = ["run_api_task"]
