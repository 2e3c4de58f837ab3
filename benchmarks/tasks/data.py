"""A task's documents: the local JSON, JSON Lines or CSV files its ``data_files`` name.

Documents come out as ``datasets`` would give them to lm-eval (CSV columns typed as pandas types
them), and every byte read goes into the data hash, so a changed data file changes the task's
identity in the result cache.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.errors import TaskFileError


def load_splits(path: Path, config: Mapping[str, Any]) -> tuple[dict[str, list[Any]], str]:
    """Every split's documents, by split name, and the SHA-256 of the files read.

    Relative paths resolve against the task file's folder, so a task folder can be moved whole.
    """
    fmt = config.get("dataset_path")
    if fmt not in ("json", "csv"):
        raise TaskFileError(
            f"{path}: key 'dataset_path': expected 'json' or 'csv' with local data_files, got "
            f"{fmt!r} (Hub data sets are not downloaded)"
        )
    if config.get("dataset_name") not in (None, "default"):
        raise TaskFileError(f"{path}: key 'dataset_name': not supported for local data files")
    kwargs = config.get("dataset_kwargs") or {}
    if not isinstance(kwargs, dict) or "data_files" not in kwargs:
        raise TaskFileError(f"{path}: key 'dataset_kwargs.data_files': required")
    extra = set(kwargs) - {"data_files", "field"}
    if extra:
        raise TaskFileError(f"{path}: key 'dataset_kwargs.{sorted(extra)[0]}': not supported")
    data_files = kwargs["data_files"]
    if isinstance(data_files, str | list):
        data_files = {"train": data_files}
    if not isinstance(data_files, dict):
        raise TaskFileError(f"{path}: key 'dataset_kwargs.data_files': expected a path or mapping")
    digest = hashlib.sha256()
    splits: dict[str, list[Any]] = {}
    bad = [k for k in data_files if not isinstance(k, str)]
    if bad:
        raise TaskFileError(
            f"{path}: key 'dataset_kwargs.data_files': split names must be text, got {bad[0]!r}"
        )
    for split, files in sorted(data_files.items()):
        names = [files] if isinstance(files, str) else files
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TaskFileError(f"{path}: key 'dataset_kwargs.data_files.{split}': expected paths")
        rows: list[Any] = []
        for name in names:
            for file in _expand(path, split, name):
                data = file.read_bytes()
                digest.update(split.encode() + b"\0" + data + b"\0")
                rows.extend(_parse(path, split, file, data, fmt, kwargs.get("field")))
        splits[str(split)] = rows
    return splits, digest.hexdigest()


def _expand(path: Path, split: str, name: str) -> list[Path]:
    pattern = Path(name)
    base = pattern if pattern.is_absolute() else path.parent / pattern
    files = sorted(base.parent.glob(base.name)) if any(c in name for c in "*?[") else [base]
    missing = [f for f in files if not f.is_file()]
    if not files or missing:
        raise TaskFileError(
            f"{path}: key 'dataset_kwargs.data_files.{split}': {base} not found "
            "(relative paths resolve against the task file's folder)"
        )
    return files


def _parse(path: Path, split: str, file: Path, data: bytes, fmt: str, field_name: Any) -> list[Any]:
    where = f"{path}: key 'dataset_kwargs.data_files.{split}': {file.name}"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TaskFileError(f"{where}: not UTF-8 text") from None
    if fmt == "csv":
        return _csv_rows(where, text)
    stripped = text.lstrip()
    try:
        if stripped.startswith("[") or (stripped.startswith("{") and field_name):
            loaded = json.loads(text)
            rows = loaded[field_name] if field_name else loaded
        else:
            # Only "\n" ends a record: str.splitlines() would also split on U+2028 and friends,
            # which are legal inside JSON strings.
            rows = [json.loads(line) for line in text.split("\n") if line.strip()]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TaskFileError(f"{where}: not valid JSON Lines or JSON: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TaskFileError(f"{where}: expected one JSON object per document")
    return rows


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _csv_rows(where: str, text: str) -> list[dict[str, Any]]:
    """CSV rows typed per column, as datasets' csv loader (pandas) types them: a column of
    integers gives ints, a numeric column gives floats, anything else stays text; an empty cell
    is None. Quoted fields may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header, *records = list(reader)
    except ValueError:
        return []
    except csv.Error as exc:
        raise TaskFileError(f"{where}: not valid CSV: {exc}") from None
    for number, record in enumerate(records, start=2):
        if len(record) != len(header):
            raise TaskFileError(
                f"{where}: record {number} has {len(record)} fields, the header has {len(header)}"
            )
    columns = list(zip(*records, strict=True)) if records else [() for _ in header]
    typed = [_csv_column(column) for column in columns]
    return [dict(zip(header, values, strict=True)) for values in zip(*typed, strict=True)]


def _csv_column(cells: Sequence[str]) -> list[Any]:
    filled = [c for c in cells if c != ""]
    if filled and all(_INT.fullmatch(c) for c in filled):
        return [int(c) if c != "" else None for c in cells]
    if filled and all(_FLOAT.fullmatch(c) or _INT.fullmatch(c) for c in filled):
        return [float(c) if c != "" else None for c in cells]
    return [c if c != "" else None for c in cells]
