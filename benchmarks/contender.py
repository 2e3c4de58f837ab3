"""The re-tune contender of one comparison: whether to train it, training it, scoring it.

After the plain comparison (fine-tune vs candidate with plain prompting), the deployed adapter's
recipe may be trained on the candidate as a new base (:mod:`benchmarks.retune`) and scored on
the fine-tune's task with the fine-tune's own prompt, on the same hardware as the two other
sides. :func:`retune_reason_not_to` applies ``retune.when``; :func:`score_retuned` does the
rest and always returns a :class:`~benchmarks.sides.RetuneRecord`: a contender that cannot be
built (no training data, leakage, over budget, a module with no counterpart, a failed run) is
recorded with the reason and the verdict stays two-way. Only a temporary failure is raised.
"""

from __future__ import annotations

import logging
from pathlib import Path

from benchmarks.bench import LOCAL, ProgressSink, bench
from benchmarks.cache import ResultStore
from benchmarks.compare import (
    Scored,
    check_deployable,
    judge,
    score_candidate,
    score_finetune,
)
from benchmarks.sides import RetuneRecord, ScoredSide
from benchmarks.verdict import Verdict, VerdictReport
from config.settings import (
    FineTune,
    FineTuneRetune,
    Settings,
    finetune,
    retune_for,
    task_path,
)
from core.errors import ConfigError, FatalError

log = logging.getLogger(__name__)

#: Loss points kept in the record (evenly spread over the steps).
MAX_LOSS_POINTS = 50


def retune_reason_not_to(
    ft: FineTune, settings: FineTuneRetune, plain: VerdictReport
) -> str | None:
    """Why the re-tune contender is not trained after the plain verdict ``plain``; None to
    train it.

    Never for a full fine-tune (there is no adapter recipe), an API candidate (no weights), a
    candidate that was blocked (the re-tuned model has the candidate's licence and size) or a
    plain comparison that failed. ``retune.when``: ``never``; ``always``; ``at_risk`` trains
    when the plain verdict is ``AT_RISK``, ``SUPERSEDED`` or ``NEEDS_REVIEW`` (re-tuning may
    widen the lead), or ``HOLDS`` with the candidate behind by less than
    ``retune.holds_within``.
    """
    if ft.adapter is None:
        return "a full fine-tune has no adapter recipe to train on the new base"
    if settings.when == "never":
        return "retune.when is never"
    if plain.verdict is Verdict.BLOCKED:
        return "the candidate is blocked, and a re-tune on it would be too"
    if plain.verdict is Verdict.INCONCLUSIVE or plain.delta is None:
        return "the plain comparison gave no verdict"
    if settings.when == "always":
        return None
    if plain.verdict is Verdict.HOLDS and plain.delta < -settings.holds_within:
        return (
            f"the plain candidate is {-plain.delta * 100:.1f} points behind, more than "
            f"retune.holds_within ({settings.holds_within * 100:.1f} points)"
        )
    return None


def usd_per_hour(settings: Settings, hardware: str) -> float:
    """What one hour of ``hardware`` (a GPU queue, or ``local``) costs."""
    queue = settings.workers.gpu_queues.get(hardware)
    if queue is not None and queue.usd_per_hour is not None:
        return queue.usd_per_hour
    return settings.serving.gpu_hour_usd


def score_retuned(
    settings: Settings,
    ft: FineTune,
    candidate: str,
    *,
    hardware: str = LOCAL,
    limit: int | None = None,
    use_cache: bool = True,
    progress: ProgressSink | None = None,
    store: ResultStore | None = None,
) -> tuple[Scored | None, RetuneRecord]:
    """Train the fine-tune's adapter recipe on ``candidate`` (or reuse the adapter trained
    before with the same inputs) and score it on the fine-tune's task with its own prompt."""
    from benchmarks.models import ModelResolver, pick_device, pick_dtype
    from benchmarks.retune import RetuneRefused, RetuneSkipped, plan_retune, train_retune
    from benchmarks.tasks.task import load_task

    assert ft.adapter is not None
    rt = retune_for(settings, ft)
    price = usd_per_hour(settings, hardware)
    token = settings.secrets.hf_token
    resolver = ModelResolver(settings.hub, token.get_secret_value() if token else None)
    config_dir = settings.source_file.parent if settings.source_file else None
    try:
        task = load_task(task_path(settings, ft.task))
        base = resolver.resolve(candidate, "model")
        adapter = resolver.resolve(ft.adapter, "adapter")
        plan = plan_retune(task, base, adapter.local_dir, rt, config_dir)
        device = pick_device(settings.runtime)
        # On a CPU the adapter trains in float32 whatever the scoring dtype: CPUs have no fast
        # half-precision training, and its rounding would change the weights trained.
        dtype = "float32" if device == "cpu" else pick_dtype(settings.runtime, device)
        trained = train_retune(plan, Path(rt.store_dir), device, dtype)
    except RetuneSkipped as exc:
        return None, RetuneRecord(status="skipped", reason=str(exc), usd_per_hour=price)
    except RetuneRefused as exc:
        return None, RetuneRecord(status="refused", reason=str(exc), usd_per_hour=price)
    except FatalError as exc:
        log.warning("%s: the re-tune on %s failed: %s", ft.name, candidate, exc)
        return None, RetuneRecord(status="failed", reason=str(exc), usd_per_hour=price)
    losses = trained.losses
    if len(losses) > MAX_LOSS_POINTS:
        step = len(losses) / MAX_LOSS_POINTS
        losses = tuple(losses[int(i * step)] for i in range(MAX_LOSS_POINTS))
    record = RetuneRecord(
        status="cached" if trained.cached else "trained", key=trained.key,
        adapter_dir=str(trained.adapter_dir), steps=trained.steps, wall_s=trained.wall_s,
        tokens=trained.tokens, estimate_gpu_hours=trained.estimate_gpu_hours,
        losses=tuple(round(x, 5) for x in losses), usd_per_hour=price,
    )  # fmt: skip
    try:
        outcome = bench(
            settings, candidate, task.path, adapter=str(trained.adapter_dir), limit=limit,
            prompt=ft.prompt, use_cache=use_cache, progress=progress, store=store,
            hardware=hardware,
        )  # fmt: skip
    except FatalError as exc:
        failed = record.model_copy(update={"status": "failed", "reason": f"scoring: {exc}"})
        return None, failed
    identity = outcome.identity
    side = ScoredSide(
        key=outcome.key, kind="self-hosted", model=f"{identity['model']} + re-tuned adapter",
        model_revision=identity["model_revision"], adapter_revision=identity["adapter_revision"],
        device=outcome.device, dtype=outcome.dtype, hardware=hardware, cached=outcome.cached,
        score=outcome.result.score, stderr=outcome.result.stderr,
    )  # fmt: skip
    return Scored(side, outcome.result), record


def compare_three_ways(
    settings: Settings,
    finetune_name: str,
    candidate: str,
    *,
    limit: int | None = None,
    use_cache: bool = True,
    progress: ProgressSink | None = None,
) -> VerdictReport:
    """``supersede retune``: the fine-tune, ``candidate`` as is and the fine-tune's recipe
    re-tuned on ``candidate``, scored here and judged three ways. The re-tune is trained
    whatever the plain verdict (unless the candidate is blocked or a side failed)."""
    ft = finetune(settings, finetune_name)
    if ft.adapter is None:
        raise ConfigError(
            f"finetune {ft.name!r} is a full fine-tune: there is no adapter recipe to re-tune"
        )
    store = ResultStore(settings.store.url)
    deploy = check_deployable(settings, ft, candidate)
    ft_side = cand_side = None
    if deploy.benchmarked:
        ft_side = score_finetune(
            settings, ft, limit=limit, use_cache=use_cache, progress=progress, store=store
        )
        cand_side = score_candidate(
            settings, ft, candidate, limit=limit, use_cache=use_cache, progress=progress,
            store=store,
        )  # fmt: skip

    def judged(retuned: Scored | None = None, record: RetuneRecord | None = None) -> VerdictReport:
        return judge(
            settings, ft, candidate, finetune_side=ft_side, candidate_side=cand_side,
            deploy=deploy, retuned_side=retuned, retune=record,
        )  # fmt: skip

    wanted = retune_for(settings, ft).model_copy(update={"when": "always"})
    why = retune_reason_not_to(ft, wanted, judged())
    if why is not None:
        return judged(record=RetuneRecord(status="not_run", reason=why))
    retuned, record = score_retuned(
        settings, ft, candidate, limit=limit, use_cache=use_cache, progress=progress, store=store
    )
    return judged(retuned, record)
