"""One benchmark, end to end: resolve and pin, answer from the cache or load, score, store.

The CLI (``supersede bench``) and the workers call :func:`bench`; it knows nothing of either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchmarks.cache import ResultStore, result_key
from benchmarks.models import ModelResolver, load_model, pick_device, pick_dtype
from benchmarks.runner import run_task
from benchmarks.scoring import RunResult
from benchmarks.tasks.task import load_task
from config.settings import PromptSettings, Settings

#: The hardware class of a run from the command line rather than on a worker's queue.
LOCAL = "local"


class ProgressSink(Protocol):
    """Where a long run reports progress (a rich bar in the CLI, nothing in a worker)."""

    def start(self, total: int, description: str) -> None: ...

    def advance(self, n: int) -> None: ...


@dataclass(frozen=True)
class BenchOutcome:
    """A result with how it was obtained."""

    result: RunResult
    identity: dict[str, Any]
    key: str
    cached: bool
    #: Seconds this call took, end to end.
    wall_s: float
    #: Seconds spent resolving, downloading and loading the model (0 on a cache hit).
    load_s: float
    device: str
    dtype: str
    timings: dict[str, float] = field(default_factory=dict)


def bench(
    settings: Settings,
    model: str,
    task_path: str | Path,
    *,
    adapter: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    use_cache: bool = True,
    prompt: PromptSettings | None = None,
    progress: ProgressSink | None = None,
    store: ResultStore | None = None,
    hardware: str = LOCAL,
) -> BenchOutcome:
    """Score ``model`` (+ ``adapter``) on the task file; reuse a stored result when allowed.

    ``hardware`` names the hardware class the run stands for (a worker's queue, or ``local``):
    it is part of the result's key with the device type and dtype, because the run's timings
    become the serving cost, and a cost measured on other hardware does not compare. With
    ``use_cache=False`` the model is always run, and the fresh result is stored.
    """
    started = time.perf_counter()
    runtime = settings.runtime
    if device is not None:
        runtime = runtime.model_copy(update={"device": device})
    task = load_task(task_path)
    resolver = ModelResolver(
        settings.hub,
        settings.secrets.hf_token.get_secret_value() if settings.secrets.hf_token else None,
    )
    base = resolver.resolve(model, "model")
    lora = resolver.resolve(adapter, "adapter") if adapter else None
    chosen_device = pick_device(runtime)
    dtype = pick_dtype(runtime, chosen_device)
    if limit is not None and limit >= len(task.docs):
        limit = None
    identity: dict[str, Any] = {
        "model": base.name,
        "model_revision": base.revision,
        "adapter": lora.name if lora else None,
        "adapter_revision": lora.revision if lora else None,
        "dtype": dtype,
        "device_type": chosen_device.split(":")[0],
        "hardware": hardware,
        "task": task.name,
        "task_hash": task.content_hash,
        "data_hash": task.data_hash,
        "limit": limit,
        "max_length": runtime.max_length,
        "prompt": prompt.model_dump() if prompt else None,
    }
    key = result_key(identity)
    store = store or ResultStore(settings.store.url)
    resolved_s = time.perf_counter() - started
    if use_cache:
        hit = store.get(key)
        if hit is not None:
            return BenchOutcome(
                result=hit[0],
                identity=identity,
                key=key,
                cached=True,
                wall_s=time.perf_counter() - started,
                load_s=0.0,
                device=chosen_device,
                dtype=dtype,
                timings={"resolve_s": resolved_s},
            )
    load_started = time.perf_counter()
    loaded = load_model(base, runtime, [lora] if lora else [])
    load_s = time.perf_counter() - load_started + resolved_s
    n = len(task.docs) if limit is None else limit
    if progress is not None:
        progress.start(n, f"{task.name} · {base.name}" + (f" + {lora.name}" if lora else ""))
    result = run_task(
        loaded,
        task,
        limit=limit,
        batch_size=batch_size or runtime.batch_size,
        max_length=runtime.max_length,
        progress=progress.advance if progress is not None else None,
        prompt=prompt,
    )
    store.put(key, identity, result)
    return BenchOutcome(
        result=result,
        identity=identity,
        key=key,
        cached=False,
        wall_s=time.perf_counter() - started,
        load_s=load_s,
        device=chosen_device,
        dtype=dtype,
        timings={"resolve_s": resolved_s},
    )
