"""``supersede report``: the HTML page, its figures, a real headless browser, and the command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.errors import FatalError
from supersede.report import figures
from supersede.report.build import build_report
from tests.support import verdicts
from tests.support.cli import supersede
from tests.support.settings import build_settings, write_settings
from workers.jobs import JobStore

#: Where tests leave what a person may want to look at after a run (the report's screenshot).
ARTIFACTS = Path(
    os.environ.get(
        "SUPERSEDE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / ".test-artifacts"
    )
)
HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
SECTION_IDS = ("summary", "finetune-review-sentiment", "finetune-ticket-router", "verdicts", "jobs")
TITLES = ("Summary", "Fine-tune review-sentiment", "Fine-tune ticket-router", "Verdicts", "Jobs")
FAILURE = "candidate weights refused: only pickle files (*.bin), no safetensors"
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _result(
    finetune: str,
    candidate: str,
    verdict: str,
    *,
    ft: float | None,
    cand: float | None,
    cost_ft: float | None = 0.12,
    cost_cand: float | None = 0.05,
    summary: str = "",
) -> dict[str, Any]:
    """A result shaped like ``VerdictReport.to_dict()`` (``compare``'s details included)."""
    scored = ft is not None and cand is not None
    delta = (cand - ft) if ft is not None and cand is not None else None
    return {
        "verdict": verdict,
        "finetune": finetune,
        "candidate": candidate,
        "task": "review_sentiment",
        "metric": "acc",
        "n": 400 if scored else 0,
        "score_finetune": ft,
        "score_candidate": cand,
        "delta": delta,
        "ci_low": delta - 0.03 if delta is not None else None,
        "ci_high": delta + 0.03 if delta is not None else None,
        "p_value": 0.0004 if scored else None,
        "test": "paired bootstrap" if scored else None,
        "confidence": 0.95,
        "margin": 0.02,
        "cost_per_1k_finetune": cost_ft if scored else None,
        "cost_per_1k_candidate": cost_cand if scored else None,
        "monthly_cost_finetune": 1440.0 if scored else None,
        "monthly_cost_candidate": 100.0 if scored else None,
        "monthly_savings_usd": 1340.0 if scored else None,
        "tuning_cost_usd": 18000.0,
        "reason": "a rule",
        "summary": summary or f"{verdict} for {candidate}.",
        "hint": None,
        "warnings": [],
        "cost_basis_finetune": None,
        "cost_basis_candidate": None,
        "details": {
            "finetune": {"model": finetune, "score": ft, "stderr": 0.012} if ft else None,
            "candidate": {"model": candidate, "score": cand, "stderr": 0.015} if cand else None,
        },
    }


def _event(repo_id: str, link: str | None) -> dict[str, Any]:
    return {
        "kind": "model_released",
        "source": "hub",
        "detected_at": T0.isoformat(),
        "repo_id": repo_id,
        "revision": "0" * 40,
        "params": 1_500_000_000,
        "link": link,
    }


def _verdict(
    store: JobStore, n: int, finetune: str, candidate: str, result: dict[str, Any], **kw: Any
) -> None:
    finished = T0 + timedelta(days=n)
    store.add(
        key=f"verdict-{n}", kind="verdict", candidate=candidate, finetune=finetune,
        parent=f"bench-{n}", queue="default", state="notified", attempts=1,
        payload={"event": _event(candidate, kw.get("link"))}, result=result,
        started_at=finished - timedelta(seconds=42), finished_at=finished,
    )  # fmt: skip


def fill_store(url: str) -> None:
    """Two fine-tunes, five verdicts (one hostile name), a failed benchmark, an announcement."""
    store = JobStore(url)
    rs, tr = "review-sentiment", "ticket-router"
    strong = _result(
        rs, "acme/strong-1b", "SUPERSEDED", ft=0.86, cand=0.91,
        summary="Switching to acme/strong-1b saves $1,340/month.",
    )  # fmt: skip
    _verdict(store, 1, rs, "acme/strong-1b", strong, link="https://huggingface.co/acme/strong-1b")
    weak = _result(rs, "acme/weak-0.5b", "HOLDS", ft=0.86, cand=0.71, cost_cand=0.02)
    _verdict(store, 2, rs, "acme/weak-0.5b", weak, link="javascript:alert(2)")
    broken = _result(rs, "acme/broken-7b", "INCONCLUSIVE", ft=None, cand=None)
    _verdict(store, 3, rs, "acme/broken-7b", broken)
    hostile = _result(tr, HOSTILE, "AT_RISK", ft=0.78, cand=0.775, cost_ft=0.4, cost_cand=9.5)
    _verdict(store, 4, tr, HOSTILE, hostile)
    mathy = _result(
        tr, "vendor/api-$x$-model", "HOLDS", ft=0.78, cand=0.7, cost_ft=0.4, cost_cand=0.004
    )
    _verdict(store, 5, tr, "vendor/api-$x$-model", mathy)
    store.add(
        key="bench-failed", kind="benchmark", candidate="acme/pickled-3b", queue="gpu",
        state="failed", attempts=3, reason=FAILURE, payload={"event": _event("acme/pickled-3b",
        None)}, started_at=T0, finished_at=T0 + timedelta(minutes=3),
    )  # fmt: skip
    store.add(
        key="announce-1", kind="announcement", candidate="Acme announces Strong 2", queue="default",
        state="notified", payload={"event": {"kind": "announcement", "title": "Strong 2"}},
        finished_at=T0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{root / 'store.db'}"
    fill_store(url)
    index = build_report(build_settings(root, store={"url": url}), root / "out")
    assert index == root / "out" / "index.html"
    return index.parent


def _figures(html: str) -> list[str]:
    return re.findall(r'<img src="(figures/[^"]+\.png)" alt="([^"]+)"', html)


def test_page_has_every_section_and_figure(report_dir: Path) -> None:
    html = (report_dir / "index.html").read_text(encoding="utf-8")
    for anchor, title in zip(SECTION_IDS, TITLES, strict=True):
        assert f'id="{anchor}"' in html
        assert f"<h2>{title}</h2>" in html
    assert html.count('<section class="finetune"') == 2
    pngs = sorted(p.name for p in (report_dir / "figures").glob("*.png"))
    assert pngs == [
        "review-sentiment-cost.png",
        "review-sentiment-history.png",
        "ticket-router-cost.png",
        "ticket-router-history.png",
    ]
    for png in pngs:
        data = (report_dir / "figures" / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, png
    figures = _figures(html)
    assert sorted(src.removeprefix("figures/") for src, _ in figures) == pngs
    assert all(len(alt) > 60 for _, alt in figures)
    assert 'data-figures="4"' in html
    # No external resources: every src/href is a local figure, an anchor or a candidate's page.
    assert not re.search(r'<link|src="(?!figures/)|href="(?!#|https://huggingface\.co/)', html)


def test_tables_summary_and_escaping(report_dir: Path) -> None:
    html = (report_dir / "index.html").read_text(encoding="utf-8")
    assert html.count('<tr class="verdict-row">') == 5
    assert html.count('<tr class="job-row">') == 7
    assert FAILURE in html and "acme/pickled-3b" in html
    assert '<a href="https://huggingface.co/acme/strong-1b" rel="noopener noreferrer">' in html
    assert "javascript:" not in html  # an unsafe link is dropped, the name kept as text
    assert "Switching to acme/strong-1b saves $1,340/month." in html
    assert "+0.0500" in html and "95% CI +0.0200 to +0.0800" in html and "&lt; 0.001" in html
    summary = html.split('id="summary"')[1].split("</section>")[0]
    counts = {k: n for n, k in re.findall(r'<span class="n">(\d+)</span>(\w+)</li>', summary)}
    assert counts["SUPERSEDED"] == "1" and counts["HOLDS"] == "2"
    assert counts["AT_RISK"] == "1" and counts["INCONCLUSIVE"] == "1"
    assert counts["notified"] == "6" and counts["failed"] == "1" and counts["running"] == "0"
    assert ESCAPED in html
    assert "<script>alert(1)" not in html
    assert html.count("<script>") == 1  # the page's own image check, nothing else


def test_empty_store_gives_a_readable_page_without_images(tmp_path: Path) -> None:
    settings = build_settings(tmp_path, store={"url": f"sqlite:///{tmp_path / 'empty.db'}"})
    html = build_report(settings, tmp_path / "out").read_text(encoding="utf-8")
    assert "No verdicts yet" in html and "No jobs yet" in html
    assert "<img" not in html and 'data-figures="0"' in html
    assert list((tmp_path / "out" / "figures").glob("*.png")) == []


def test_malformed_results_and_hostile_fine_tune_names_are_contained(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    store = JobStore(url)
    odd = '"><img src=x onerror=alert(3)>'
    store.add(
        key="odd-1", kind="verdict", candidate="a", finetune=odd, queue="default", state="done",
        payload={"event": "not a dict"}, finished_at=T0,
        result={"verdict": "SUPERSEDED", "score_finetune": "0.9", "details": "?", "n": True},
    )  # fmt: skip
    store.add(
        key="odd-2", kind="verdict", candidate="b", finetune=odd, queue="default", state="done",
        payload={"event": {"link": 'https://x.test/"onmouseover="alert(4)'}},
        result={"verdict": "NEW_KIND", "score_finetune": 0.5, "score_candidate": 0.6,
                "cost_per_1k_candidate": 0.0, "cost_per_1k_finetune": float("nan")},
        finished_at=T0 + timedelta(hours=1),
    )  # fmt: skip
    store.add(key="odd-3", kind="verdict", candidate="c", finetune=odd, queue="default",
              state="waiting", payload={})  # fmt: skip
    out = tmp_path / "out"
    settings = build_settings(tmp_path, store={"url": url})
    html = build_report(settings, out).read_text(encoding="utf-8")
    assert html.count('<tr class="verdict-row">') == 2  # the waiting job has no verdict yet
    assert 'id="finetune-img-src-x-onerror-alert-3"' in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(3)&gt;" in html
    assert 'href="https://x.test/&#34;onmouseover=&#34;alert(4)"' in html
    assert "NEW_KIND" in html and "verdict-other" in html
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == [
        "img-src-x-onerror-alert-3-cost.png",
        "img-src-x-onerror-alert-3-history.png",
    ]


def test_blocked_review_and_payback_verdicts(tmp_path: Path) -> None:
    """A candidate blocked before its benchmark (no scores), one that needs a review and one
    whose switch pays back: each listed with its money and deploy figures and its colour; only
    the scored ones drawn."""
    url = f"sqlite:///{tmp_path / 'deploy.db'}"
    store = JobStore(url)
    made = [
        ("support-triage", verdicts.blocked_unbenchmarked()),
        ("support-triage", verdicts.needs_review()),
        ("support-triage", verdicts.superseded()),
        ("only-blocked", verdicts.blocked_unbenchmarked()),
    ]
    for n, (finetune, report) in enumerate(made, start=1):
        _verdict(store, n, finetune, report.candidate, report.to_dict())
    out = tmp_path / "out"
    html = build_report(build_settings(tmp_path, store={"url": url}), out).read_text("utf-8")
    assert html.count('<tr class="verdict-row">') == 4
    for kind in ("BLOCKED", "NEEDS_REVIEW"):
        css = kind.lower()
        assert f".verdict-{css} {{ background: {figures.VERDICT_COLOURS[kind]};" in html
        assert f'<span class="badge verdict-{css}">{kind}</span>' in html
    table = html.split('id="verdicts"')[1].split("</section>")[0]
    assert table.count("pays back in 8 months · +$1,000/month after · $16,000 over 24 months") == 2
    assert table.count("Licence cc-by-nc-4.0 · needs 15.2 GiB<") == 2
    assert "Licence apache-2.0 · needs 0.1 GiB · p95 12 ms per request (target 500 ms)" in table
    assert table.count('<li class="blocker">Blocked: licence cc-by-nc-4.0 not allowed</li>') == 2
    assert (
        '<li class="review">Review: licence llama3.1 (the vendor&#39;s own) needs review' in table
    )
    assert table.count("(not benchmarked)") == 2
    assert "None" not in table and not re.search(r"\bnan\b", table, re.IGNORECASE)
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == [
        "support-triage-cost.png",
        "support-triage-history.png",
    ]
    triage = html.split('id="finetune-support-triage"')[1].split("</section>")[0]
    assert "1 candidate was blocked before the benchmark: not drawn" in triage
    blocked = html.split('id="finetune-only-blocked"')[1].split("</section>")[0]
    assert "every comparison so far was blocked before its benchmark" in blocked
    assert "<img" not in blocked


# ---------------------------------------------------------------------------- a real browser


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "no headless browser found (chromium, chromium-browser, google-chrome)"
    if os.environ.get("CI"):
        pytest.fail(message + ": CI installs chromium before the tests")
    pytest.skip(message)


def _headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--virtual-time-budget=10000", f"--user-data-dir={profile}",
         *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_browser_renders_page_and_decodes_every_figure(report_dir: Path, tmp_path: Path) -> None:
    binary = _browser()
    url = (report_dir / "index.html").resolve().as_uri()
    dumped = _headless(binary, tmp_path / "profile-dom", "--dump-dom", url)
    dom = dumped.stdout
    assert dumped.returncode == 0 and "<body" in dom, dumped.stderr[-2000:]
    for anchor, title in zip(SECTION_IDS, TITLES, strict=True):
        assert f'id="{anchor}"' in dom and f"<h2>{title}</h2>" in dom
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images-total="(\d+)"', dom)
    assert loaded and total, "the page's load script did not run"
    assert int(total.group(1)) == 4
    assert loaded.group(1) == total.group(1)
    assert ESCAPED in dom and "<script>alert(1)" not in dom

    # The figures' smallest text, as shown at this width, is no smaller than the tables' text.
    scale = float(re.search(r'data-figure-scale="([0-9.]+)"', dom).group(1))  # type: ignore[union-attr]
    table_px = float(re.search(r'data-table-text-px="([0-9.]+)px"', dom).group(1))  # type: ignore[union-attr]
    smallest_pt = min(figures.TICK_PT, figures.LEGEND_PT, figures.NAME_PT)
    assert smallest_pt / 72 * figures.DPI * scale >= table_px - 0.5, (scale, table_px)

    # What a lead sees at 1,400 px, kept for a person to look at.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-1400px.png"
    taken = _headless(binary, tmp_path / "profile-shot", f"--screenshot={shot}",
                      "--window-size=1400,2200", "--hide-scrollbars", url)  # fmt: skip
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.is_file() and shot.read_bytes().startswith(b"\x89PNG")
    assert shot.stat().st_size > 20_000


# ---------------------------------------------------------------------------- the command


def test_report_command_prints_the_page(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    fill_store(url)
    config = write_settings(tmp_path, store={"url": url})
    done = supersede("report", "--out", str(tmp_path / "site"), "-c", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    index = (tmp_path / "site" / "index.html").resolve()
    assert index.is_file() and len(list((tmp_path / "site" / "figures").glob("*.png"))) == 4
    printed = done.stdout.replace("\n", "")
    assert str(index) in printed and index.as_uri() in printed


def test_report_command_fails_plainly_on_a_bad_config(tmp_path: Path) -> None:
    done = supersede("report", "-c", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert done.returncode == 2
    assert "error:" in done.stderr and "missing.yaml" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unwritable_folder_is_a_plain_error(tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the report folder would go", encoding="utf-8")
    settings = build_settings(tmp_path)
    with pytest.raises(FatalError, match="cannot write the report"):
        build_report(settings, blocker)


# ---------------------------------------------------------------------------- figure text


def test_time_ticks_are_distinct_even_within_one_minute() -> None:
    same_minute = [T0, T0 + timedelta(seconds=5), T0 + timedelta(minutes=3)]
    labels = figures._tick_labels(same_minute)
    assert len(set(labels)) == 3 and all(":" in label for label in labels)
    apart = [T0, T0 + timedelta(minutes=1)]
    assert figures._tick_labels(apart) == [t.strftime("%m-%d\n%H:%M") for t in apart]
    assert len(set(figures._tick_labels([T0, T0, T0]))) == 3


@pytest.mark.parametrize(
    ("value", "shown"), [(0.00009, "0.00009"), (0.000096, "0.000096"), (0.0001, "0.0001"),
                         (1.5, "1.5"), (1200.0, "1200")],
)  # fmt: skip
def test_cost_ticks_are_plain_decimals(value: float, shown: str) -> None:
    assert figures._price(value) == shown
