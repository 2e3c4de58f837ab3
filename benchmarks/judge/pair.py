"""A judged task's judge, and a scored pair judged from both sides' answers.

A task whose primary metric is ``judge`` names its judge in a ``judge:`` section (Supersede's
extension of the lm-eval format); a fine-tune's ``judge:`` overrides any of its keys. The judge
is an ``api_candidates`` entry (``api``: endpoint, key variable, prices in one place) or a Hub
model or folder run by the engine (``model``). The pair is judged where it was scored (the
benchmark job), and the judgement is recorded with the pair, so the verdict job judges nothing
itself and reads stored results only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from benchmarks.judge.cache import JudgeCache
from benchmarks.judge.judges import ApiJudge, Judge, open_judge
from benchmarks.judge.pairwise import judge_pairwise
from benchmarks.judge.records import PairwiseJudgement, ReferenceJudgement
from benchmarks.judge.reference import judge_reference
from benchmarks.judge.spec import JudgeSpec
from benchmarks.tasks.render import Request
from benchmarks.tasks.task import Task
from config.settings import FineTune, Settings
from core.errors import ConfigError, SupersedeError

#: Where the judge's settings may be written, for messages.
_WHERE = "the task file's judge: section or the fine-tune's judge:"


def spec_for(settings: Settings, ft: FineTune, task: Task) -> JudgeSpec | None:
    """The judge of ``ft`` on ``task``; None when the task's primary metric is not ``judge``.
    A :class:`ConfigError` names what is missing (a rubric, a judge) or unknown."""
    if task.metric.name != "judge":
        return None
    merged = {**dict(task.config.get("judge") or {}), **ft.judge.model_dump(exclude_none=True)}
    return spec_from(settings, merged, task, who=ft.name)


def spec_from(
    settings: Settings, section: Mapping[str, Any], task: Task, *, who: str, mode: str | None = None
) -> JudgeSpec:
    """The judge a ``judge:`` section describes (``mode`` replaces its mode when given)."""
    rubric = str(section.get("rubric") or "").strip()
    if not rubric:
        raise ConfigError(f"{task.path}: metric judge needs a rubric ({_WHERE})")
    common = {
        "rubric": rubric,
        "mode": mode or section.get("mode", "pairwise"),
        **{k: section[k] for k in ("max_new_tokens", "max_failures") if k in section},
    }
    if section.get("api"):
        name = str(section["api"])
        entry = next((a for a in settings.api_candidates if a.name == name), None)
        if entry is None:
            known = ", ".join(a.name for a in settings.api_candidates) or "none"
            raise ConfigError(
                f"{who}: judge.api {name!r} is not an api_candidates entry (configured: "
                f"{known}); add the judge's endpoint there"
            )
        return JudgeSpec(kind="api", model=entry.model, api=entry, **common)
    if section.get("model"):
        return JudgeSpec(kind="local", model=str(section["model"]), **common)
    raise ConfigError(
        f"{task.path}: metric judge needs a judge: api (an api_candidates entry) or model (a "
        f"Hub id or folder) in {_WHERE}"
    )


def judge_scores(
    settings: Settings, task: Task, answers: Sequence[str]
) -> ReferenceJudgement | None:
    """One model's answers to a judged task scored 1-5 against the references, by the task
    file's judge (``supersede bench``: one model has no pair, so the judge scores each answer
    whatever the section's mode). None when the task's metric needs no judge."""
    if task.metric.name != "judge":
        return None
    spec = spec_from(settings, dict(task.config.get("judge") or {}), task, who=task.name,
                     mode="reference")  # fmt: skip
    requests = task.requests(limit=len(answers))
    references = [r.gold if isinstance(r.gold, str) else str(r.gold) for r in requests]
    with _opened(spec, settings) as judge:
        return judge_reference(
            [prompt_of(r) for r in requests], list(answers), [ref.strip() for ref in references],
            spec, judge, JudgeCache(settings.store.url), max_workers=_workers(spec),
        )  # fmt: skip


@contextmanager
def _opened(spec: JudgeSpec, settings: Settings) -> Iterator[Judge]:
    """The judge ``spec`` names, closed after use; a :class:`ConfigError` when it cannot be
    opened (its key variable unset, its model refused or missing)."""
    try:
        judge = open_judge(spec, settings)
    except SupersedeError as exc:
        raise ConfigError(f"the judge {spec.model} could not be opened: {exc}") from None
    try:
        yield judge
    finally:
        if isinstance(judge, ApiJudge):
            judge.close()


def _workers(spec: JudgeSpec) -> int:
    """Questions asked at once: the endpoint's concurrency, one at a time for a local model."""
    return spec.api.max_concurrency if spec.api is not None else 1


def prompt_of(request: Request) -> str:
    """What the judge is shown as the task's prompt: the description and the document's
    question (the few-shot examples the models saw are left out)."""
    if request.question:
        return "\n\n".join(p for p in (request.description.strip(), request.question) if p)
    return request.context


def failed(spec: JudgeSpec, n: int, reason: str) -> PairwiseJudgement:
    """A judgement that could not be made: every example a tie, and why."""
    return PairwiseJudgement(
        judge=spec.model, fingerprint=spec.fingerprint(), n=n, outcomes=(0,) * n, wins=0,
        ties=n, losses=0, identical=0, disagreements=0, position_bias=0.0, unparsed=n,
        calls=0, cached_calls=0, reasks=0, input_tokens=0, output_tokens=0, cost_usd=0.0,
        failed=reason,
    )  # fmt: skip


def judge_answers(
    settings: Settings,
    ft: FineTune,
    task: Task,
    finetune_answers: Sequence[str],
    candidate_answers: Sequence[str],
    *,
    candidate_model: str,
    finetune_model: str,
) -> PairwiseJudgement | None:
    """The pairwise judgement of two sides' answers to ``task``'s first documents (None: not a
    judged task). Answers are cached in the store, so judging the same pair again asks nothing;
    a judge that cannot be opened or reached gives a failed judgement, never an exception."""
    spec = spec_for(settings, ft, task)
    if spec is None:
        return None
    n = len(candidate_answers)
    if spec.mode != "pairwise":
        return failed(spec, n, "the judge's mode is reference: it scores one model (`supersede "
                      "bench`); a comparison needs mode pairwise")  # fmt: skip
    prompts = [prompt_of(r) for r in task.requests(limit=n)]
    try:
        with _opened(spec, settings) as judge:
            return judge_pairwise(
                prompts, list(finetune_answers), list(candidate_answers), spec, judge,
                JudgeCache(settings.store.url), candidate_model=candidate_model,
                finetune_model=finetune_model, max_workers=_workers(spec),
            )  # fmt: skip
    except ConfigError as exc:
        return failed(spec, n, str(exc))
