"""Celery workers: thin tasks that load a job, call the benchmark engine and record the result."""
