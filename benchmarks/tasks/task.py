"""The loaded task: a checked task file, its documents and its content and data hashes."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.tasks.data import load_splits
from benchmarks.tasks.render import Renderer, Request
from benchmarks.tasks.schema import MetricSpec, OutputType, check, read_task_file
from core.errors import TaskFileError


@dataclass(frozen=True)
class Task:
    """A loaded, validated task: its settings, its documents and its content hash."""

    name: str
    path: Path
    output_type: OutputType
    config: Mapping[str, Any]
    docs: tuple[Mapping[str, Any], ...]
    fewshot_docs: tuple[Mapping[str, Any], ...]
    metrics: tuple[MetricSpec, ...]
    num_fewshot: int
    until: tuple[str, ...]
    max_gen_toks: int
    content_hash: str
    data_hash: str
    #: True when shots are drawn from the scored split (the scored document is then skipped).
    fewshot_from_scored_split: bool = False

    @property
    def metric(self) -> MetricSpec:
        """The primary metric: the first of ``metric_list``."""
        return self.metrics[0]

    def with_num_fewshot(self, num_fewshot: int) -> Task:
        """The same task with another number of few-shot examples (checked against the pool)."""
        if num_fewshot == self.num_fewshot:
            return self
        usable = len(self.fewshot_docs) - (1 if self.fewshot_from_scored_split else 0)
        if num_fewshot > usable:
            raise TaskFileError(
                f"{self.path}: num_fewshot {num_fewshot} asks for more shots than the "
                f"{usable} documents available to draw from"
            )
        return dataclasses.replace(self, num_fewshot=num_fewshot)

    def requests(self, limit: int | None = None) -> list[Request]:
        """One request per document (the first ``limit`` documents), prompts fully rendered."""
        docs = self.docs if limit is None else self.docs[:limit]
        renderer = Renderer(self)
        return [renderer.request(i, doc) for i, doc in enumerate(docs)]


def load_task(path: str | Path) -> Task:
    """Load and validate a task file; every problem raises :class:`TaskFileError` naming the key."""
    path = Path(path)
    raw, config = read_task_file(path)
    settings = check(path, config)
    num_fewshot = settings.num_fewshot

    splits, data_hash = load_splits(path, config)
    test_split = config.get("test_split") or config.get("validation_split")
    if not test_split:
        raise TaskFileError(f"{path}: key 'test_split': required (the split that is scored)")
    if test_split not in splits:
        raise TaskFileError(
            f"{path}: key 'test_split': split {test_split!r} is not in dataset_kwargs.data_files "
            f"(splits: {', '.join(sorted(splits))})"
        )
    # lm-eval's pool: fewshot_split, else the training, validation, then test split.
    fewshot_split = (
        config.get("fewshot_split")
        or config.get("training_split")
        or config.get("validation_split")
        or test_split
    )
    if num_fewshot and (not fewshot_split or fewshot_split not in splits):
        raise TaskFileError(
            f"{path}: key 'fewshot_split': num_fewshot is {num_fewshot} but split "
            f"{fewshot_split!r} is not in dataset_kwargs.data_files"
        )
    docs = tuple(splits[test_split])
    if not docs:
        raise TaskFileError(f"{path}: split {test_split!r} has no documents")
    task = Task(
        name=settings.name,
        path=path,
        output_type=settings.output_type,
        config=config,
        docs=docs,
        fewshot_docs=tuple(splits.get(fewshot_split, ())),
        metrics=settings.metrics,
        num_fewshot=num_fewshot,
        until=settings.until,
        max_gen_toks=settings.max_gen_toks,
        content_hash=hashlib.sha256(raw).hexdigest(),
        data_hash=data_hash,
        fewshot_from_scored_split=fewshot_split == test_split,
    )
    if num_fewshot:
        try:
            dataclasses.replace(task, num_fewshot=0).with_num_fewshot(num_fewshot)
        except TaskFileError:
            raise TaskFileError(
                f"{path}: key 'num_fewshot': {num_fewshot} shots but split {fewshot_split!r} "
                "has too few documents to draw them from"
            ) from None
    task.requests(limit=1)  # render the first document now: a broken template fails at load
    return task
