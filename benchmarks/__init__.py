"""The benchmark engine: task files, safe model loading, the batched runner, metrics and the
result cache. Imports neither Celery nor APScheduler."""
