"""A static HTML report of the store's jobs: verdicts per fine-tune, with figures, and every job.

``build_report(settings, out_dir)`` writes ``out_dir/index.html`` and ``out_dir/figures/*.png``.
The page is self-contained (inline style, no external CSS, scripts or fonts), so the folder can
be copied anywhere or served as is. Everything read from the store is treated as untrusted
(:mod:`supersede.report.data`): the template escapes every value, links are kept only when they
are plain ``http(s)`` URLs, and text drawn into the figures is never parsed as math
(:mod:`supersede.report.figures`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from config.settings import Settings
from core.clock import now
from core.errors import FatalError
from supersede.report import formatting as fmt
from supersede.report.data import STATES, VERDICTS, ReportedVerdict, reported_verdict, sections
from supersede.report.figures import VERDICT_COLOURS, draw_section

if TYPE_CHECKING:
    from workers.jobs import Job

#: How many of the newest jobs the report reads by default.
DEFAULT_MAX_JOBS = 10_000


def build_report(settings: Settings, out_dir: Path, *, max_jobs: int = DEFAULT_MAX_JOBS) -> Path:
    """Write the report of ``settings.store`` into ``out_dir``; return the path of its page.

    Reads the newest ``max_jobs`` jobs. Writes ``out_dir/index.html`` and one history figure and
    one quality-versus-cost figure per fine-tune with scored verdicts under ``out_dir/figures``.
    Raises :class:`core.errors.ConfigError` when the store cannot be opened and
    :class:`core.errors.FatalError` when ``out_dir`` cannot be written.
    """
    from workers.jobs import JobStore

    jobs = JobStore(settings.store.url).list(limit=max_jobs)
    out_dir = Path(out_dir)
    try:
        return _write(settings, jobs, out_dir, max_jobs)
    except OSError as exc:
        raise FatalError(f"cannot write the report in {out_dir}: {exc.strerror or exc}") from None


def _write(settings: Settings, jobs: Sequence[Job], out_dir: Path, max_jobs: int) -> Path:
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)

    read = {job.key: reported_verdict(job) for job in jobs}
    verdicts = sorted((v for v in read.values() if v is not None), key=lambda v: (v.when, v.key))
    found = sections(verdicts, [ft.name for ft in settings.finetunes])
    for section in found:
        draw_section(section, figures_dir)

    verdict_counts = Counter(v.label for v in verdicts)
    state_counts = Counter(str(job.state) for job in jobs)
    context = {
        "generated_at": fmt.when(now()),
        "verdict_counts": [(kind, kind.lower(), verdict_counts.get(kind, 0)) for kind in VERDICTS]
        + [
            (kind, "other", n) for kind, n in sorted(verdict_counts.items()) if kind not in VERDICTS
        ],
        "state_counts": [(state, state_counts.get(state, 0)) for state in STATES]
        + [(state, n) for state, n in sorted(state_counts.items()) if state not in STATES],
        "total_jobs": len(jobs),
        "truncated": len(jobs) >= max_jobs,
        "max_jobs": max_jobs,
        "sections": found,
        "verdicts": list(reversed(verdicts)),
        "jobs": [_job_row(job, read[job.key]) for job in jobs],
        "figure_count": sum(len(s.figures) for s in found),
        "colours": VERDICT_COLOURS,
        "fmt": fmt.FORMATTERS,
    }
    page = _environment().get_template("report.html.j2").render(context)
    index = out_dir / "index.html"
    partial = out_dir / ".index.html.tmp"
    partial.write_text(page, encoding="utf-8")
    partial.replace(index)
    return index


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("supersede.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _job_row(job: Job, verdict: ReportedVerdict | None) -> dict[str, Any]:
    took = None
    if job.started_at and job.finished_at:
        took = max((job.finished_at - job.started_at).total_seconds(), 0.0)
    return {
        "key": job.key[:12],
        "kind": job.kind,
        "candidate": fmt.short_shas(job.candidate),
        "full_candidate": job.candidate,
        "finetune": job.finetune or "",
        "queue": job.queue,
        "state": job.state,
        "state_class": job.state if job.state in STATES else "other",
        "attempts": job.attempts,
        "reason": job.reason or "",
        "verdict": verdict.label if verdict is not None else "",
        "queued": fmt.moment(job.queued_at),
        "started": fmt.moment(job.started_at),
        "finished": fmt.moment(job.finished_at),
        "took": fmt.duration(took),
    }
