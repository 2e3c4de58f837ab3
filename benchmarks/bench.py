"""One benchmark, end to end: resolve and pin, answer from the cache or load, score, store.

The CLI (``supersede bench``) and the workers call :func:`bench`; it knows nothing of either.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchmarks.cache import ResultStore, result_from_dict, result_key, result_to_dict
from benchmarks.limits import active_limits, cuda_limits, run_limited
from benchmarks.models import (
    ModelRef,
    ModelResolver,
    ResolvedModel,
    finetune_refs,
    load_model,
    pick_device,
    pick_dtype,
)
from benchmarks.runner import run_task
from benchmarks.scoring import RunResult
from benchmarks.tasks.task import load_task
from config.settings import PromptSettings, RuntimeSettings, Settings

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
    exact: bool = False,
) -> BenchOutcome:
    """Score ``model`` (+ ``adapter``) on the task file; reuse a stored result when allowed.

    ``hardware`` names the hardware class the run stands for (a worker's queue, or ``local``):
    it is part of the result's key with the device type and dtype, because the run's timings
    become the serving cost, and a cost measured on other hardware does not compare. With
    ``use_cache=False`` the model is always run, and the fresh result is stored. ``exact``
    scores every choice as its own full row (see :func:`benchmarks.runner.run_task`); it is part
    of the key only when set, so the default path keeps its keys.
    """
    started = time.perf_counter()
    runtime = settings.runtime
    if device is not None:
        runtime = runtime.model_copy(update={"device": device})
    task = load_task(task_path)
    timings: dict[str, float] = {"task_s": time.perf_counter() - started}
    resolver = ModelResolver(
        settings.hub,
        settings.secrets.hf_token.get_secret_value() if settings.secrets.hf_token else None,
        keep=finetune_refs(settings),
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
        "latency_sample": runtime.latency_sample,
    }
    if exact:
        identity["exact"] = True
    key = result_key(identity)
    timings["resolve_s"] = time.perf_counter() - started - timings["task_s"]
    opening = time.perf_counter()
    store = store or ResultStore(settings.store.url)
    timings["store_s"] = time.perf_counter() - opening
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
                timings=timings,
            )
    run = {
        "base": _resolved_to_dict(base),
        "adapter": _resolved_to_dict(lora) if lora else None,
        "runtime": runtime.model_dump(mode="json"),
        "task": str(Path(task_path).resolve()),
        "limit": limit,
        "batch_size": batch_size or runtime.batch_size,
        "prompt": prompt.model_dump(mode="json") if prompt else None,
        "max_prompt_chars": settings.workers.max_prompt_chars,
        "latency_sample": runtime.latency_sample,
        "exact": exact,
    }
    limits = active_limits()
    if limits is None:
        n = len(task.docs) if limit is None else limit
        if progress is not None:
            progress.start(n, f"{task.name} · {base.name}" + (f" + {lora.name}" if lora else ""))
        result, load_s = _run_model(
            run, progress.advance if progress is not None else None, timings
        )
    else:
        # A worker: the model runs in a child process, under the configured limits.
        what = base.name + (f" + {lora.name}" if lora else "")
        reply = run_limited(
            f"{__name__}:run_model", run, cuda_limits(limits, chosen_device), what=what
        )
        result, load_s = result_from_dict(reply["result"]), float(reply["load_s"])
    load_s += resolved_s
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
        timings=timings,
    )


def run_model(run: dict[str, Any]) -> dict[str, Any]:
    """Load and score one model as :func:`bench` describes it in ``run`` (JSON in and out): what
    a worker runs in a child process (:mod:`benchmarks.limits`)."""
    result, load_s = _run_model(run, None)
    return {"result": result_to_dict(result), "load_s": load_s}


def _run_model(
    run: dict[str, Any], progress: Any, timings: dict[str, float] | None = None
) -> tuple[RunResult, float]:
    """Load and score; with ``timings``, record where the start-up went (seconds): importing
    the model libraries, loading the tokenizer and weights (adapters included), the first batch."""
    started = time.perf_counter()
    adapter, prompt = run["adapter"], run["prompt"]
    runtime = RuntimeSettings(**run["runtime"])
    adapters = [_resolved_from_dict(adapter)] if adapter else []
    if timings is not None:
        _import_model_libraries(bool(adapters))
        timings["libraries_s"] = time.perf_counter() - started
    loaded = load_model(_resolved_from_dict(run["base"]), runtime, adapters)
    loaded_at = time.perf_counter()
    load_s = loaded_at - started
    if timings is not None:
        timings["model_s"] = load_s - timings["libraries_s"]
        progress = _stamp_first_batch(progress, timings, loaded_at)
    result = run_task(
        loaded,
        load_task(run["task"]),
        limit=run["limit"],
        batch_size=run["batch_size"],
        max_length=runtime.max_length,
        progress=progress,
        prompt=PromptSettings(**prompt) if prompt else None,
        max_prompt_chars=run["max_prompt_chars"],
        latency_sample=run["latency_sample"],
        exact=bool(run.get("exact", False)),
    )
    return result, load_s


def _import_model_libraries(adapters: bool) -> None:
    """Import what :func:`load_model` imports, so that its cost is told apart from loading.

    The first import creates hundreds of thousands of long-lived objects and little garbage: the
    cyclic collector stays off meanwhile (it would walk them again and again), and they are
    frozen after, out of every later collection's way (once a process: a later call imports
    nothing, and freezes nothing more)."""
    import gc
    import sys

    first = "transformers.modeling_utils" not in sys.modules
    enabled = gc.isenabled()
    if first:
        gc.disable()
    try:
        import torch  # noqa: F401
        import transformers
        import transformers.modeling_utils

        # The lazy module imports its heavy parts on first use: the auto classes' own modules.
        transformers.AutoTokenizer  # noqa: B018
        transformers.AutoModelForCausalLM  # noqa: B018
        if adapters:
            import peft  # noqa: F401
    finally:
        if first:
            if enabled:
                gc.enable()
            gc.freeze()


def _stamp_first_batch(progress: Any, timings: dict[str, float], loaded_at: float) -> Any:
    """``progress`` that also records, once, the seconds from the loaded model to the first
    finished batch."""

    def advance(n: int) -> None:
        if "first_batch_s" not in timings:
            timings["first_batch_s"] = time.perf_counter() - loaded_at
        if progress is not None:
            progress(n)

    return advance


def _resolved_to_dict(model: ResolvedModel) -> dict[str, Any]:
    data = dataclasses.asdict(model)
    data["local_dir"] = str(model.local_dir)
    data["ref"]["path"] = str(model.ref.path) if model.ref.path else None
    return data


def _resolved_from_dict(data: dict[str, Any]) -> ResolvedModel:
    ref = dict(data["ref"])
    ref["path"] = Path(ref["path"]) if ref["path"] else None
    return ResolvedModel(
        ref=ModelRef(**ref),
        kind=data["kind"],
        local_dir=Path(data["local_dir"]),
        revision=data["revision"],
        trust_remote_code=data["trust_remote_code"],
    )
