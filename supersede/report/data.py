"""What the report reads from the store: each verdict job's :class:`VerdictReport`, grouped by
fine-tune, and one row per job.

Everything read from the store is untrusted. A recorded verdict is read as the model it was
written as (:meth:`workers.records.Job.verdict`); one that does not validate whole (damaged, or
written by a version with other fields) is salvaged field by field, so one bad row costs its
own cells, never the page. Numbers that are not finite are shown as missing.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError

from benchmarks.verdict import Verdict, VerdictReport
from core.constants import JobKind, JobState
from workers.notify import words

if TYPE_CHECKING:
    from workers.jobs import Job

#: Verdict kinds in the order the summary lists them.
VERDICTS = tuple(str(kind) for kind in Verdict)
#: Job states in the order of their life cycle.
STATES = tuple(str(state) for state in JobState)
#: A value of one of these types is a number only when it is a real int or float.
_NUMBERS = (int, float, int | None, float | None)
#: The report's optional numbers, blanked when not finite.
_OPTIONAL_FLOATS = tuple(
    name for name, hint in typing.get_type_hints(VerdictReport).items() if hint == float | None
)


@dataclass(frozen=True)
class ReportFigure:
    """A written figure: its path relative to the page, and what it shows, in words."""

    src: str
    alt: str
    caption: str


@dataclass(frozen=True)
class ReportedVerdict:
    """A verdict job's :class:`VerdictReport` with what the page adds to it."""

    key: str
    #: When the verdict was made (the job's end).
    when: datetime
    #: The candidate's Hub page or vendor post, when it is a plain http(s) URL.
    link: str | None
    #: The verdict as recorded: a kind this version does not know is shown as written.
    label: str
    report: VerdictReport

    @property
    def verdict_class(self) -> str:
        """CSS class suffix: the verdict in lower case, ``other`` for an unknown one."""
        return self.label.lower() if self.label in VERDICTS else "other"

    @property
    def scored(self) -> bool:
        """Both sides have a score (a failed side leaves them empty)."""
        return self.report.score_finetune is not None and self.report.score_candidate is not None

    @property
    def switching(self) -> str | None:
        """What switching is worth: payback, monthly net, net over the horizon (in words)."""
        return words.switching(self.report)

    @property
    def deployment(self) -> str | None:
        """The deploy checks' figures: licence, serving memory, p95 latency (in words)."""
        return words.deployment(self.report)

    @property
    def retuned(self) -> str | None:
        """The re-tune contender: score, both intervals, training (in words)."""
        return words.retune(self.report)

    @property
    def judged(self) -> str | None:
        """A judged task's judging: wins, ties, losses, position bias, calls, cost (in words)."""
        return words.judged(self.report)

    @property
    def stderr_finetune(self) -> float | None:
        """The fine-tune's standard error, from the verdict's details."""
        return _side(self.report.details, "finetune")

    @property
    def stderr_candidate(self) -> float | None:
        """The candidate's standard error, from the verdict's details."""
        return _side(self.report.details, "candidate")


@dataclass
class FinetuneSection:
    """What the page shows of one fine-tune."""

    name: str
    anchor: str
    verdicts: list[ReportedVerdict] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    note: str | None = None

    @property
    def latest(self) -> ReportedVerdict | None:
        """The most recent verdict, if any."""
        return self.verdicts[-1] if self.verdicts else None

    @property
    def counts(self) -> dict[str, int]:
        """Verdicts of this fine-tune by kind."""
        return dict(Counter(v.label for v in self.verdicts))


def finite(value: Any) -> float | None:
    """A finite float, or None (booleans, strings, NaN and infinities are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def safe_link(value: Any) -> str | None:
    """``value`` when it is an absolute http(s) URL; anything else (``javascript:``...) is None."""
    if not isinstance(value, str) or any(ch in value for ch in "\r\n\t\x00"):
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    return value.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def _side(details: Mapping[str, Any], side: str) -> float | None:
    part = details.get(side)
    return finite(part.get("stderr")) if isinstance(part, dict) else None


@functools.cache
def _field_adapter(hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(hint)


def _empty(spec: dataclasses.Field[Any], hint: Any) -> Any:
    """A field's value when what was recorded for it cannot be read."""
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    if type(None) in typing.get_args(hint):
        return None
    return {Verdict: Verdict.INCONCLUSIVE, str: "", int: 0, float: math.nan}[hint]


def salvaged(raw: Mapping[str, Any]) -> VerdictReport:
    """What can be read of a recorded verdict that does not validate whole: each field that
    validates on its own is kept, the others are left empty."""
    hints = typing.get_type_hints(VerdictReport)
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(VerdictReport):
        hint, value = hints[spec.name], raw.get(spec.name)
        try:
            if hint in _NUMBERS and isinstance(value, bool | str):
                raise ValueError("not a number")  # validation would coerce "0.9" and True
            values[spec.name] = _field_adapter(hint).validate_python(value)
        except ValueError:
            values[spec.name] = _empty(spec, hint)
    return VerdictReport(**values)


def _candidate_page(job: Job) -> str | None:
    try:
        event = job.event()
    except ValidationError:
        # A payload this version cannot read as an event: its link alone is still worth showing.
        raw = job.payload.get("event")
        return safe_link(raw.get("link")) if isinstance(raw, dict) else None
    return safe_link(event.link) if event is not None else None


def reported_verdict(job: Job) -> ReportedVerdict | None:
    """The verdict of a finished verdict job; None for other jobs and verdicts not yet made."""
    raw = job.result
    if job.kind != JobKind.VERDICT or not isinstance(raw, dict) or "verdict" not in raw:
        return None
    try:
        report = job.verdict()
    except ValidationError:
        report = None
    if report is None:
        report = salvaged(raw)
    blanks: dict[str, Any] = {
        name: None for name in _OPTIONAL_FLOATS if finite(getattr(report, name)) is None
    }
    report = dataclasses.replace(
        report,
        finetune=job.finetune or report.finetune or "?",
        candidate=report.candidate or job.candidate,
        metric=report.metric or "score",
        **blanks,
    )
    return ReportedVerdict(
        key=job.key,
        when=job.finished_at or job.created_at,
        link=_candidate_page(job),
        label=str(raw["verdict"]),
        report=report,
    )


def _anchor(name: str, taken: set[str]) -> str:
    """A unique, id-safe slug of ``name`` (also used to name its figures)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "finetune"
    anchor, n = slug[:64], 2
    while anchor in taken:
        anchor, n = f"{slug[:60]}-{n}", n + 1
    taken.add(anchor)
    return anchor


def sections(
    verdicts: Sequence[ReportedVerdict], configured: Iterable[str]
) -> list[FinetuneSection]:
    """One section per fine-tune that has verdicts or is configured, by name."""
    names = sorted({v.report.finetune for v in verdicts} | set(configured))
    taken: set[str] = set()
    found = {name: FinetuneSection(name=name, anchor=_anchor(name, taken)) for name in names}
    for verdict in verdicts:
        found[verdict.report.finetune].verdicts.append(verdict)
    return [found[name] for name in names]
