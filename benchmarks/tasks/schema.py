"""Task files in lm-evaluation-harness's YAML format (the local-data subset).

A task file that runs under ``lm_eval --include_path DIR --tasks NAME`` loads here unchanged and
builds the same prompts, so it gets the same score. Two documented differences:

* a relative ``data_files`` path resolves against the task file's folder (lm-eval resolves it
  against the working directory), so a task folder can be moved or shipped as a whole;
* few-shot examples are drawn as lm-eval 0.4 draws them (``random.Random(1234)``, documents in
  order), so the same shots appear; lm-eval may change its sampler, so few-shot scores are
  outside the equal-score promise.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import difflib
import hashlib
import io
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from core.errors import TaskFileError

OutputType = Literal["multiple_choice", "generate_until"]

#: Keys understood by Supersede, with lm-eval's meaning.
SUPPORTED_KEYS = frozenset(
    {
        "task",
        "tag",
        "group",
        "dataset_path",
        "dataset_name",
        "dataset_kwargs",
        "training_split",
        "validation_split",
        "test_split",
        "fewshot_split",
        "output_type",
        "doc_to_text",
        "doc_to_choice",
        "doc_to_target",
        "target_delimiter",
        "fewshot_delimiter",
        "description",
        "num_fewshot",
        "generation_kwargs",
        "metric_list",
        "metadata",
        "should_decontaminate",
        "doc_to_decontamination_query",
        "repeats",
    }
)
#: lm-eval keys that Supersede refuses rather than silently ignoring (they change the score).
UNSUPPORTED_KEYS = frozenset(
    {
        "process_docs",
        "process_results",
        "filter_list",
        "use_prompt",
        "fewshot_config",
        "doc_to_image",
        "doc_to_audio",
        "unsafe_code",
        "gen_prefix",
        "custom_dataset",
        "include",
        "class",
        "output_type_kwargs",
        "multiple_input",
    }
)
_GENERATION_KEYS = frozenset({"until", "max_gen_toks", "do_sample", "temperature"})
_EXACT_MATCH_OPTIONS = frozenset(
    {"ignore_case", "ignore_punctuation", "ignore_numbers", "regexes_to_ignore"}
)
_METRIC_ENTRY_KEYS = frozenset({"metric", "aggregation", "higher_is_better"}) | _EXACT_MATCH_OPTIONS
METRICS_BY_TYPE: dict[str, frozenset[str]] = {
    "multiple_choice": frozenset({"acc", "acc_norm"}),
    "generate_until": frozenset({"exact_match", "f1", "rouge_l", "chrf"}),
}
DEFAULT_MAX_GEN_TOKS = 256
#: lm-eval's default few-shot seed; shots are drawn exactly as lm-eval 0.4 draws them.
FEWSHOT_SEED = 1234


def _strict_jinja() -> Any:
    # lm-eval's environment: undefined names fail loudly, trailing newlines are kept.
    # Sandboxed: renders ordinary templates exactly as lm-eval's plain Environment does, but a
    # template cannot reach Python internals (e.g. cycler.__init__.__globals__.os).
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True
    )
    env.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(
        pattern, repl, s, count=count
    )
    return env


@dataclass(frozen=True)
class MetricSpec:
    """One entry of ``metric_list``; ``options`` holds exact_match's normalisation flags."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """What the runner scores for one document.

    For ``multiple_choice``: ``continuations`` (target delimiter + choice) scored after
    ``context``; ``gold`` is the index of the right choice. For ``generate_until``: text is
    generated after ``context`` and compared with the ``gold`` string.
    """

    doc_id: int
    context: str
    continuations: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    gold: int | str | tuple[str, ...] = 0


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
        renderer = _Renderer(self)
        return [renderer.request(i, doc) for i, doc in enumerate(docs)]


class _Renderer:
    """Renders templates the way lm-eval's ConfigurableTask does."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.env = _strict_jinja()
        self.features = set(task.docs[0]) if task.docs else set()
        self.cfg = task.config
        self._cache: dict[str, Any] = {}
        self._rng = random.Random(FEWSHOT_SEED)

    def _template(self, source: str) -> Any:
        if source not in self._cache:
            self._cache[source] = self.env.from_string(source)
        return self._cache[source]

    def _render(self, key: str, source: str, doc: Mapping[str, Any], doc_id: int) -> str:
        try:
            return str(self._template(source).render(**doc))
        except Exception as exc:
            raise TaskFileError(
                f"{self.task.path}: key '{key}': template failed on document {doc_id}: {exc}"
            ) from None

    def text(self, doc: Mapping[str, Any], doc_id: int) -> str:
        source = self.cfg.get("doc_to_text", "")
        if isinstance(source, int):
            return str(source)
        if source in self.features:
            return str(doc[source])
        return self._render("doc_to_text", source, doc, doc_id)

    def choices(self, doc: Mapping[str, Any], doc_id: int) -> list[str]:
        source = self.cfg.get("doc_to_choice")
        if source is None:
            return []
        if isinstance(source, list):
            return [str(c) for c in source]
        if isinstance(source, dict):
            return [str(c) for c in source.values()]
        if source in self.features:
            value = doc[source]
        else:
            rendered = self._render("doc_to_choice", source, doc, doc_id)
            try:
                value = ast.literal_eval(rendered)
            except (ValueError, SyntaxError):
                raise TaskFileError(
                    f"{self.task.path}: key 'doc_to_choice': document {doc_id} rendered "
                    f"{rendered[:80]!r}, which is not a list literal"
                ) from None
        if not isinstance(value, list | tuple) or not value:
            raise TaskFileError(
                f"{self.task.path}: key 'doc_to_choice': document {doc_id} has no list of choices"
            )
        return [str(c) for c in value]

    def target(self, doc: Mapping[str, Any], doc_id: int) -> Any:
        source = self.cfg.get("doc_to_target", "")
        if isinstance(source, int | list):
            return source
        if source in self.features:
            return doc[source]
        rendered = self._render("doc_to_target", source, doc, doc_id)
        if rendered.isdigit() and self.cfg.get("doc_to_choice") is not None:
            return int(rendered)
        if len(rendered) >= 2 and rendered[0] == "[" and rendered[-1] == "]":
            try:
                return ast.literal_eval(rendered)
            except (SyntaxError, ValueError):
                return rendered
        return rendered

    def _answer_text(self, doc: Mapping[str, Any], doc_id: int) -> str:
        answer = self.target(doc, doc_id)
        choices = self.choices(doc, doc_id)
        if choices and isinstance(answer, int):
            if not 0 <= answer < len(choices):
                raise TaskFileError(
                    f"{self.task.path}: key 'doc_to_target': few-shot document {doc_id} has "
                    f"target {answer}, not an index into its {len(choices)} choices"
                )
            return choices[answer]
        if isinstance(answer, list):
            if not answer:
                raise TaskFileError(
                    f"{self.task.path}: key 'doc_to_target': few-shot document {doc_id} has an "
                    "empty list of targets"
                )
            return str(answer[0])
        return str(answer)

    def context(self, doc: Mapping[str, Any], doc_id: int) -> str:
        cfg = self.cfg
        parts = []
        description = cfg.get("description") or ""
        if description:
            parts.append(self._render("description", description, doc, doc_id))
        if self.task.num_fewshot:
            target_delimiter = cfg.get("target_delimiter", " ")
            fewshot_delimiter = cfg.get("fewshot_delimiter", "\n\n")
            for j, shot in self._shots(doc):
                parts.append(
                    self.text(shot, j)
                    + target_delimiter
                    + self._answer_text(shot, j)
                    + fewshot_delimiter
                )
        parts.append(self.text(doc, doc_id))
        return "".join(parts)

    def _shots(self, doc: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
        # lm-eval's ContextSampler: one Random(1234) drawn from in document order; when the
        # few-shot split is the scored split, n + 1 are drawn and the document itself dropped.
        n = self.task.num_fewshot
        pool = list(enumerate(self.task.fewshot_docs))
        scored = self.cfg.get("test_split") or self.cfg.get("validation_split")
        if self.cfg.get("fewshot_split") != scored:
            return self._rng.sample(pool, n)
        shots = [s for s in self._rng.sample(pool, min(n + 1, len(pool))) if s[1] != doc][:n]
        if len(shots) < n:
            shots = self._rng.sample([s for s in pool if s[1] != doc], n)
        return shots

    def request(self, doc_id: int, doc: Mapping[str, Any]) -> Request:
        context = self.context(doc, doc_id)
        if self.task.output_type == "multiple_choice":
            choices = self.choices(doc, doc_id)
            if not choices:
                raise TaskFileError(
                    f"{self.task.path}: key 'doc_to_choice': required for multiple_choice"
                )
            gold = self.target(doc, doc_id)
            if isinstance(gold, str):
                if gold not in choices:
                    raise TaskFileError(
                        f"{self.task.path}: key 'doc_to_target': document {doc_id} has target "
                        f"{gold!r}, which is not one of its choices {choices}"
                    )
                gold = choices.index(gold)
            if not isinstance(gold, int) or not 0 <= gold < len(choices):
                raise TaskFileError(
                    f"{self.task.path}: key 'doc_to_target': document {doc_id} has target "
                    f"{gold!r}, not an index into its {len(choices)} choices"
                )
            delimiter = self.cfg.get("target_delimiter", " ")
            return Request(
                doc_id=doc_id,
                context=context,
                continuations=tuple(delimiter + c for c in choices),
                choices=tuple(choices),
                gold=gold,
            )
        target = self.target(doc, doc_id)
        if self.cfg.get("doc_to_choice") is not None:
            choices = self.choices(doc, doc_id)
            if not isinstance(target, int) or not 0 <= target < len(choices):
                raise TaskFileError(
                    f"{self.task.path}: key 'doc_to_target': document {doc_id} has target "
                    f"{target!r}; with doc_to_choice it must index one of {len(choices)} choices"
                )
            target = choices[target]
        if isinstance(target, list) and not target:
            raise TaskFileError(
                f"{self.task.path}: key 'doc_to_target': document {doc_id} has an empty list "
                "of targets"
            )
        answer: str | tuple[str, ...] = (
            tuple(str(t) for t in target) if isinstance(target, list) else str(target)
        )
        return Request(doc_id=doc_id, context=context, gold=answer)


def load_task(path: str | Path) -> Task:
    """Load and validate a task file; every problem raises :class:`TaskFileError` naming the key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TaskFileError(f"task file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        config = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise TaskFileError(f"{path}: not UTF-8 text") from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        at = f" at line {mark.line + 1}" if mark else ""
        raise TaskFileError(
            f"{path}{at}: {exc.problem} (Python hooks such as '!function' are not supported: "
            "express the prompt as a Jinja2 template)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TaskFileError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(config, dict):
        raise TaskFileError(f"{path}: expected a mapping of task keys, got {type(config).__name__}")
    _check_keys(path, config)
    _check_types(path, config)

    name = _require_str(path, config, "task")
    output_type = config.get("output_type", "generate_until")
    if output_type not in METRICS_BY_TYPE:
        raise TaskFileError(
            f"{path}: key 'output_type': expected multiple_choice or generate_until, got "
            f"{output_type!r} (loglikelihood tasks are not supported)"
        )
    if config.get("repeats", 1) != 1:
        raise TaskFileError(f"{path}: key 'repeats': only 1 is supported")
    metrics = _metrics(path, config, output_type)
    until, max_gen_toks = _generation(path, config)
    num_fewshot = config.get("num_fewshot", 0) or 0
    if not isinstance(num_fewshot, int) or num_fewshot < 0:
        raise TaskFileError(f"{path}: key 'num_fewshot': expected an integer >= 0")
    _compile_templates(path, config)

    splits, data_hash = _load_splits(path, config)
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
        name=name,
        path=path,
        output_type=output_type,
        config=config,
        docs=docs,
        fewshot_docs=tuple(splits.get(fewshot_split, ())),
        metrics=metrics,
        num_fewshot=num_fewshot,
        until=until,
        max_gen_toks=max_gen_toks,
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


def _check_keys(path: Path, config: Mapping[str, Any]) -> None:
    for key in config:
        if key in SUPPORTED_KEYS:
            continue
        if key in UNSUPPORTED_KEYS:
            raise TaskFileError(
                f"{path}: key '{key}': an lm-eval feature Supersede does not support; remove it"
            )
        close = difflib.get_close_matches(str(key), sorted(SUPPORTED_KEYS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise TaskFileError(f"{path}: key '{key}': unknown key{hint}")


#: Keys whose value must have one of these types (lm-eval would fail on anything else too).
_KEY_TYPES: dict[str, tuple[type, ...]] = {
    "output_type": (str,),
    "test_split": (str,),
    "validation_split": (str,),
    "training_split": (str,),
    "fewshot_split": (str,),
    "target_delimiter": (str,),
    "fewshot_delimiter": (str,),
    "description": (str,),
    "doc_to_text": (str, int),
    "doc_to_target": (str, int, list),
    "doc_to_choice": (str, list, dict),
    "dataset_path": (str,),
}


def _check_types(path: Path, config: Mapping[str, Any]) -> None:
    for key, types in _KEY_TYPES.items():
        value = config.get(key)
        if value is None or (isinstance(value, types) and not isinstance(value, bool)):
            continue
        expected = " or ".join(
            {str: "text", int: "an integer", list: "a list", dict: "a mapping"}[t] for t in types
        )
        raise TaskFileError(f"{path}: key '{key}': expected {expected}, got {value!r}")


def _require_str(path: Path, config: Mapping[str, Any], key: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TaskFileError(f"{path}: key '{key}': required, a non-empty string")
    return value


def _metrics(path: Path, config: Mapping[str, Any], output_type: str) -> tuple[MetricSpec, ...]:
    allowed = METRICS_BY_TYPE[output_type]
    entries = config.get("metric_list")
    if entries is None:
        return (MetricSpec("acc" if output_type == "multiple_choice" else "exact_match"),)
    if not isinstance(entries, list) or not entries:
        raise TaskFileError(f"{path}: key 'metric_list': expected a non-empty list")
    specs = []
    for i, entry in enumerate(entries):
        where = f"metric_list[{i}]"
        if not isinstance(entry, dict) or "metric" not in entry:
            raise TaskFileError(f"{path}: key '{where}': expected a mapping with 'metric'")
        name = entry["metric"]
        if not isinstance(name, str) or name not in allowed:
            raise TaskFileError(
                f"{path}: key '{where}.metric': {name!r} is not available for {output_type} "
                f"(available: {', '.join(sorted(allowed))})"
            )
        for key in entry:
            if key not in _METRIC_ENTRY_KEYS or (
                key in _EXACT_MATCH_OPTIONS and name != "exact_match"
            ):
                raise TaskFileError(f"{path}: key '{where}.{key}': not an option of {name}")
        aggregation = entry.get("aggregation", "mean")
        if aggregation != "mean":
            raise TaskFileError(f"{path}: key '{where}.aggregation': only 'mean' is supported")
        regexes = entry.get("regexes_to_ignore", [])
        if not isinstance(regexes, list):
            raise TaskFileError(f"{path}: key '{where}.regexes_to_ignore': expected a list")
        for pattern in regexes:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise TaskFileError(
                    f"{path}: key '{where}.regexes_to_ignore': bad regex {pattern!r}: {exc}"
                ) from None
        options = {k: v for k, v in entry.items() if k in _EXACT_MATCH_OPTIONS}
        specs.append(MetricSpec(name, options))
    return tuple(specs)


def _generation(path: Path, config: Mapping[str, Any]) -> tuple[tuple[str, ...], int]:
    kwargs = config.get("generation_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise TaskFileError(f"{path}: key 'generation_kwargs': expected a mapping")
    for key in kwargs:
        if key not in _GENERATION_KEYS:
            raise TaskFileError(
                f"{path}: key 'generation_kwargs.{key}': not supported (supported: "
                f"{', '.join(sorted(_GENERATION_KEYS))})"
            )
    if kwargs.get("do_sample"):
        raise TaskFileError(
            f"{path}: key 'generation_kwargs.do_sample': must be false (greedy decoding keeps "
            "scores reproducible)"
        )
    if kwargs.get("temperature", 0.0) not in (0, 0.0, None):
        raise TaskFileError(f"{path}: key 'generation_kwargs.temperature': must be 0")
    until = kwargs.get("until", [config.get("fewshot_delimiter", "\n\n")])
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, list) or not all(isinstance(u, str) and u for u in until):
        raise TaskFileError(f"{path}: key 'generation_kwargs.until': expected a list of strings")
    max_gen_toks = kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS)
    if not isinstance(max_gen_toks, int) or max_gen_toks < 1:
        raise TaskFileError(
            f"{path}: key 'generation_kwargs.max_gen_toks': expected an integer >= 1"
        )
    return tuple(until), max_gen_toks


def _compile_templates(path: Path, config: Mapping[str, Any]) -> None:
    from jinja2 import TemplateSyntaxError

    env = _strict_jinja()
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "description"):
        value = config.get(key)
        if value is None:
            continue
        if key == "doc_to_text" and not isinstance(value, str | int):
            raise TaskFileError(f"{path}: key '{key}': expected a template string or field name")
        if isinstance(value, str):
            try:
                env.from_string(value)
            except TemplateSyntaxError as exc:
                raise TaskFileError(
                    f"{path}: key '{key}': broken Jinja2 template "
                    f"(line {exc.lineno}): {exc.message}"
                ) from None
    if "doc_to_text" not in config:
        raise TaskFileError(f"{path}: key 'doc_to_text': required")
    if "doc_to_target" not in config:
        raise TaskFileError(f"{path}: key 'doc_to_target': required")


def _load_splits(path: Path, config: Mapping[str, Any]) -> tuple[dict[str, list[Any]], str]:
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
