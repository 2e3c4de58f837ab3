"""Task files written on the fly next to a copy of the shipped review data."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
REVIEW_DIR = REPO / "config" / "tasks" / "review_sentiment"

MULTI_TOKEN = {
    "task": "review_multi",
    "dataset_path": "json",
    "dataset_kwargs": {"data_files": {"test": "test.jsonl", "train": "train.jsonl"}},
    "test_split": "test",
    "output_type": "multiple_choice",
    "doc_to_text": "Review: {{text}}\nSentiment:",
    "doc_to_choice": ["awful and cheap", "great and lovely", "not sure"],
    "doc_to_target": "label",
    "metric_list": [{"metric": "acc"}],
}

GENERATE = {
    "task": "review_generate",
    "dataset_path": "json",
    "dataset_kwargs": {"data_files": {"test": "test.jsonl", "train": "train.jsonl"}},
    "test_split": "test",
    "output_type": "generate_until",
    "doc_to_text": "Review: {{text}}\nSentiment:",
    "doc_to_target": "{{ 'positive' if label == 1 else 'negative' }}",
    "generation_kwargs": {"until": ["\n", "."], "max_gen_toks": 4, "do_sample": False},
    "metric_list": [
        {
            "metric": "exact_match",
            "ignore_case": True,
            "regexes_to_ignore": ["^\\s+", "\\s.*$"],
        }
    ],
}


def write_task(folder: Path, config: dict[str, object], *, test_rows: int | None = None) -> Path:
    """Write ``config`` as ``<task>.yaml`` in ``folder`` beside copies of the review data."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.jsonl", "test.jsonl"):
        if not (folder / name).exists():
            lines = (REVIEW_DIR / name).read_text().splitlines(keepends=True)
            if name == "test.jsonl" and test_rows is not None:
                lines = lines[:test_rows]
            (folder / name).write_text("".join(lines))
    path = folder / f"{config['task']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def shipped_task_copy(folder: Path) -> Path:
    """A copy of the shipped review_sentiment task folder (safe to modify)."""
    shutil.copytree(REVIEW_DIR, folder)
    return folder / "review_sentiment.yaml"
