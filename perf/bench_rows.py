"""The rows of perf/bench_vs_lmeval.py's table: what each compares, and building what it runs on.

Each row is one job both sides run: the same model folder, task file and batch size, with the
extra flags the row gives either side. A row whose model cannot be had is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_real import real_task
from bench_setup import Setup, build_random_model, random_task


@dataclass(frozen=True)
class Row:
    """One job of the table."""

    key: str
    title: str
    #: Which build it runs on (rows with the same one share the task folder).
    build: str
    supersede_args: tuple[str, ...] = ()
    lmeval_args: tuple[str, ...] = ()
    #: A row whose lm-eval command is this row's too: its lm-eval figures are reused when it
    #: runs in the same repeat (only supersede's flags differ).
    peer: str | None = None
    #: Why the row cannot run at all (printed as skipped).
    unsupported: str | None = None


ROWS: tuple[Row, ...] = (
    Row("single", "single-token MC, 27.7M random", "single"),
    Row("multi", "two-token MC, shared prefix", "multi"),
    Row("multi-exact", "two-token MC, --exact", "multi", ("--exact",), peer="multi"),
    Row("real-mc", "SmolLM2-135M 3-shot MC", "real-mc"),
    Row("real-gen", "SmolLM2-135M 3-shot generation", "real-gen"),
    Row(
        "real-chat",
        "SmolLM2-135M 3-shot MC, chat template",
        "real-mc",
        ("--chat-template", "on"),
        lmeval_args=("--apply_chat_template", "--fewshot_as_multiturn"),
    ),
)
DEFAULT_ROWS = ("single", "multi", "multi-exact", "real-mc", "real-gen", "real-chat")


def pick(keys: Sequence[str]) -> list[Row]:
    """The rows named, in the table's order. Raises ``KeyError`` naming an unknown one."""
    known = {row.key: row for row in ROWS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise KeyError(f"unknown row {', '.join(unknown)}; rows: {', '.join(known)}")
    return [row for row in ROWS if row.key in keys]


def build(
    rows: Sequence[Row], workdir: Path, examples: int, real_examples: int
) -> dict[str, Setup | str]:
    """Each row's :class:`Setup`, or why it is skipped. Builds only what the rows need."""
    from real_model import RealModelUnavailable, real_model

    needed = {row.build for row in rows if row.unsupported is None}
    built: dict[str, Setup | str] = {}
    if needed & {"single", "multi"}:
        model = build_random_model(workdir, examples)
        for name in needed & {"single", "multi"}:
            built[name] = random_task(workdir, model, multi_token=name == "multi")
    if needed & {"real-mc", "real-gen"}:
        real: Path | str
        try:
            real = real_model()
        except RealModelUnavailable as exc:
            real = f"the real model cannot be had: {exc}"
        for name in needed & {"real-mc", "real-gen"}:
            built[name] = (
                real
                if isinstance(real, str)
                else real_task(workdir, real, real_examples, generate=name == "real-gen")
            )
    return {row.key: row.unsupported or built[row.build] for row in rows}
