"""One comparison, end to end: the fine-tune against a candidate on the fine-tune's own task.

The fine-tune side comes from the result store when it is there (it is computed once per
fine-tune and engine version); the candidate is a Hub model, a local folder, or a configured
API candidate. A side that fails for good (a refused or missing model, a rejected request) makes
the verdict ``INCONCLUSIVE`` with the reason; a temporary failure is raised, to be retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks import cost
from benchmarks.bench import BenchOutcome, ProgressSink, bench
from benchmarks.cache import ResultStore
from benchmarks.runner import RunResult
from benchmarks.stats import compare_paired
from benchmarks.tasks import load_task
from benchmarks.verdict import VerdictReport, decide
from config.errors import FatalError
from config.settings import ApiCandidate, Settings, api_key, finetune, task_path


@dataclass(frozen=True)
class _Side:
    name: str
    result: RunResult
    cost: cost.ServingCost
    details: dict[str, object]


def api_candidate(settings: Settings, name: str) -> ApiCandidate | None:
    """The configured API candidate called ``name``, if any."""
    return next((a for a in settings.api_candidates if a.name == name), None)


def compare(
    settings: Settings,
    finetune_name: str,
    candidate: str,
    *,
    limit: int | None = None,
    use_cache: bool = True,
    progress: ProgressSink | None = None,
    api: ApiCandidate | None = None,
) -> VerdictReport:
    """Score both sides on the fine-tune's task and decide (see :mod:`benchmarks.verdict`).

    ``candidate`` is a Hub id, a folder or the name of a configured API candidate; ``api`` gives
    an API candidate that is not in the config (one a vendor feed announced).
    """
    ft = finetune(settings, finetune_name)
    task_file = task_path(settings, ft.task)
    store = ResultStore(settings.store.url)
    api = api or api_candidate(settings, candidate)
    failure = None
    ft_side = cand_side = None
    try:
        ft_side = _self_hosted(
            settings,
            bench(
                settings,
                ft.model_ref,
                task_file,
                adapter=ft.adapter,
                limit=limit,
                prompt=ft.prompt,
                use_cache=use_cache,
                progress=progress,
                store=store,
            ),
        )
    except FatalError as exc:
        failure = f"the fine-tune {ft.name} could not be scored: {exc}"
    if failure is None:
        try:
            if api is not None:
                cand_side = _api(settings, api, task_file, limit, store, use_cache=use_cache)
            else:
                cand_side = _self_hosted(
                    settings,
                    bench(
                        settings,
                        candidate,
                        task_file,
                        limit=limit,
                        prompt=settings.candidates.prompt,
                        use_cache=use_cache,
                        progress=progress,
                        store=store,
                    ),
                )
        except FatalError as exc:
            failure = f"{candidate} could not be scored: {exc}"
    comparison = None
    if ft_side is not None and cand_side is not None:
        comparison = compare_paired(
            ft_side.result.outcomes,
            cand_side.result.outcomes,
            margin=settings.verdict.margin,
            confidence=settings.verdict.confidence,
            resamples=settings.verdict.bootstrap_resamples,
            seed=settings.verdict.seed,
        )
    report = decide(
        finetune=ft.name,
        candidate=cand_side.name if cand_side else candidate,
        task=ft_side.result.task if ft_side else ft.task,
        metric=ft_side.result.metric if ft_side else "",
        economics=ft.economics,
        rules=settings.verdict,
        comparison=comparison,
        cost_finetune=ft_side.cost if ft_side else None,
        cost_candidate=cand_side.cost if cand_side else None,
        open_weights=api.open_weights if api is not None else True,
        failure=failure,
    )
    details = {
        "finetune": ft_side.details if ft_side else None,
        "candidate": cand_side.details if cand_side else None,
    }
    return _with_details(report, details)


def _self_hosted(settings: Settings, outcome: BenchOutcome) -> _Side:
    identity = outcome.identity
    name = identity["model"] + (f" + {identity['adapter']}" if identity["adapter"] else "")
    return _Side(
        name=identity["model"],
        result=outcome.result,
        cost=cost.self_hosted(outcome.result, settings.serving.gpu_hour_usd, outcome.device),
        details={
            "model": name,
            "model_revision": identity["model_revision"],
            "adapter_revision": identity["adapter_revision"],
            "cached": outcome.cached,
            "key": outcome.key,
            "score": outcome.result.score,
            "stderr": outcome.result.stderr,
        },
    )


def api_result(
    settings: Settings,
    candidate: ApiCandidate,
    task_file: object,
    limit: int | None,
    store: ResultStore,
    *,
    use_cache: bool = True,
) -> RunResult:
    """An API candidate's answers on a task, from the result store when they are there (the
    endpoint's model name, URL and prompt settings are part of the key)."""
    from benchmarks.api import run_api_task
    from benchmarks.cache import result_key

    task = load_task(str(task_file))
    identity = {
        "model": f"api:{candidate.base_url.rstrip('/')}#{candidate.model}",
        "model_revision": "api",
        "adapter": None,
        "adapter_revision": None,
        "task": task.name,
        "task_hash": task.content_hash,
        "data_hash": task.data_hash,
        "limit": limit,
        "prompt": settings.candidates.prompt.model_dump(),
        "multiple_choice": candidate.multiple_choice,
    }
    key = result_key(identity)
    hit = store.get(key) if use_cache else None
    if hit is not None:
        return hit[0]
    result = run_api_task(
        candidate,
        task,
        api_key=api_key(candidate),
        limit=limit,
        prompt=settings.candidates.prompt,
    )
    store.put(key, identity, result)
    return result


def _api(
    settings: Settings,
    candidate: ApiCandidate,
    task_file: object,
    limit: int | None,
    store: ResultStore,
    *,
    use_cache: bool = True,
) -> _Side:
    result = api_result(settings, candidate, task_file, limit, store, use_cache=use_cache)
    return _Side(
        name=candidate.name,
        result=result,
        cost=cost.api(result, candidate),
        details={
            "model": candidate.model,
            "endpoint": candidate.base_url,
            "score": result.score,
            "stderr": result.stderr,
            **{k: v for k, v in result.extra.items() if k != "cost_usd"},
        },
    )


def _with_details(report: VerdictReport, details: dict[str, Any]) -> VerdictReport:
    from dataclasses import replace

    return replace(report, details={**report.details, **details})
