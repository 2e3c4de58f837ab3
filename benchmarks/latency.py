"""Per-request latency: a few requests served one at a time, as a deployment serves them.

The batched run measures throughput; a latency target is about one request. After the batched
run, :func:`measure_latency` serves ``sample`` requests one at a time (one request per batch),
picked at evenly spaced indices over the task so that short and long documents both count, and
times each one end to end, tokenizing included.

multiple_choice
    One request is one document: all its choices scored as full rows in one batch (choices
    that share a one-token context share a forward pass), as a classification endpoint would
    serve it. Shared-prefix scoring (two passes, the context's KV cache reused) pays off over
    many documents, not one: a single request is timed without it.

generate_until
    One request is greedy generation for one prompt. Time to first token runs from the start of
    the request to the moment the first new token exists on the host: an observing stopping
    criterion, which ``generate`` calls once per new token right after choosing it, notes the
    time of its first call (after the prefill forward pass and the first token's selection).
    The same run gives the total, so nothing is generated twice. Time per output token is
    ``(total - ttft) / max(output_tokens - 1, 1)``.

Quantiles: the median (as :class:`~benchmarks.scoring.RunStats` takes it) and the nearest-rank
95th percentile. The engine's counters behind the run statistics are never touched: each
request runs on a fresh copy of the engine (:meth:`~benchmarks.engine.Engine.fresh_copy`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.engine import Engine, nearest_rank
from benchmarks.tasks.render import Request


def sample_indices(n_requests: int, sample: int) -> list[int]:
    """``min(sample, n_requests)`` distinct indices, evenly spaced over ``range(n_requests)``
    (the middle of each of ``sample`` equal strata)."""
    n = min(sample, n_requests)
    return [(2 * i + 1) * n_requests // (2 * n) for i in range(n)]


def summarize(
    totals_s: Sequence[float],
    *,
    ttft_s: Sequence[float] | None = None,
    per_token_s: Sequence[float] | None = None,
    network: bool = False,
) -> dict[str, Any]:
    """The JSON record of per-request latencies (seconds in, milliseconds out)."""
    totals = sorted(t * 1000 for t in totals_s)
    record: dict[str, Any] = {
        "sample": len(totals),
        "p50_ms": statistics.median(totals),
        "p95_ms": nearest_rank(totals, 0.95),
        "mean_ms": statistics.fmean(totals),
        "batch_size": 1,
    }
    if ttft_s is not None:
        ttft = sorted(t * 1000 for t in ttft_s)
        record["ttft_p50_ms"] = statistics.median(ttft)
        record["ttft_p95_ms"] = nearest_rank(ttft, 0.95)
    if per_token_s is not None:
        record["per_token_ms"] = statistics.median(t * 1000 for t in per_token_s)
    if network:
        record["network"] = True
    return record


def measure_latency(
    engine: Engine,
    requests: Sequence[Request],
    sample: int,
    *,
    generation: tuple[Sequence[str], int] | None = None,
) -> dict[str, Any] | None:
    """Serve ``sample`` of ``requests`` one at a time on ``engine``'s model and summarize.

    ``generation`` is ``(until, max_gen_toks)`` for a generate_until task, ``None`` for
    multiple_choice. Run it under the same inference mode and adapter as the batched run.
    ``None`` when there is nothing to time.
    """
    picked = [requests[i] for i in sample_indices(len(requests), sample)]
    if not picked:
        return None
    sync = _synchronizer(engine.device)
    if generation is None:
        serve_choices = _serve_choices(engine)
        serve_choices(picked[0])  # untimed: the first batch-1 shapes pay for kernel selection
        return summarize([_timed(serve_choices, request, sync) for request in picked])
    until, max_gen_toks = generation
    serve = _Generation(engine, until, max_gen_toks, sync)
    serve(picked[0])  # untimed, as above
    timings = [serve(request) for request in picked]
    return summarize(
        [total for total, _, _ in timings],
        ttft_s=[ttft for _, ttft, _ in timings],
        per_token_s=[per_token for _, _, per_token in timings],
    )


def _synchronizer(device: str) -> Callable[[], None]:
    """Waits for queued device work, so a clock read covers it (a no-op off CUDA)."""
    if not device.startswith("cuda"):
        return lambda: None
    import torch

    return torch.cuda.synchronize


def _serve_choices(engine: Engine) -> Callable[[Request], None]:
    def serve(request: Request) -> None:
        engine.fresh_copy(exact=True).loglikelihoods([request], None)

    return serve


def _timed(serve: Callable[[Request], None], request: Request, sync: Callable[[], None]) -> float:
    sync()
    started = time.perf_counter()
    serve(request)
    sync()
    return time.perf_counter() - started


class _Generation:
    """Serves one prompt; returns ``(total, time to first token, time per later token)``."""

    def __init__(
        self, engine: Engine, until: Sequence[str], max_gen_toks: int, sync: Callable[[], None]
    ) -> None:
        self.engine = engine
        self.until = until
        self.max_gen_toks = max_gen_toks
        self.sync = sync

    def __call__(self, request: Request) -> tuple[float, float, float]:
        single = self.engine.fresh_copy()
        clock = _FirstTokenClock(self.sync)
        self.sync()
        started = time.perf_counter()
        single.generate([request], self.until, self.max_gen_toks, None, watchers=[clock])
        self.sync()
        total = time.perf_counter() - started
        ttft = clock.at - started if clock.at is not None else total
        produced = single.max_output_tokens
        return total, ttft, (total - ttft) / max(produced - 1, 1)


class _FirstTokenClock:
    """A stopping criterion that never stops: it notes when it is first called, i.e. when the
    first new token has been chosen."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.at: float | None = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.at is None:
            self.sync()
            self.at = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
