"""What a task file may say: its keys, their types, metrics and generation settings.

Every check raises :class:`TaskFileError` naming the file and the key, so a user can fix the file
without reading a traceback. The checks run in a fixed order (unknown keys first, then types, then
each setting), so a file with several problems always reports the same one first.

The checks are written out rather than declared as a pydantic model: lm-eval's keys are loosely
typed (``doc_to_target`` may be a template, a field name, an index or a list), and a model's
collected validation errors would have to be translated back, one by one, into the messages
above and into the same first-problem-wins order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from benchmarks.tasks.render import strict_jinja
from core.errors import TaskFileError
from core.suggest import did_you_mean

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
        # Supersede's extension: the judge of the `judge` metric (see JUDGE_KEYS).
        "judge",
    }
)
#: Keys of a task file's ``judge:`` section (the settings' ``JudgeOverrides``).
JUDGE_KEYS = frozenset({"rubric", "mode", "api", "model", "max_new_tokens", "max_failures"})
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
    "generate_until": frozenset({"exact_match", "f1", "rouge_l", "chrf", "judge"}),
}
DEFAULT_MAX_GEN_TOKS = 256


@dataclass(frozen=True)
class MetricSpec:
    """One entry of ``metric_list``; ``options`` holds exact_match's normalisation flags."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSettings:
    """The settings a checked task file fixes, before any data is read."""

    name: str
    output_type: OutputType
    metrics: tuple[MetricSpec, ...]
    num_fewshot: int
    until: tuple[str, ...]
    max_gen_toks: int


def read_task_file(path: Path) -> tuple[bytes, dict[Any, Any]]:
    """The file's bytes (for its content hash) and its YAML mapping of task keys."""
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
    return raw, config


def check(path: Path, config: Mapping[str, Any]) -> TaskSettings:
    """Check every key of a task file except its data; the first problem raises."""
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
    _judge_section(path, config, metrics)
    until, max_gen_toks = _generation(path, config)
    num_fewshot = config.get("num_fewshot", 0) or 0
    if not isinstance(num_fewshot, int) or num_fewshot < 0:
        raise TaskFileError(f"{path}: key 'num_fewshot': expected an integer >= 0")
    _compile_templates(path, config)
    return TaskSettings(name, output_type, metrics, num_fewshot, until, max_gen_toks)


def _check_keys(path: Path, config: Mapping[str, Any]) -> None:
    for key in config:
        if key in SUPPORTED_KEYS:
            continue
        if key in UNSUPPORTED_KEYS:
            raise TaskFileError(
                f"{path}: key '{key}': an lm-eval feature Supersede does not support; remove it"
            )
        hint = did_you_mean(str(key), sorted(SUPPORTED_KEYS))
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


def _judge_section(path: Path, config: Mapping[str, Any], metrics: tuple[MetricSpec, ...]) -> None:
    """``judge:`` holds known keys of the right types; ``judge`` is the primary metric or none
    (its value needs both sides of a comparison, which no other metric can share)."""
    names = [m.name for m in metrics]
    if "judge" in names and names[0] != "judge":
        raise TaskFileError(
            f"{path}: key 'metric_list': judge must be the first (primary) metric when listed"
        )
    section = config.get("judge")
    if section is None:
        return
    if not isinstance(section, dict):
        raise TaskFileError(f"{path}: key 'judge': expected a mapping (rubric, api or model, ...)")
    for key, value in section.items():
        if key not in JUDGE_KEYS:
            hint = did_you_mean(str(key), sorted(JUDGE_KEYS))
            raise TaskFileError(f"{path}: key 'judge.{key}': unknown key{hint}")
        if key in ("rubric", "api", "model") and not (isinstance(value, str) and value.strip()):
            raise TaskFileError(f"{path}: key 'judge.{key}': expected a non-empty string")
    if section.get("mode", "pairwise") not in ("pairwise", "reference"):
        raise TaskFileError(f"{path}: key 'judge.mode': expected pairwise or reference")
    if "api" in section and "model" in section:
        raise TaskFileError(
            f"{path}: key 'judge': give api (an api_candidates entry) or model (a Hub id or "
            "folder run by the engine), not both"
        )


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

    env = strict_jinja()
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
