"""The ``supersede`` command line. Heavy libraries load only inside the commands that need them."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from core.errors import SupersedeError
from supersede.cli import demo as demo_command
from supersede.cli import jobs as job_commands
from supersede.cli import mute as mute_commands
from supersede.cli import report as report_command
from supersede.cli import watch as watch_commands
from supersede.cli.console import (
    ConfigOption,
    JsonOption,
    LimitOption,
    err,
    fail,
    out,
    quiet_libraries,
    typeable,
    usable_workdir,
)

if TYPE_CHECKING:
    from benchmarks.verdict import VerdictReport

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Supersede: notice the day a new foundation model makes your fine-tune obsolete.",
    # Plain help: flags read as flags (rich panels label them `<bool>`), and nothing is boxed
    # into columns that wrap mid-word in a narrow terminal.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"supersede {version('supersede')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


PACKAGED_TASKS = Path(__file__).resolve().parents[2] / "config" / "tasks"


class _RichProgress:
    """A rich progress bar on stderr, fed by the engine."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not enabled,
        )
        self.task_id: Any = None

    def __enter__(self) -> _RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def start(self, total: int, description: str) -> None:
        self.task_id = self.progress.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self.task_id is not None:
            self.progress.advance(self.task_id, n)


#: The start-up phases of ``supersede bench --json`` (``startup``), in the order they happen:
#: the interpreter's and the command's imports, reading the settings and the task, resolving
#: (and pinning) the model and adapter, opening the result store, importing torch and
#: transformers, loading the tokenizer, weights and adapter, and the first batch. Each is 0
#: where it did not happen (a cached result, or a model run in a child process).
STARTUP_PHASES = (
    "imports",
    "settings",
    "task",
    "resolve",
    "store",
    "libraries",
    "model",
    "first_batch",
)


def _startup(outcome: Any, phases: dict[str, float]) -> dict[str, float]:
    timings = {**phases, **getattr(outcome, "timings", {})}
    return {phase: round(max(timings.get(f"{phase}_s", 0.0), 0.0), 4) for phase in STARTUP_PHASES}


def _seconds_since_process_start() -> float:
    """Seconds since this process started: the interpreter's and the command's imports.

    On Linux, from the process's start in clock ticks since boot (``/proc/self/stat``) against
    the boot clock: to 10 ms. Elsewhere from psutil's start time, which can be a second off where
    the boot time it adds is whole seconds."""
    import os
    import time

    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        since = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        import psutil

        since = time.time() - psutil.Process().create_time()
    return max(since, 0.0)


def outcome_json(outcome: Any, phases: dict[str, float] | None = None) -> dict[str, Any]:
    """The ``--json`` object of ``supersede bench``; ``phases`` are the start-up seconds spent
    before :func:`benchmarks.bench.bench` was called (``imports_s``, ``settings_s``)."""
    result, identity = outcome.result, outcome.identity
    stats = result.stats
    return {
        "model": identity["model"],
        "adapter": identity["adapter"],
        "task": result.task,
        "metric": result.metric,
        "score": result.score,
        "stderr": result.stderr,
        "n": result.n,
        "metrics": {k: {"score": v[0], "stderr": v[1]} for k, v in result.metrics.items()},
        "wall_s": round(outcome.wall_s, 4),
        "load_s": round(outcome.load_s, 4),
        "startup": _startup(outcome, phases or {}),
        "scoring_s": round(stats.scoring_s, 4),
        "examples_per_s": round(stats.examples_per_s, 2),
        "tokens_per_s": round(stats.tokens_per_s, 2),
        "p50_batch_s": round(stats.p50_batch_s, 5),
        "p95_batch_s": round(stats.p95_batch_s, 5),
        "peak_memory_mb": round(stats.peak_memory_mb, 1),
        # Per request at batch size 1 (runtime.latency_sample), None when not measured.
        "latency": result.extra.get("latency"),
        "model_revision": identity["model_revision"],
        "adapter_revision": identity["adapter_revision"],
        "device": outcome.device,
        "dtype": outcome.dtype,
        "cached": outcome.cached,
        "key": outcome.key,
    }


def _request_latency(row: dict[str, Any]) -> str:
    """``12.1 / 15.3 ms at batch 1`` (+ ``first token 4.0 ms``), or ``-`` when not measured."""
    latency = row.get("latency")
    if not latency:
        return "-"
    shown = f"{latency['p50_ms']:.1f} / {latency['p95_ms']:.1f} ms at batch 1"
    if "ttft_p50_ms" in latency:
        shown += f", first token {latency['ttft_p50_ms']:.1f} ms"
    return shown


def _score_cell(row: dict[str, Any]) -> str:
    """``acc 0.8125 ± 0.0123  (n=400)``; a judged task's mean 1-5 score, or why it has none."""
    n = f"(n={row['n']})"
    if row["score"] is None:
        failed = (row.get("judge") or {}).get("failed") or "no score"
        return f"{row['metric']} -  {n}: {failed}"
    spread = f" ± {row['stderr']:.4f}" if row.get("stderr") is not None else ""
    return f"{row['metric']} {row['score']:.4f}{spread}  {n}"


def _table(rows: list[dict[str, Any]], title: str, headers: list[str]) -> Table:
    """One column per run, one row per figure: reads well at any terminal width."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for header in headers:
        table.add_column(header, overflow="fold")
    figures: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("model", lambda r: r["model"]),
        ("adapter", lambda r: r["adapter"] or "-"),
        ("task", lambda r: r["task"]),
        ("score", _score_cell),
        ("throughput", lambda r: f"{r['examples_per_s']:.1f} ex/s, {r['tokens_per_s']:.0f} tok/s"),
        (
            "batch p50/p95",
            lambda r: f"{r['p50_batch_s'] * 1000:.1f} / {r['p95_batch_s'] * 1000:.1f} ms",
        ),
        ("request p50/p95", _request_latency),
        ("peak memory", lambda r: f"{r['peak_memory_mb']:.0f} MB"),
        ("wall", lambda r: f"{r['wall_s']:.2f} s (load {r['load_s']:.2f} s)"),
        ("model revision", lambda r: r["model_revision"]),
        ("adapter revision", lambda r: r["adapter_revision"] or "-"),
        ("from cache", lambda r: "yes" if r["cached"] else "no"),
    ]
    for label, show in figures:
        table.add_row(label, *(show(row) for row in rows))
    return table


@app.command()
def bench(
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Hub id (org/name or org/name@revision) or local folder."
        ),
    ],
    task: Annotated[Path, typer.Option("--task", "-t", help="Task file (lm-eval YAML).")],
    adapter: Annotated[
        str | None,
        typer.Option("--adapter", "-a", help="PEFT adapter: Hub id (org/name@revision) or folder."),
    ] = None,
    limit: LimitOption = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", "-b", min=1, help="Sequences per forward pass.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Run even if a result is stored.")
    ] = False,
    exact: Annotated[
        bool,
        typer.Option(
            "--exact",
            help="Score each choice as its own full row, without sharing the context's KV cache "
            "(log-likelihoods as one full pass computes them, instead of within 1e-5).",
        ),
    ] = False,
    chat_template: Annotated[
        str | None,
        typer.Option(
            "--chat-template",
            help="auto, on or off: wrap the prompt in the model's chat template, with "
            "candidates.prompt's other settings (few-shot examples as turns; default: the "
            "task's plain prompt).",
        ),
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Score a model (optionally with a LoRA adapter) on a task file."""
    import time

    quiet_libraries()
    from benchmarks.bench import bench as run_bench
    from config.settings import load_settings

    phases = {"imports_s": _seconds_since_process_start()}
    if chat_template not in (None, "auto", "on", "off"):
        raise typer.BadParameter(
            f"{chat_template!r} is not one of auto, on, off", param_hint="--chat-template"
        )
    try:
        reading = time.perf_counter()
        settings = load_settings(config)
        phases["settings_s"] = time.perf_counter() - reading
        with _RichProgress(enabled=not as_json and err.is_terminal) as progress:
            outcome = run_bench(
                settings,
                model,
                task,
                adapter=adapter,
                limit=limit,
                batch_size=batch_size,
                device=device,
                use_cache=not no_cache,
                progress=progress,
                exact=exact,
                prompt=(
                    settings.candidates.prompt.model_copy(update={"chat_template": chat_template})
                    if chat_template
                    else None
                ),
            )
        row = outcome_json(outcome, phases)
        if outcome.result.metric == "judge":
            row.update(_judged_row(settings, task, outcome.result.predictions))
    except SupersedeError as exc:
        raise fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps(row) + "\n")
    else:
        out.print(_table([row], "supersede bench", ["result"]))


def _judged_row(settings: Any, task: str | Path, answers: Any) -> dict[str, Any]:
    """A judged task's score for ``bench``: the task file's judge scores each answer 1-5
    against its reference; the mean is the score (None when the judge failed)."""
    from benchmarks.judge.pair import judge_scores
    from benchmarks.tasks.task import load_task

    scores = judge_scores(settings, load_task(task), [str(a) for a in answers])
    if scores is None:
        return {}
    figures = scores.model_dump(exclude={"scores", "fingerprint"})
    return {"metric": "judge (1-5)", "score": scores.mean, "stderr": None, "judge": figures}


VERDICT_STYLE = {
    "RETUNE": "bold blue",
    "SUPERSEDED": "bold red",
    "BLOCKED": "bold magenta",
    "NEEDS_REVIEW": "bold cyan",
    "AT_RISK": "bold yellow",
    "HOLDS": "bold green",
    "INCONCLUSIVE": "bold",
}


def _verdict_view(report: VerdictReport) -> Table:
    """A verdict as ``compare`` prints it: one labelled line per figure, text shown as written
    (a licence or model name is never read as markup)."""

    from workers.notify import words

    def pts(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    def signed(value: float | None) -> str:
        return "-" if value is None else f"{value:+.4f}"

    def usd(value: float | None) -> str:
        return "-" if value is None else f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"

    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(overflow="fold")

    def row(label: str, value: str) -> None:
        table.add_row(label, Text(value))

    style = VERDICT_STYLE.get(str(report.verdict), "bold")
    table.add_row("verdict", Text.assemble((str(report.verdict), style), f"  ({report.reason})"))
    if report.benchmarked:
        row("fine-tune", f"{report.finetune}: {report.metric} {pts(report.score_finetune)}")
        row("candidate", f"{report.candidate}: {report.metric} {pts(report.score_candidate)}")
    else:
        row("fine-tune", report.finetune)
        row("candidate", f"{report.candidate}: not benchmarked (blocked before the download)")
    if report.delta is not None:
        p_value = "-" if report.p_value is None else f"{report.p_value:.3g}"
        row(
            "difference",
            f"{report.delta:+.4f} ({report.confidence:.0%} CI {signed(report.ci_low)} to "
            f"{signed(report.ci_high)}; p = {p_value}, {report.test}; n = {report.n}; "
            f"margin {report.margin:g})",
        )
        row(
            "cost per 1k requests",
            f"fine-tune {usd(report.cost_per_1k_finetune)}, candidate "
            f"{usd(report.cost_per_1k_candidate)}",
        )
        row(
            "per month",
            f"fine-tune {usd(report.monthly_cost_finetune)} (with upkeep), candidate "
            f"{usd(report.monthly_cost_candidate)}; savings {usd(report.monthly_savings_usd)}",
        )
        where = [
            f"{side} on {report.details[side]['scored_on']}"
            for side in ("finetune", "candidate")
            if isinstance(report.details.get(side), dict) and "scored_on" in report.details[side]
        ]
        if where:
            row("scored", "; ".join(where).replace("finetune", "fine-tune"))
    row("ROI", report.summary)
    money, deploy = words.switching(report), words.deployment(report)
    if money:
        row("switching", money)
    if deploy:
        row("deploy", deploy)
    retuned = words.retune(report)
    if retuned:
        row("re-tuned", retuned)
    judged = words.judged(report)
    if judged:
        row("judged", judged)
    for blocker in report.blockers:
        row("blocked by", blocker)
    for review in report.reviews:
        row("needs review", review)
    if report.hint:
        row("hint", report.hint)
    for warning in report.warnings:
        row("warning", warning)
    return table


@app.command()
def compare(
    finetune: Annotated[str, typer.Option("--finetune", "-f", help="A fine-tune from the config.")],
    candidate: Annotated[
        str,
        typer.Option(
            "--candidate",
            "-C",
            help="Hub id (org/name or org/name@revision), local folder, or an api_candidates name.",
        ),
    ],
    limit: LimitOption = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Re-run both sides.")] = False,
    stored: Annotated[
        bool,
        typer.Option(
            "--stored",
            help="Judge the results the pipeline's newest benchmark of the candidate stored (no "
            "Hub, no model), with the current verdict settings.",
        ),
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Is the fine-tune still worth it? Score it and a candidate on its task, and decide."""
    quiet_libraries()
    from benchmarks.compare import compare as run_compare
    from config.settings import load_settings

    try:
        settings = load_settings(config)
        if stored:
            from workers.manual import stored_verdict

            report = stored_verdict(settings, finetune, candidate)
        else:
            with _RichProgress(enabled=not as_json and err.is_terminal) as progress:
                report = run_compare(
                    settings,
                    finetune,
                    candidate,
                    limit=limit,
                    use_cache=not no_cache,
                    progress=progress,
                )
    except SupersedeError as exc:
        raise fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    else:
        out.print(_verdict_view(report))


@app.command()
def retune(
    finetune: Annotated[str, typer.Option("--finetune", "-f", help="A fine-tune from the config.")],
    candidate: Annotated[
        str,
        typer.Option(
            "--candidate", "-C", help="Hub id (org/name or org/name@revision) or local folder."
        ),
    ],
    limit: LimitOption = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Score every side again (a trained adapter is kept).")
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Keep, switch or re-tune? Train the fine-tune's adapter recipe on the candidate and judge
    the three (the adapter is trained once per base commit, data, recipe and seed)."""
    quiet_libraries()
    from benchmarks.contender import compare_three_ways
    from config.settings import load_settings

    try:
        settings = load_settings(config)
        with _RichProgress(enabled=not as_json and err.is_terminal) as progress:
            report = compare_three_ways(
                settings, finetune, candidate, limit=limit, use_cache=not no_cache,
                progress=progress,
            )  # fmt: skip
    except SupersedeError as exc:
        raise fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    else:
        out.print(_verdict_view(report))


EXAMPLE_CONFIG = """\
# Written by `supersede example`: the tiny zoo's fine-tune, as an organisation would declare it.
store:
  url: sqlite:///{root}/supersede.db
finetunes:
  - name: review-sentiment
    task: {task}
    base: {base}
    adapter: {adapter}
    economics:
      tuning_cost_usd: 18000
      monthly_upkeep_usd: 1200
      monthly_requests: 2000000
"""


@app.command()
def example(
    workdir: Annotated[
        Path,
        typer.Option(
            envvar="SUPERSEDE_EXAMPLE_WORKDIR",
            help="Where the tiny models and the example config are written.",
        ),
    ] = Path(".supersede/example"),
) -> None:
    """Offline example: a tiny fine-tune against two new releases, one better and one not."""
    try:  # before the heavy imports: a folder it cannot use is said at once
        root = usable_workdir(workdir, "SUPERSEDE_EXAMPLE_WORKDIR")
    except SupersedeError as exc:
        raise fail(exc) from None
    quiet_libraries()
    from benchmarks.compare import compare as run_compare
    from config.settings import load_settings
    from supersede.demo.zoo import build_zoo, read_jsonl

    task_file = PACKAGED_TASKS / "review_sentiment" / "review_sentiment.yaml"
    try:
        with err.status("Building the tiny model zoo (base, LoRA fine-tune, two new releases)..."):
            zoo = build_zoo(root / "zoo", read_jsonl(task_file.parent / "train.jsonl"))
        config_file = root / "supersede.yaml"
        config_file.write_text(
            EXAMPLE_CONFIG.format(root=root, task=task_file, base=zoo.base, adapter=zoo.adapter)
        )
        settings = load_settings(config_file)
        for release in (zoo.stronger, zoo.weaker):
            with _RichProgress(enabled=err.is_terminal) as progress:
                report = run_compare(settings, "review-sentiment", str(release), progress=progress)
            out.rule(f"{release.name} against the review-sentiment fine-tune")
            out.print(_verdict_view(report))
    except SupersedeError as exc:
        raise fail(exc) from None
    out.rule()
    out.print(
        f"Config written to {config_file}. Re-run one comparison (answered from the cache):\n  "
        + typeable(
            f"compare --config {shlex.quote(str(config_file))} --finetune review-sentiment "
            f"--candidate {shlex.quote(str(zoo.stronger))} --json"
        ),
        soft_wrap=True,
    )


app.command()(watch_commands.poll)
app.command()(job_commands.run)
app.command()(job_commands.rerun)
app.command()(job_commands.status)
app.command()(demo_command.demo)
app.command()(report_command.report)
app.add_typer(mute_commands.mute, name="mute")


def main() -> None:
    """Console-script entry point."""
    import gc

    # Importing torch and transformers creates millions of long-lived objects; with the default
    # thresholds the collector walks them again and again during start-up, and once more while
    # the interpreter tears down. Collect less often, and freeze what exists before exit.
    gc.set_threshold(50_000, 20, 20)
    try:
        app()
    finally:
        gc.freeze()
