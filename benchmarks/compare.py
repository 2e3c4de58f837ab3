"""One comparison: score both sides where this process runs (I/O), then judge (pure).

* :func:`check_deployable` reads the candidate's licence and size before anything is
  downloaded (:mod:`benchmarks.deploy`); a candidate it blocks is not scored unless
  ``deploy.benchmark_blocked`` asks for it.
* :func:`score_finetune` and :func:`score_candidate` score one side each on the fine-tune's task,
  answering from the result store when the same model, revision, task, settings, dtype, device
  type and hardware class were scored before. The benchmark job calls them on its GPU queue.
* :func:`judge` decides from two results and the settings: no Hub, no model, no store.
* :func:`judge_stored` reads two results back from the store by key and judges them: the
  verdict job, and ``supersede compare --stored``.
* :func:`compare` scores both sides here and judges them: ``supersede compare``.

A side that fails for good (a refused or missing model, a rejected request) makes the verdict
``INCONCLUSIVE`` with the reason; a temporary failure is raised, to be retried.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import cost
from benchmarks.bench import LOCAL, ProgressSink, bench
from benchmarks.cache import ResultStore, result_key
from benchmarks.deploy import (
    Deployability,
    ModelFacts,
    assess,
    final,
    probe,
    request_tokens_estimate,
)
from benchmarks.judge.pair import judge_answers
from benchmarks.judge.records import PairwiseJudgement
from benchmarks.judge.stats import compare_judged
from benchmarks.scoring import RunResult
from benchmarks.sides import PairScores, RetuneRecord, ScoredSide
from benchmarks.stats import PairedComparison, compare_paired
from benchmarks.tasks.task import load_task
from benchmarks.threeway import with_retune
from benchmarks.verdict import JudgedFigures, Verdict, VerdictReport, decide
from config.api import ApiCandidate
from config.settings import FineTune, Settings, api_key, deploy_for, finetune, task_path
from core.errors import FatalError


@dataclass(frozen=True)
class Scored:
    """A side's result with its record (what the benchmark job stores on the job)."""

    side: ScoredSide
    result: RunResult


class MissingResult(FatalError):
    """A result a verdict needs is no longer in the store (the store was wiped or pruned)."""


def api_candidate(settings: Settings, name: str) -> ApiCandidate | None:
    """The configured API candidate called ``name``, if any."""
    return next((a for a in settings.api_candidates if a.name == name), None)


# ---------------------------------------------------------------------------------- deploying


def check_deployable(
    settings: Settings,
    ft: FineTune,
    candidate: str,
    *,
    api: ApiCandidate | None = None,
    known: ModelFacts | None = None,
) -> Deployability:
    """The candidate's licence and serving memory against the fine-tune's deploy settings,
    read from the Hub's metadata and ``config.json`` (a folder's own files; an API candidate's
    rule): no weight is downloaded. :meth:`Deployability.blockers` lists what blocks it.

    ``known``: the candidate's facts as read for another fine-tune of the same release; the
    Hub is not asked again, only this fine-tune's task length is estimated."""
    from benchmarks.models import ModelResolver

    deploy = deploy_for(settings, ft)
    tokens = None
    if api is None:
        task = load_task(task_path(settings, ft.task))
        tokens = request_tokens_estimate(task, settings.candidates.prompt)
    if known is not None:
        facts = known.model_copy(update={"tokens_per_request": tokens, "tokens_measured": False})
    else:
        token = settings.secrets.hf_token
        resolver = ModelResolver(settings.hub, token.get_secret_value() if token else None)
        facts = probe(resolver, candidate, api=api, tokens=tokens)
    checked = assess(facts, deploy)
    if checked.blockers and not deploy.benchmark_blocked:
        return checked.model_copy(update={"benchmarked": False})
    return checked


# ---------------------------------------------------------------------------------- scoring


def score_finetune(
    settings: Settings,
    ft: FineTune,
    *,
    hardware: str = LOCAL,
    limit: int | None = None,
    use_cache: bool = True,
    progress: ProgressSink | None = None,
    store: ResultStore | None = None,
) -> Scored:
    """The deployed fine-tune (base + adapter, or a full fine-tune) on its own task."""
    outcome = bench(
        settings, ft.model_ref, task_path(settings, ft.task), adapter=ft.adapter, limit=limit,
        prompt=ft.prompt, use_cache=use_cache, progress=progress, store=store, hardware=hardware,
    )  # fmt: skip
    identity = outcome.identity
    name = identity["model"] + (f" + {identity['adapter']}" if identity["adapter"] else "")
    side = ScoredSide(
        key=outcome.key, kind="self-hosted", model=name,
        model_revision=identity["model_revision"], adapter_revision=identity["adapter_revision"],
        device=outcome.device, dtype=outcome.dtype, hardware=hardware, cached=outcome.cached,
        score=outcome.result.score, stderr=outcome.result.stderr,
    )  # fmt: skip
    return Scored(side, outcome.result)


def score_candidate(
    settings: Settings,
    ft: FineTune,
    candidate: str,
    *,
    api: ApiCandidate | None = None,
    hardware: str = LOCAL,
    limit: int | None = None,
    use_cache: bool = True,
    progress: ProgressSink | None = None,
    store: ResultStore | None = None,
) -> Scored:
    """A candidate (Hub id, folder, or the API candidate ``api``) on the fine-tune's task, with
    the candidates' prompt settings."""
    task_file = task_path(settings, ft.task)
    if api is not None:
        store = store or ResultStore(settings.store.url)
        key, result, cached = api_result(settings, api, task_file, limit, store, use_cache)
        side = ScoredSide(
            key=key, kind="api", model=api.model, endpoint=api.base_url, cached=cached,
            score=result.score, stderr=result.stderr,
        )  # fmt: skip
        return Scored(side, result)
    outcome = bench(
        settings, candidate, task_file, limit=limit, prompt=settings.candidates.prompt,
        use_cache=use_cache, progress=progress, store=store, hardware=hardware,
    )  # fmt: skip
    identity = outcome.identity
    side = ScoredSide(
        key=outcome.key, kind="self-hosted", model=identity["model"],
        model_revision=identity["model_revision"], device=outcome.device, dtype=outcome.dtype,
        hardware=hardware, cached=outcome.cached, score=outcome.result.score,
        stderr=outcome.result.stderr,
    )  # fmt: skip
    return Scored(side, outcome.result)


def api_result(
    settings: Settings,
    candidate: ApiCandidate,
    task_file: str | Path,
    limit: int | None,
    store: ResultStore,
    use_cache: bool = True,
) -> tuple[str, RunResult, bool]:
    """An API candidate's answers on a task: ``(key, result, cached)``, from the result store
    when they are there (the endpoint's model name, URL and prompt settings are in the key)."""
    from benchmarks.api import run_api_task

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
        return key, hit[0], True
    result = run_api_task(
        candidate, task, api_key=api_key(candidate), limit=limit, prompt=settings.candidates.prompt
    )
    store.put(key, identity, result)
    return key, result, False


# ---------------------------------------------------------------------------------- judging


def judge(
    settings: Settings,
    ft: FineTune,
    candidate: str,
    *,
    finetune_side: Scored | None,
    candidate_side: Scored | None,
    api: ApiCandidate | None = None,
    failure: str | None = None,
    deploy: Deployability | None = None,
    task: str | None = None,
    retuned_side: Scored | None = None,
    retune: RetuneRecord | None = None,
    judgement: PairwiseJudgement | None = None,
) -> VerdictReport:
    """The verdict on two scored sides (see :mod:`benchmarks.verdict`). Pure: the same results
    and settings give the same report (the bootstrap is seeded by ``verdict.seed``).

    ``deploy``: the checks made before the benchmark (:func:`check_deployable`); the memory is
    checked again with the request lengths the candidate's run measured, and its latency
    against the target. ``task``: the task's name, shown when no side was scored.
    ``retune``: the re-tune contender's record, and ``retuned_side`` its scores when it was
    scored: the three-way verdict of :mod:`benchmarks.threeway`. ``judgement``: a judged
    task's pairwise judgement, which replaces the sides' own outcomes (win rate minus loss
    rate, :func:`benchmarks.judge.compare_judged`); a failed one makes the verdict
    INCONCLUSIVE with its reason."""
    comparison = cost_ft = cost_cand = None
    if deploy is not None and candidate_side is not None and deploy.benchmarked:
        deploy = final(deploy, deploy_for(settings, ft), candidate_side.result.extra)
    if judgement is not None and judgement.failed and failure is None:
        failure = f"judging failed: {judgement.failed}"
    if finetune_side is not None and candidate_side is not None and failure is None:
        comparison = _paired(settings, finetune_side, candidate_side, judgement)
        cost_ft = _cost(settings, finetune_side, None)
        cost_cand = _cost(settings, candidate_side, api)
    shown = candidate_side.side.model if candidate_side else candidate
    if api is not None:
        shown = api.name
    report = decide(
        finetune=ft.name,
        candidate=shown,
        task=finetune_side.result.task if finetune_side else task or ft.task,
        metric=finetune_side.result.metric if finetune_side else "",
        economics=ft.economics,
        rules=settings.verdict,
        comparison=comparison,
        cost_finetune=cost_ft,
        cost_candidate=cost_cand,
        open_weights=api.open_weights if api is not None else True,
        failure=failure,
        deploy=deploy,
    )
    details = {
        "finetune": _details(finetune_side),
        "candidate": _details(candidate_side),
    }
    report = replace(report, details={**report.details, **details})
    if judgement is not None:
        report = with_judgement(report, judgement)
    if retune is None or report.verdict is Verdict.INCONCLUSIVE:
        return report
    if retuned_side is None or finetune_side is None or candidate_side is None:
        return with_retune(report, retune, economics=ft.economics, rules=settings.verdict)
    report = replace(report, details={**report.details, "retuned": _details(retuned_side)})
    return with_retune(
        report, retune, economics=ft.economics, rules=settings.verdict,
        vs_finetune=_paired(settings, finetune_side, retuned_side),
        vs_candidate=_paired(settings, candidate_side, retuned_side),
        cost_finetune=cost_ft, cost_retuned=_cost(settings, retuned_side, None),
    )  # fmt: skip


def _paired(
    settings: Settings,
    first: Scored,
    second: Scored,
    judgement: PairwiseJudgement | None = None,
) -> PairedComparison:
    """``second`` minus ``first``, example by example: their metric, or the judge's verdicts
    (+1 ``second`` better, -1 worse, 0 tie)."""
    rules = settings.verdict
    if judgement is not None:
        return compare_judged(judgement.outcomes, margin=rules.margin, confidence=rules.confidence,
                              resamples=rules.bootstrap_resamples, seed=rules.seed)  # fmt: skip
    return compare_paired(
        first.result.outcomes,
        second.result.outcomes,
        margin=settings.verdict.margin,
        confidence=settings.verdict.confidence,
        resamples=settings.verdict.bootstrap_resamples,
        seed=settings.verdict.seed,
    )


def with_judgement(report: VerdictReport, judgement: PairwiseJudgement) -> VerdictReport:
    """``report`` with how its pair was judged; a failed judgement says so in its reason."""
    figures = JudgedFigures(
        judge=judgement.judge, wins=judgement.wins, ties=judgement.ties, losses=judgement.losses,
        identical=judgement.identical, disagreements=judgement.disagreements,
        position_bias=judgement.position_bias, unparsed=judgement.unparsed,
        calls=judgement.calls, cached_calls=judgement.cached_calls,
        input_tokens=judgement.input_tokens, output_tokens=judgement.output_tokens,
        cost_usd=judgement.cost_usd, failed=judgement.failed,
    )  # fmt: skip
    warnings = tuple(w for w in judgement.warnings if w not in report.warnings)
    report = replace(report, judged=figures, warnings=report.warnings + warnings)
    if judgement.failed:
        why = f"judging failed: {judgement.failed}"
        report = replace(report, reason=why, summary=f"No verdict for {report.candidate}: {why}. "
                         "The fine-tune stays as it is.")  # fmt: skip
    return report


def judged(
    settings: Settings, ft: FineTune, finetune_side: Scored, candidate_side: Scored
) -> PairwiseJudgement | None:
    """A judged task's pairwise judgement of the two sides' answers (None: the task's metric
    needs no judge); made where the pair was scored, and recorded with it."""
    if candidate_side.result.metric != "judge":
        return None  # read from the result: no task file is read again for the other pairs
    task = load_task(task_path(settings, ft.task))
    return judge_answers(
        settings, ft, task,
        [str(p) for p in finetune_side.result.predictions],
        [str(p) for p in candidate_side.result.predictions],
        candidate_model=candidate_side.side.model, finetune_model=finetune_side.side.model,
    )  # fmt: skip


def _cost(settings: Settings, scored: Scored, api: ApiCandidate | None) -> cost.ServingCost:
    if scored.side.kind == "api":
        if api is None:
            raise FatalError(f"{scored.side.model}: the API candidate's prices are not configured")
        return cost.api(scored.result, api)
    where = f"{scored.side.device or 'cpu'} ({scored.side.dtype})"
    queue = settings.workers.gpu_queues.get(scored.side.hardware or "")
    price = settings.serving.gpu_hour_usd
    if queue is not None and queue.usd_per_hour is not None:
        price, where = queue.usd_per_hour, f"{where} on {scored.side.hardware}"
    return cost.self_hosted(scored.result, price, where)


def _details(scored: Scored | None) -> dict[str, object] | None:
    if scored is None:
        return None
    extra = {k: v for k, v in scored.result.extra.items() if k != "cost_usd"}
    return {**extra, **scored.side.model_dump(), "scored_on": scored.side.scored_on}


def judge_stored(
    settings: Settings,
    ft: FineTune,
    pair: PairScores,
    store: ResultStore,
    *,
    api: ApiCandidate | None = None,
) -> VerdictReport:
    """Judge a pair a benchmark job recorded, reading both results from the store by key.

    Raises :class:`MissingResult` when either result is gone. Both sides must have been scored
    on the same hardware class, so their serving costs compare like with like.
    """
    if pair.candidate is None:  # blocked before its benchmark
        return judge(
            settings, ft, pair.candidate_name or "?", finetune_side=None, candidate_side=None,
            api=api, deploy=pair.deploy, task=pair.task,
        )  # fmt: skip
    if pair.finetune is None:
        raise MissingResult(f"its benchmark job recorded no fine-tune result on {pair.task}")
    ft_side, cand_side = (_stored(store, pair, r) for r in (pair.finetune, pair.candidate))
    retuned = _stored(store, pair, pair.retuned) if pair.retuned is not None else None
    same = (ft_side.side.hardware, ft_side.side.dtype) == (
        cand_side.side.hardware,
        cand_side.side.dtype,
    )
    if cand_side.side.kind == "self-hosted" and not same:
        raise FatalError(
            f"{ft.name}: the fine-tune was scored on {ft_side.side.scored_on} and the candidate "
            f"on {cand_side.side.scored_on}; their costs do not compare"
        )
    return judge(
        settings, ft, cand_side.side.model, finetune_side=ft_side, candidate_side=cand_side,
        api=api, deploy=pair.deploy, retuned_side=retuned, retune=pair.retune,
        judgement=pair.judge,
    )  # fmt: skip


def _stored(store: ResultStore, pair: PairScores, record: ScoredSide) -> Scored:
    hit = store.get(record.key)
    if hit is None:
        raise MissingResult(
            f"the stored result of {record.model} on {pair.task} ({record.key[:12]}) is gone"
        )
    return Scored(record, hit[0])


def compare(
    settings: Settings,
    finetune_name: str,
    candidate: str,
    *,
    limit: int | None = None,
    use_cache: bool = True,
    progress: ProgressSink | None = None,
    api: ApiCandidate | None = None,
    hardware: str = LOCAL,
) -> VerdictReport:
    """Score both sides on the fine-tune's task, here, and judge them.

    ``candidate`` is a Hub id, a folder or the name of a configured API candidate; ``api`` gives
    an API candidate that is not in the config (one a vendor feed announced).
    """
    ft = finetune(settings, finetune_name)
    store = ResultStore(settings.store.url)
    api = api or api_candidate(settings, candidate)
    ft_side = cand_side = None
    failure = None
    try:
        deploy = check_deployable(settings, ft, candidate, api=api)
    except FatalError as exc:
        deploy = None
        failure = f"{candidate} could not be checked: {exc}"
    if deploy is not None and not deploy.benchmarked:
        return judge(
            settings, ft, candidate, finetune_side=None, candidate_side=None, api=api,
            deploy=deploy, task=load_task(task_path(settings, ft.task)).name,
        )  # fmt: skip
    try:
        if failure is None:
            ft_side = score_finetune(
                settings, ft, hardware=hardware, limit=limit, use_cache=use_cache,
                progress=progress, store=store,
            )  # fmt: skip
    except FatalError as exc:
        failure = f"the fine-tune {ft.name} could not be scored: {exc}"
    if failure is None:
        try:
            cand_side = score_candidate(
                settings, ft, candidate, api=api, hardware=hardware, limit=limit,
                use_cache=use_cache, progress=progress, store=store,
            )  # fmt: skip
        except FatalError as exc:
            failure = f"{candidate} could not be scored: {exc}"
    judgement = None
    if ft_side is not None and cand_side is not None:
        judgement = judged(settings, ft, ft_side, cand_side)
    return judge(
        settings, ft, candidate, finetune_side=ft_side, candidate_side=cand_side, api=api,
        failure=failure, deploy=deploy, judgement=judgement,
    )  # fmt: skip
