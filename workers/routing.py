"""Which GPU queue a benchmark goes to: the smallest one whose workers have the memory for it."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.models import estimate_params
from config.workers import WorkersSettings

GIB = 1024**3
#: Bytes per parameter of the dtype the GPU workers load in (``runtime.dtype``; auto = bfloat16).
DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class Route:
    """A queue, or ``queue=None`` with the reason when no queue fits."""

    queue: str | None
    need_gib: float | None
    reason: str = ""


def need_gib(params: int, dtype: str, overhead: float) -> float:
    """Weights in ``dtype`` times ``overhead`` (activations, KV cache, CUDA context)."""
    return params * DTYPE_BYTES.get(dtype, 2) * overhead / GIB


def route(
    params: int | None, dtype: str, workers: WorkersSettings, *, weight_bytes: int | None = None
) -> Route:
    """The smallest ``workers.gpu_queues`` entry that fits.

    When the Hub gives no parameter count, it is estimated from ``weight_bytes`` (the listed
    size of the safetensors weights); only with neither is the largest queue taken.
    """
    queues = sorted(
        ((name, queue.memory_gb) for name, queue in workers.gpu_queues.items()),
        key=lambda item: (item[1], item[0]),
    )
    estimated = ""
    if params is None and weight_bytes:
        params = estimate_params(weight_bytes)
        estimated = f"parameter count estimated from {weight_bytes / GIB:.2f} GiB of weights"
    if params is None:
        name, _ = queues[-1]
        return Route(name, None, "parameter count unknown: sent to the largest queue")
    need = need_gib(params, dtype, workers.memory_overhead)
    for name, gib in queues:
        if need <= gib:
            return Route(name, need, estimated)
    name, gib = queues[-1]
    return Route(
        None,
        need,
        f"too large: needs about {need:.0f} GiB of GPU memory ({params / 1e9:.1f}B parameters "
        f"in {dtype}{', ' + estimated if estimated else ''}); the largest queue, {name}, has "
        f"{gib:g} GiB",
    )
