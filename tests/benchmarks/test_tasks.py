"""Task files in lm-eval's YAML format (local-data subset): loading, prompts and clear errors."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.tasks.schema import DEFAULT_MAX_GEN_TOKS, SUPPORTED_KEYS, UNSUPPORTED_KEYS
from benchmarks.tasks.task import Task, load_task
from core.errors import TaskFileError

SHIPPED = (
    Path(__file__).resolve().parents[2]
    / "config"
    / "tasks"
    / "review_sentiment"
    / "review_sentiment.yaml"
)

TEST_DOCS = [
    {
        "question": f"q{i}",
        "answer": ["no", "yes"][i % 2],
        "label": i % 2,
        "aliases": [f"a{i}", "z"],
        "code": f"00{i}",
    }
    for i in range(6)
]
TRAIN_DOCS = [
    {
        "question": f"s{i}",
        "answer": ["no", "yes"][i % 3 == 0],
        "label": int(i % 3 == 0),
        "aliases": [f"b{i}"],
    }
    for i in range(10)
]
DROP = object()
#: lm-eval's default few-shot seed (evaluator's fewshot_random_seed).
LM_EVAL_FEWSHOT_SEED = 1234


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("SUPERSEDE_", "HF_")):
            monkeypatch.delenv(name)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "task"
    folder.mkdir()
    write_jsonl(folder / "test.jsonl", TEST_DOCS)
    write_jsonl(folder / "train.jsonl", TRAIN_DOCS)
    return folder


def mc_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "task": "probe",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": "train.jsonl", "test": "test.jsonl"}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Q: {{question}}\nA:",
        "doc_to_choice": ["no", "yes"],
        "doc_to_target": "label",
    }
    return _apply(config, overrides)


def gen_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "task": "probe_gen",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": "train.jsonl", "test": "test.jsonl"}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "Q: {{question}}\nA:",
        "doc_to_target": "answer",
    }
    return _apply(config, overrides)


def _apply(config: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if value is DROP:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def write_task(folder: Path, config: Any, name: str = "task.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def task_error(path: Path, *fragments: str) -> str:
    """Load ``path``; assert one TaskFileError naming the file and every fragment."""
    with pytest.raises(TaskFileError) as info:
        load_task(path)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --- the shipped task -----------------------------------------------------------------------


def test_shipped_review_sentiment_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # data resolves against the task folder, not the cwd
    task = load_task(SHIPPED)
    assert task.name == "review_sentiment"
    assert task.output_type == "multiple_choice"
    assert len(task.docs) == 300
    assert [m.name for m in task.metrics] == ["acc"]
    assert task.metric.name == "acc"
    assert task.num_fewshot == 0
    lines = (SHIPPED.parent / "test.jsonl").read_text(encoding="utf-8").splitlines()
    expected_docs = [json.loads(line) for line in lines if line.strip()]
    assert list(task.docs) == expected_docs
    requests = task.requests()
    assert len(requests) == 300
    for i, (request, doc) in enumerate(zip(requests, expected_docs, strict=True)):
        assert request.doc_id == i
        assert request.context == f"Review: {doc['text']}\nSentiment:"
        assert request.continuations == (" negative", " positive")
        assert request.choices == ("negative", "positive")
        assert request.gold == doc["label"]
    assert {r.gold for r in requests} == {0, 1}
    assert len(task.requests(limit=5)) == 5


# --- data files -----------------------------------------------------------------------------


def test_relative_data_files_resolve_against_the_task_folder(
    task_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "elsewhere"
    decoy.mkdir()
    write_jsonl(decoy / "test.jsonl", [{"question": "DECOY", "answer": "no", "label": 0}])
    write_jsonl(decoy / "train.jsonl", [{"question": "DECOY", "answer": "no", "label": 0}])
    monkeypatch.chdir(decoy)
    task = load_task(write_task(task_dir, mc_config(fewshot_split="train")))
    assert [d["question"] for d in task.docs] == [d["question"] for d in TEST_DOCS]
    assert len(task.fewshot_docs) == len(TRAIN_DOCS)


def test_relative_task_path_with_subfolder_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "tasks" / "t"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "test.jsonl", TEST_DOCS)
    write_task(folder, mc_config(dataset_kwargs={"data_files": {"test": "data/test.jsonl"}}))
    monkeypatch.chdir(tmp_path)
    task = load_task(Path("tasks/t/task.yaml"))
    assert len(task.docs) == len(TEST_DOCS)


def test_absolute_data_files(task_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "data_elsewhere"
    other.mkdir()
    absolute = write_jsonl(other / "eval.jsonl", TEST_DOCS[:3])
    task = load_task(
        write_task(task_dir, mc_config(dataset_kwargs={"data_files": {"test": str(absolute)}}))
    )
    assert [d["question"] for d in task.docs] == ["q0", "q1", "q2"]


def test_plain_string_data_files_is_the_train_split(task_dir: Path) -> None:
    config = mc_config(dataset_kwargs={"data_files": "test.jsonl"}, test_split="train")
    task = load_task(write_task(task_dir, config))
    assert len(task.docs) == len(TEST_DOCS)
    # ... and only "train" exists
    task_error(
        write_task(task_dir, mc_config(dataset_kwargs={"data_files": "test.jsonl"})),
        "'test_split'",
        "'test'",
        "train",
    )


def test_list_of_files_and_glob_are_concatenated(task_dir: Path) -> None:
    write_jsonl(task_dir / "part-1.jsonl", TEST_DOCS[:2])
    write_jsonl(task_dir / "part-2.jsonl", TEST_DOCS[2:5])
    listed = load_task(
        write_task(
            task_dir,
            mc_config(dataset_kwargs={"data_files": {"test": ["part-2.jsonl", "part-1.jsonl"]}}),
        )
    )
    assert [d["question"] for d in listed.docs] == ["q2", "q3", "q4", "q0", "q1"]
    globbed = load_task(
        write_task(task_dir, mc_config(dataset_kwargs={"data_files": {"test": "part-*.jsonl"}}))
    )
    assert [d["question"] for d in globbed.docs] == ["q0", "q1", "q2", "q3", "q4"]


def test_json_array_file(task_dir: Path) -> None:
    (task_dir / "array.json").write_text(json.dumps(TEST_DOCS[:4], indent=2), encoding="utf-8")
    config = mc_config(dataset_kwargs={"data_files": {"test": "array.json"}})
    task = load_task(write_task(task_dir, config))
    assert list(task.docs) == TEST_DOCS[:4]


def test_json_object_with_field(task_dir: Path) -> None:
    (task_dir / "wrapped.json").write_text(
        json.dumps({"version": 2, "data": TEST_DOCS[:3]}), encoding="utf-8"
    )
    config = mc_config(dataset_kwargs={"data_files": {"test": "wrapped.json"}, "field": "data"})
    task = load_task(write_task(task_dir, config))
    assert list(task.docs) == TEST_DOCS[:3]
    wrong = mc_config(dataset_kwargs={"data_files": {"test": "wrapped.json"}, "field": "rows"})
    task_error(write_task(task_dir, wrong), "'dataset_kwargs.data_files.test'", "wrapped.json")


def test_csv_numeric_columns_give_int_labels(task_dir: Path) -> None:
    (task_dir / "test.csv").write_text(
        'question,label,score\nfirst,1,0.5\n"with, comma",0,2\n', encoding="utf-8"
    )
    config = mc_config(dataset_path="csv", dataset_kwargs={"data_files": {"test": "test.csv"}})
    task = load_task(write_task(task_dir, config))
    assert list(task.docs) == [
        {"question": "first", "label": 1, "score": 0.5},
        {"question": "with, comma", "label": 0, "score": 2},
    ]
    requests = task.requests()
    assert [r.gold for r in requests] == [1, 0]
    assert requests[1].context == "Q: with, comma\nA:"


def test_jsonl_with_bom_and_blank_lines(task_dir: Path) -> None:
    body = "\n".join(json.dumps(d) for d in TEST_DOCS[:2])
    (task_dir / "bom.jsonl").write_bytes(("\ufeff" + body + "\n\n\n").encode("utf-8"))
    config = mc_config(dataset_kwargs={"data_files": {"test": "bom.jsonl"}})
    assert list(load_task(write_task(task_dir, config)).docs) == TEST_DOCS[:2]


# --- prompts --------------------------------------------------------------------------------


def test_doc_to_target_choice_text_maps_to_its_index(task_dir: Path) -> None:
    task = load_task(write_task(task_dir, mc_config(doc_to_target="answer")))
    expected = [["no", "yes"].index(d["answer"]) for d in TEST_DOCS]
    assert [r.gold for r in task.requests()] == expected


def test_digit_string_template_target_becomes_int_with_choices(task_dir: Path) -> None:
    task = load_task(write_task(task_dir, mc_config(doc_to_target="{{label}}")))
    golds = [r.gold for r in task.requests()]
    assert golds == [d["label"] for d in TEST_DOCS]
    assert all(type(g) is int for g in golds)
    # without doc_to_choice the rendered digits stay text (leading zeros kept)
    gen = load_task(write_task(task_dir, gen_config(doc_to_target="{{code}}")))
    assert [r.gold for r in gen.requests()] == [d["code"] for d in TEST_DOCS]


def test_integer_target_is_a_fixed_choice_index(task_dir: Path) -> None:
    task = load_task(write_task(task_dir, mc_config(doc_to_target=1)))
    assert {r.gold for r in task.requests()} == {1}


def test_doc_to_choice_as_field_name(task_dir: Path) -> None:
    rows = [
        {"q": "colour?", "options": ["red", "green", "blue"], "gold": 2},
        {"q": "shape?", "options": ["circle", "square"], "gold": 0},
    ]
    write_jsonl(task_dir / "fields.jsonl", rows)
    config = mc_config(
        dataset_kwargs={"data_files": {"test": "fields.jsonl"}},
        doc_to_text="{{q}}",
        doc_to_choice="options",
        doc_to_target="gold",
    )
    requests = load_task(write_task(task_dir, config)).requests()
    assert requests[0].choices == ("red", "green", "blue")
    assert requests[0].continuations == (" red", " green", " blue")
    assert requests[0].gold == 2
    assert requests[1].choices == ("circle", "square")
    assert requests[1].gold == 0


def test_doc_to_choice_as_jinja_list_literal(task_dir: Path) -> None:
    rows = [{"q": "pick", "a": "alpha", "b": "beta's", "gold": "beta's"}]
    write_jsonl(task_dir / "tmpl.jsonl", rows)
    config = mc_config(
        dataset_kwargs={"data_files": {"test": "tmpl.jsonl"}},
        doc_to_text="{{q}}",
        doc_to_choice="{{ [a, b] }}",
        doc_to_target="gold",
    )
    request = load_task(write_task(task_dir, config)).requests()[0]
    assert request.choices == ("alpha", "beta's")
    assert request.gold == 1


def test_doc_to_choice_template_that_is_not_a_list_is_an_error(task_dir: Path) -> None:
    path = write_task(task_dir, mc_config(doc_to_choice="{{ question }}"))
    task_error(path, "'doc_to_choice'", "not a list literal")


def test_doc_to_choice_as_yaml_list(task_dir: Path) -> None:
    config = mc_config(doc_to_choice=["No", "Yes", "Maybe"])
    request = load_task(write_task(task_dir, config)).requests()[1]
    assert request.choices == ("No", "Yes", "Maybe")
    assert request.continuations == (" No", " Yes", " Maybe")
    assert request.gold == TEST_DOCS[1]["label"]


def test_doc_to_text_as_field_name(task_dir: Path) -> None:
    task = load_task(write_task(task_dir, mc_config(doc_to_text="question")))
    assert [r.context for r in task.requests()] == [d["question"] for d in TEST_DOCS]


def test_target_delimiter_and_description(task_dir: Path) -> None:
    config = mc_config(target_delimiter="\n=> ", description="Answer yes or no.\n\n")
    request = load_task(write_task(task_dir, config)).requests()[0]
    assert request.continuations == ("\n=> no", "\n=> yes")
    assert request.context == "Answer yes or no.\n\nQ: q0\nA:"


def test_description_is_a_template(task_dir: Path) -> None:
    config = mc_config(description="About {{question}}: ")
    requests = load_task(write_task(task_dir, config)).requests()
    assert requests[2].context == "About q2: Q: q2\nA:"


def test_empty_target_delimiter(task_dir: Path) -> None:
    request = load_task(write_task(task_dir, mc_config(target_delimiter=""))).requests()[0]
    assert request.continuations == ("no", "yes")


def _expected_fewshot_contexts(
    docs: list[dict[str, Any]],
    pool: list[dict[str, Any]],
    n: int,
    target_delimiter: str = " ",
    fewshot_delimiter: str = "\n\n",
    description: str = "",
) -> list[str]:
    # lm-eval 0.4: one Random(1234) drawn from in document order; each shot is
    # doc_to_text + target_delimiter + answer text + fewshot_delimiter.
    rng = random.Random(LM_EVAL_FEWSHOT_SEED)
    contexts = []
    for doc in docs:
        shots = rng.sample(pool, n)
        body = "".join(
            f"Q: {s['question']}\nA:"
            + target_delimiter
            + ["no", "yes"][s["label"]]
            + fewshot_delimiter
            for s in shots
        )
        contexts.append(description + body + f"Q: {doc['question']}\nA:")
    return contexts


def test_fewshot_contexts_are_built_like_lm_eval(task_dir: Path) -> None:
    path = write_task(task_dir, mc_config(num_fewshot=2, fewshot_split="train"))
    task = load_task(path)
    assert task.num_fewshot == 2
    contexts = [r.context for r in task.requests()]
    assert contexts == _expected_fewshot_contexts(TEST_DOCS, TRAIN_DOCS, 2)
    # two shots each, drawn from the train split, different documents get different draws
    for context in contexts:
        assert context.count("\n\n") == 2
        assert context.count("Q: s") == 2
    assert len(set(contexts)) > 1
    # deterministic across loads and across calls
    assert [r.context for r in load_task(path).requests()] == contexts
    assert [r.context for r in task.requests()] == contexts


def test_fewshot_with_custom_delimiters_and_description(task_dir: Path) -> None:
    config = mc_config(
        num_fewshot=3,
        fewshot_split="train",
        target_delimiter=" -> ",
        fewshot_delimiter="\n###\n",
        description="Judge.\n",
    )
    contexts = [r.context for r in load_task(write_task(task_dir, config)).requests()]
    assert contexts == _expected_fewshot_contexts(
        TEST_DOCS, TRAIN_DOCS, 3, " -> ", "\n###\n", "Judge.\n"
    )


def test_fewshot_from_training_split_when_no_fewshot_split(task_dir: Path) -> None:
    config = mc_config(num_fewshot=1, training_split="train")
    contexts = [r.context for r in load_task(write_task(task_dir, config)).requests()]
    assert contexts == _expected_fewshot_contexts(TEST_DOCS, TRAIN_DOCS, 1)


def test_fewshot_from_the_scored_split_never_shows_the_document_itself(task_dir: Path) -> None:
    config = mc_config(num_fewshot=2, fewshot_split="test")
    requests = load_task(write_task(task_dir, config)).requests()
    for request, doc in zip(requests, TEST_DOCS, strict=True):
        shots, _, question = request.context.rpartition("\n\n")
        assert question == f"Q: {doc['question']}\nA:"
        assert request.context.count("Q: ") == 3
        assert f"Q: {doc['question']}\n" not in shots + "\n"


def test_generate_until_defaults(task_dir: Path) -> None:
    task = load_task(write_task(task_dir, gen_config()))
    assert task.output_type == "generate_until"
    assert task.until == ("\n\n",)
    assert task.max_gen_toks == DEFAULT_MAX_GEN_TOKS == 256
    assert task.metric.name == "exact_match"
    request = task.requests()[1]
    assert request.context == "Q: q1\nA:"
    assert request.gold == "yes"
    assert request.continuations == ()


def test_generate_until_default_stop_is_the_fewshot_delimiter(task_dir: Path) -> None:
    task = load_task(write_task(task_dir, gen_config(fewshot_delimiter="\n---\n")))
    assert task.until == ("\n---\n",)
    # also when generation_kwargs is given without until (lm-eval 0.4 does the same)
    task = load_task(write_task(task_dir, gen_config(generation_kwargs={"max_gen_toks": 9})))
    assert task.until == ("\n\n",)
    assert task.max_gen_toks == 9


@pytest.mark.parametrize(("until", "expected"), [(["\n", "Q:"], ("\n", "Q:")), (".", (".",))])
def test_generate_until_explicit_until(
    task_dir: Path, until: Any, expected: tuple[str, ...]
) -> None:
    config = gen_config(
        generation_kwargs={
            "until": until,
            "max_gen_toks": 32,
            "do_sample": False,
            "temperature": 0.0,
        }
    )
    task = load_task(write_task(task_dir, config))
    assert task.until == expected
    assert task.max_gen_toks == 32


def test_generate_gold_list_and_choice_text(task_dir: Path) -> None:
    listed = load_task(write_task(task_dir, gen_config(doc_to_target="aliases"))).requests()
    assert listed[3].gold == ("a3", "z")
    via_choice = load_task(
        write_task(
            task_dir, gen_config(doc_to_choice=["negative", "positive"], doc_to_target="label")
        )
    ).requests()
    assert [r.gold for r in via_choice] == [["negative", "positive"][d["label"]] for d in TEST_DOCS]


def test_exact_match_options_are_kept(task_dir: Path) -> None:
    config = gen_config(
        metric_list=[
            {
                "metric": "exact_match",
                "aggregation": "mean",
                "higher_is_better": True,
                "ignore_case": True,
                "ignore_punctuation": True,
                "regexes_to_ignore": ["^ +"],
            },
            {"metric": "f1"},
        ]
    )
    task = load_task(write_task(task_dir, config))
    assert [m.name for m in task.metrics] == ["exact_match", "f1"]
    assert dict(task.metric.options) == {
        "ignore_case": True,
        "ignore_punctuation": True,
        "regexes_to_ignore": ["^ +"],
    }
    assert dict(task.metrics[1].options) == {}


def test_lm_eval_bookkeeping_keys_are_accepted(task_dir: Path) -> None:
    config = mc_config(
        tag=["sentiment"],
        metadata={"version": 1.0},
        repeats=1,
        should_decontaminate=False,
        dataset_name="default",
    )
    assert load_task(write_task(task_dir, config)).name == "probe"


# --- errors ---------------------------------------------------------------------------------


def test_unknown_key_with_suggestion(task_dir: Path) -> None:
    config = mc_config(doc_to_txt="{{question}}")
    task_error(
        write_task(task_dir, config), "'doc_to_txt'", "unknown key", "did you mean 'doc_to_text'?"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("process_docs", "utils.process_docs"),
        ("filter_list", [{"name": "strict", "filter": [{"function": "take_first"}]}]),
        ("fewshot_config", {"sampler": "first_n"}),
    ],
)
def test_unsupported_lm_eval_key(task_dir: Path, key: str, value: Any) -> None:
    assert key in UNSUPPORTED_KEYS
    task_error(write_task(task_dir, mc_config(**{key: value})), f"'{key}'", "does not support")


def test_function_tag_is_refused(task_dir: Path) -> None:
    path = task_dir / "task.yaml"
    text = yaml.safe_dump(mc_config(doc_to_text=DROP), sort_keys=False)
    path.write_text(text + "doc_to_text: !function utils.doc_to_text\n", encoding="utf-8")
    task_error(path, "!function", "not supported", "Jinja2")


def test_broken_jinja_syntax(task_dir: Path) -> None:
    path = write_task(task_dir, mc_config(doc_to_text="Q: {{ question "))
    task_error(path, "'doc_to_text'", "broken Jinja2 template", "line 1")


def test_undefined_template_variable_fails_at_load(task_dir: Path) -> None:
    path = write_task(task_dir, mc_config(doc_to_text="Q: {{ questoin }}"))
    task_error(path, "'doc_to_text'", "'questoin' is undefined")


def test_template_failure_in_a_later_document_names_key_and_document(task_dir: Path) -> None:
    write_jsonl(task_dir / "ragged.jsonl", [{"question": "ok", "label": 0}, {"label": 1}])
    config = mc_config(dataset_kwargs={"data_files": {"test": "ragged.jsonl"}})
    task = load_task(write_task(task_dir, config))  # the first document renders
    with pytest.raises(TaskFileError) as info:
        task.requests()
    message = str(info.value)
    assert str(task.path) in message
    assert "'doc_to_text'" in message and "document 1" in message


def test_missing_data_file(task_dir: Path) -> None:
    config = mc_config(dataset_kwargs={"data_files": {"test": "nope.jsonl"}})
    task_error(
        write_task(task_dir, config), "'dataset_kwargs.data_files.test'", "nope.jsonl", "not found"
    )


def test_glob_matching_nothing(task_dir: Path) -> None:
    config = mc_config(dataset_kwargs={"data_files": {"test": "none-*.jsonl"}})
    task_error(write_task(task_dir, config), "'dataset_kwargs.data_files.test'", "not found")


@pytest.mark.parametrize("dataset_path", ["super_glue", "parquet", None])
def test_dataset_path_must_be_json_or_csv(task_dir: Path, dataset_path: Any) -> None:
    config = mc_config(dataset_path=dataset_path)
    task_error(write_task(task_dir, config), "'dataset_path'", repr(dataset_path))


def test_missing_data_files(task_dir: Path) -> None:
    task_error(
        write_task(task_dir, mc_config(dataset_kwargs=DROP)),
        "'dataset_kwargs.data_files'",
        "required",
    )


def test_unsupported_dataset_kwargs(task_dir: Path) -> None:
    config = mc_config(dataset_kwargs={"data_files": {"test": "test.jsonl"}, "split": "x"})
    task_error(write_task(task_dir, config), "'dataset_kwargs.split'")


def test_test_split_not_in_data_files(task_dir: Path) -> None:
    task_error(
        write_task(task_dir, mc_config(test_split="validation")),
        "'test_split'",
        "'validation'",
        "test, train",
    )


def test_test_split_required(task_dir: Path) -> None:
    task_error(write_task(task_dir, mc_config(test_split=DROP)), "'test_split'", "required")


def test_validation_split_is_scored_when_no_test_split(task_dir: Path) -> None:
    config = mc_config(test_split=DROP, validation_split="train")
    assert len(load_task(write_task(task_dir, config)).docs) == len(TRAIN_DOCS)


def test_empty_test_split(task_dir: Path) -> None:
    (task_dir / "empty.jsonl").write_text("", encoding="utf-8")
    config = mc_config(dataset_kwargs={"data_files": {"test": "empty.jsonl"}})
    task_error(write_task(task_dir, config), "'test'", "no documents")


def test_invalid_json_lines(task_dir: Path) -> None:
    (task_dir / "bad.jsonl").write_text('{"question": "q"}\n{oops\n', encoding="utf-8")
    config = mc_config(dataset_kwargs={"data_files": {"test": "bad.jsonl"}})
    task_error(
        write_task(task_dir, config),
        "'dataset_kwargs.data_files.test'",
        "bad.jsonl",
        "not valid JSON",
    )


def test_target_not_among_choices(task_dir: Path) -> None:
    task_error(
        write_task(task_dir, mc_config(doc_to_target="maybe")),
        "'doc_to_target'",
        "'maybe'",
        "not one of its choices",
    )


@pytest.mark.parametrize("target", [2, -1, "{{ label + 5 }}"])
def test_target_index_out_of_range(task_dir: Path, target: Any) -> None:
    task_error(
        write_task(task_dir, mc_config(doc_to_target=target)),
        "'doc_to_target'",
        "not an index into its 2 choices",
    )


def test_multiple_choice_needs_choices(task_dir: Path) -> None:
    task_error(write_task(task_dir, mc_config(doc_to_choice=DROP)), "'doc_to_choice'", "required")


@pytest.mark.parametrize("key", ["task", "doc_to_text", "doc_to_target"])
def test_required_keys(task_dir: Path, key: str) -> None:
    task_error(write_task(task_dir, mc_config(**{key: DROP})), f"'{key}'", "required")


@pytest.mark.parametrize("output_type", ["loglikelihood", "loglikelihood_rolling", "generate"])
def test_unsupported_output_type(task_dir: Path, output_type: str) -> None:
    task_error(
        write_task(task_dir, mc_config(output_type=output_type)),
        "'output_type'",
        repr(output_type),
        "not supported",
    )


@pytest.mark.parametrize(
    ("config", "metric", "output_type"),
    [
        (mc_config, "exact_match", "multiple_choice"),
        (gen_config, "acc", "generate_until"),
        (gen_config, "bleu", "generate_until"),
    ],
)
def test_metric_not_available_for_output_type(
    task_dir: Path, config: Any, metric: str, output_type: str
) -> None:
    path = write_task(task_dir, config(metric_list=[{"metric": metric}]))
    task_error(path, "'metric_list[0].metric'", repr(metric), f"not available for {output_type}")


def test_metric_option_of_another_metric(task_dir: Path) -> None:
    path = write_task(task_dir, mc_config(metric_list=[{"metric": "acc", "ignore_case": True}]))
    task_error(path, "'metric_list[0].ignore_case'", "not an option of acc")


def test_metric_aggregation_other_than_mean(task_dir: Path) -> None:
    path = write_task(task_dir, gen_config(metric_list=[{"metric": "f1", "aggregation": "median"}]))
    task_error(path, "'metric_list[0].aggregation'", "'mean'")


def test_do_sample_true(task_dir: Path) -> None:
    path = write_task(task_dir, gen_config(generation_kwargs={"do_sample": True}))
    task_error(path, "'generation_kwargs.do_sample'", "must be false")


def test_nonzero_temperature(task_dir: Path) -> None:
    path = write_task(task_dir, gen_config(generation_kwargs={"temperature": 0.7}))
    task_error(path, "'generation_kwargs.temperature'")


def test_unknown_generation_kwarg(task_dir: Path) -> None:
    path = write_task(task_dir, gen_config(generation_kwargs={"top_p": 0.9}))
    task_error(path, "'generation_kwargs.top_p'", "not supported")


@pytest.mark.parametrize("until", [[""], [1], {"a": "b"}])
def test_bad_until(task_dir: Path, until: Any) -> None:
    path = write_task(task_dir, gen_config(generation_kwargs={"until": until}))
    task_error(path, "'generation_kwargs.until'")


@pytest.mark.parametrize("max_gen_toks", [0, -3, "many"])
def test_bad_max_gen_toks(task_dir: Path, max_gen_toks: Any) -> None:
    path = write_task(task_dir, gen_config(generation_kwargs={"max_gen_toks": max_gen_toks}))
    task_error(path, "'generation_kwargs.max_gen_toks'")


@pytest.mark.parametrize("pattern", ["(", "[a-", "*x"])
def test_bad_regex_in_regexes_to_ignore(task_dir: Path, pattern: str) -> None:
    path = write_task(
        task_dir,
        gen_config(metric_list=[{"metric": "exact_match", "regexes_to_ignore": ["ok", pattern]}]),
    )
    task_error(path, "'metric_list[0].regexes_to_ignore'", "bad regex", repr(pattern))


def test_invalid_yaml_names_line(task_dir: Path) -> None:
    path = task_dir / "task.yaml"
    path.write_text("task: probe\ndataset_path: json\ndoc_to_text: [unclosed\n", encoding="utf-8")
    task_error(path, "not valid YAML", "line 4")


def test_non_utf8_task_file(task_dir: Path) -> None:
    path = task_dir / "task.yaml"
    path.write_bytes(b"task: caf\xe9\n")
    task_error(path, "not UTF-8")


def test_non_utf8_data_file(task_dir: Path) -> None:
    (task_dir / "latin1.jsonl").write_bytes(b'{"question": "caf\xe9", "label": 0}\n')
    config = mc_config(dataset_kwargs={"data_files": {"test": "latin1.jsonl"}})
    task_error(
        write_task(task_dir, config),
        "'dataset_kwargs.data_files.test'",
        "latin1.jsonl",
        "not UTF-8",
    )


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", ""])
def test_task_file_must_be_a_mapping(task_dir: Path, text: str) -> None:
    path = task_dir / "task.yaml"
    path.write_text(text, encoding="utf-8")
    task_error(path, "expected a mapping")


def test_missing_task_file(tmp_path: Path) -> None:
    task_error(tmp_path / "absent.yaml", "cannot be read")


@pytest.mark.parametrize(
    ("overrides", "split"),
    [
        ({"num_fewshot": 2, "fewshot_split": "dev"}, "'dev'"),
        ({"num_fewshot": 1, "training_split": "dev"}, "'dev'"),
    ],
)
def test_num_fewshot_without_a_usable_fewshot_split(
    task_dir: Path, overrides: dict[str, Any], split: str
) -> None:
    task_error(write_task(task_dir, mc_config(**overrides)), "'fewshot_split'", split)


@pytest.mark.parametrize("value", [-1, "two", 1.5])
def test_bad_num_fewshot(task_dir: Path, value: Any) -> None:
    config = mc_config(num_fewshot=value, fewshot_split="train")
    task_error(write_task(task_dir, config), "'num_fewshot'")


def test_repeats_other_than_one(task_dir: Path) -> None:
    task_error(write_task(task_dir, mc_config(repeats=5)), "'repeats'")


# --- hashes ---------------------------------------------------------------------------------


def test_content_hash_follows_the_yaml_bytes(task_dir: Path) -> None:
    path = write_task(task_dir, mc_config())
    first = load_task(path)
    assert first.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_task(path).content_hash == first.content_hash
    path.write_text(path.read_text(encoding="utf-8") + "# a comment\n", encoding="utf-8")
    assert load_task(path).content_hash != first.content_hash


def test_data_hash_changes_with_the_data_and_only_then(task_dir: Path, tmp_path: Path) -> None:
    path = write_task(task_dir, mc_config())
    base = load_task(path)
    # YAML-only change: same data
    write_task(task_dir, mc_config(description="Now with a description. "))
    changed_yaml = load_task(path)
    assert changed_yaml.content_hash != base.content_hash
    assert changed_yaml.data_hash == base.data_hash
    # rewriting identical bytes and moving the folder keep it
    write_jsonl(task_dir / "test.jsonl", TEST_DOCS)
    assert load_task(path).data_hash == base.data_hash
    moved = tmp_path / "moved"
    task_dir.rename(moved)
    assert load_task(moved / "task.yaml").data_hash == base.data_hash
    # one changed document changes it, and so does the few-shot split's data
    write_jsonl(moved / "test.jsonl", [*TEST_DOCS[:-1], {**TEST_DOCS[-1], "question": "other"}])
    after_test_edit = load_task(moved / "task.yaml").data_hash
    assert after_test_edit != base.data_hash
    write_jsonl(moved / "train.jsonl", TRAIN_DOCS[:-1])
    assert load_task(moved / "task.yaml").data_hash not in (base.data_hash, after_test_edit)


def test_data_hash_depends_on_split_assignment(task_dir: Path) -> None:
    # the same two files with the splits swapped are different data
    a = load_task(
        write_task(
            task_dir,
            mc_config(
                dataset_kwargs={"data_files": {"test": "test.jsonl", "train": "train.jsonl"}}
            ),
        )
    )
    b = load_task(
        write_task(
            task_dir,
            mc_config(
                dataset_kwargs={"data_files": {"test": "train.jsonl", "train": "test.jsonl"}}
            ),
        )
    )
    assert a.data_hash != b.data_hash


# --- regressions (bugs found and fixed) --------------------------------------------------

_NEVER_A_TRACEBACK = "must raise TaskFileError (never another exception)"


def test_bug_output_type_list(task_dir: Path) -> None:
    task_error(write_task(task_dir, mc_config(output_type=["multiple_choice"])), "'output_type'")


def test_bug_metric_name_list(task_dir: Path) -> None:
    path = write_task(task_dir, mc_config(metric_list=[{"metric": ["acc"]}]))
    task_error(path, "'metric_list[0].metric'")


def test_bug_doc_to_target_mapping(task_dir: Path) -> None:
    task_error(write_task(task_dir, mc_config(doc_to_target={"a": 1})), "'doc_to_target'")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"test_split": ["test"]}, "test_split"),
        ({"test_split": DROP, "validation_split": ["test"]}, "validation_split"),
        ({"num_fewshot": 1, "fewshot_split": ["train"]}, "fewshot_split"),
        ({"num_fewshot": 1, "fewshot_split": {"a": 1}}, "fewshot_split"),
        ({"num_fewshot": 1, "training_split": ["train"]}, "training_split"),
    ],
)
def test_bug_split_name_not_a_string(task_dir: Path, overrides: dict[str, Any], key: str) -> None:
    task_error(write_task(task_dir, mc_config(**overrides)), f"'{key}'")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"target_delimiter": 5}, "target_delimiter"),
        (
            {
                "fewshot_delimiter": 5,
                "num_fewshot": 1,
                "fewshot_split": "train",
                "generation_kwargs": {"until": ["\n"]},
            },
            "fewshot_delimiter",
        ),
    ],
)
def test_bug_delimiter_not_a_string(task_dir: Path, overrides: dict[str, Any], key: str) -> None:
    task_error(write_task(task_dir, mc_config(**overrides)), f"'{key}'")


@pytest.mark.parametrize(
    ("data_files", "test_split"),
    [({1: "test.jsonl"}, "test"), ({1: "train.jsonl", "test": "test.jsonl"}, "test")],
)
def test_bug_non_string_split_names(task_dir: Path, data_files: Any, test_split: Any) -> None:
    config = mc_config(dataset_kwargs={"data_files": data_files}, test_split=test_split)
    task_error(write_task(task_dir, config), "'dataset_kwargs.data_files")


def test_bug_non_string_test_split(task_dir: Path) -> None:
    config = mc_config(dataset_kwargs={"data_files": {"test": "test.jsonl"}}, test_split=1)
    task_error(write_task(task_dir, config), "'test_split'", "expected text")


@pytest.mark.parametrize("target", ["answer", 7])
def test_bug_generate_until_choice_target(task_dir: Path, target: Any) -> None:
    config = gen_config(doc_to_choice=["no", "yes"], doc_to_target=target)
    task_error(write_task(task_dir, config), "'doc_to_target'")


@pytest.mark.parametrize(("num_fewshot", "split"), [(11, "train"), (6, "test")])
def test_bug_num_fewshot_larger_than_pool(task_dir: Path, num_fewshot: int, split: str) -> None:
    config = mc_config(num_fewshot=num_fewshot, fewshot_split=split)
    task_error(write_task(task_dir, config), "'num_fewshot'")


@pytest.mark.parametrize("case", ["bad label in a shot", "fixed target out of range"])
def test_bug_fewshot_target_index_out_of_range(task_dir: Path, case: str) -> None:
    if case == "bad label in a shot":
        write_jsonl(task_dir / "train.jsonl", [{**d, "label": 7} for d in TRAIN_DOCS])
        config = mc_config(num_fewshot=1, fewshot_split="train")
    else:
        config = mc_config(num_fewshot=1, fewshot_split="train", doc_to_target=5)
    task_error(write_task(task_dir, config), "'doc_to_target'")


@pytest.mark.parametrize("body", ["question,label\nshort\n", "question,label\na,1,extra\n"])
def test_bug_ragged_csv_row(task_dir: Path, body: str) -> None:
    (task_dir / "ragged.csv").write_text(body, encoding="utf-8")
    config = mc_config(dataset_path="csv", dataset_kwargs={"data_files": {"test": "ragged.csv"}})
    task_error(write_task(task_dir, config), "'dataset_kwargs.data_files.test'", "ragged.csv")


def test_bug_csv_quoted_multiline_field(task_dir: Path) -> None:
    (task_dir / "multi.csv").write_text(
        'question,label\n"line one\nline two",1\n"crlf\r\nfield",0\n',
        encoding="utf-8",
        newline="",
    )
    config = mc_config(dataset_path="csv", dataset_kwargs={"data_files": {"test": "multi.csv"}})
    task = load_task(write_task(task_dir, config))
    assert task.docs[0]["question"] == "line one\nline two"


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"])
def test_bug_jsonl_with_unicode_line_separator_in_a_string(task_dir: Path, char: str) -> None:
    rows = [{"question": f"one{char}two", "label": 0}, {"question": "three", "label": 1}]
    (task_dir / "u.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    config = mc_config(dataset_kwargs={"data_files": {"test": "u.jsonl"}})
    task = load_task(write_task(task_dir, config))
    assert task.docs[0]["question"] == f"one{char}two"


def test_bug_csv_underscore_digits_stay_text(task_dir: Path) -> None:
    (task_dir / "u.csv").write_text("question,label,code\nq,1,1_000\n", encoding="utf-8")
    config = mc_config(dataset_path="csv", dataset_kwargs={"data_files": {"test": "u.csv"}})
    assert load_task(write_task(task_dir, config)).docs[0]["code"] == "1_000"


def test_bug_function_tag_error_names_key_or_line(task_dir: Path) -> None:
    path = task_dir / "task.yaml"
    text = yaml.safe_dump(mc_config(doc_to_text=DROP), sort_keys=False)
    path.write_text(text + "doc_to_text: !function utils.doc_to_text\n", encoding="utf-8")
    line = len(text.splitlines()) + 1
    message = task_error(path, "!function")
    assert "'doc_to_text'" in message or f"line {line}" in message


def test_bug_templates_cannot_reach_python_internals(task_dir: Path) -> None:
    path = write_task(
        task_dir, mc_config(doc_to_text="{{ cycler.__init__.__globals__.os.getcwd() }}")
    )
    try:
        task = load_task(path)
    except TaskFileError:
        return  # refused: what a sandbox would do
    assert os.getcwd() not in task.requests(limit=1)[0].context


# --- fuzz -----------------------------------------------------------------------------------

_PLAUSIBLE = st.sampled_from(
    [
        "multiple_choice",
        "generate_until",
        "loglikelihood",
        "json",
        "csv",
        "test",
        "train",
        "label",
        "answer",
        "question",
        "{{question}}",
        "{{ label }}",
        "{{ nope }}",
        "{{ x ",
        "test.jsonl",
        "train.jsonl",
        "missing.jsonl",
        "acc",
        "exact_match",
        "f1",
        "mean",
        "",
        " ",
        "\n\n",
        0,
        1,
        2,
        -1,
        True,
        False,
        None,
        3.5,
        ["no", "yes"],
        ["a"],
        [],
        {},
        {"data_files": "test.jsonl"},
        {"metric": "acc"},
        [{"metric": "exact_match"}],
        {"until": ["\n"]},
        {"do_sample": True},
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 300)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
_JUNK = st.recursive(
    _SCALARS | _PLAUSIBLE,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=3)
    ),
    max_leaves=8,
)
_KEYS = [*sorted(SUPPORTED_KEYS | UNSUPPORTED_KEYS), "doc_to_txt", "until", "max_gen_toks"]
_NESTED = ("dataset_kwargs", "generation_kwargs", "metric_list")


def _base(kind: int) -> dict[str, Any]:
    if kind == 0:
        return mc_config(
            num_fewshot=1, fewshot_split="train", description="D ", metric_list=[{"metric": "acc"}]
        )
    return gen_config(
        generation_kwargs={"until": ["\n"], "max_gen_toks": 8},
        metric_list=[{"metric": "exact_match", "ignore_case": True}],
    )


@st.composite
def _mutated_task(draw: st.DrawFn) -> dict[str, Any]:
    config = copy.deepcopy(_base(draw(st.integers(0, 1))))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["drop", "replace", "add", "nested"]))
        keys = sorted(config, key=str)
        if action == "drop" and keys:
            config.pop(draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            config[draw(st.sampled_from(keys))] = draw(_JUNK)
        elif action == "add":
            key = draw(st.sampled_from(_KEYS) | st.text(max_size=10) | st.integers())
            config[key] = draw(_JUNK)
        elif action == "nested":
            outer = draw(st.sampled_from(_NESTED))
            inner = config.get(outer)
            if (
                outer == "metric_list"
                and isinstance(inner, list)
                and inner
                and isinstance(inner[0], dict)
            ):
                inner = inner[0]
            if isinstance(inner, dict):
                key = draw(
                    st.sampled_from(
                        [
                            "data_files",
                            "field",
                            "until",
                            "max_gen_toks",
                            "do_sample",
                            "temperature",
                            "metric",
                            "aggregation",
                            "ignore_case",
                            "regexes_to_ignore",
                            "test",
                        ]
                    )
                    | st.text(max_size=6)
                )
                inner[key] = draw(_JUNK)
    return config


def test_fuzz_bases_are_valid(task_dir: Path) -> None:
    for kind in (0, 1):
        assert isinstance(load_task(write_task(task_dir, _base(kind))), Task)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
    ],
)
@given(config=_mutated_task())
def test_fuzzed_task_files_load_or_raise_task_file_error(task_dir: Path, config: dict) -> None:
    path = write_task(task_dir, config, name="fuzz.yaml")
    try:
        task = load_task(path)
    except TaskFileError as exc:
        assert str(path) in str(exc)
        return
    try:
        requests = task.requests()
    except TaskFileError as exc:
        assert str(path) in str(exc)
        return
    assert len(requests) == len(task.docs)


def test_bug_empty_target_list_is_a_task_file_error(task_dir: Path) -> None:
    # Found by the fuzz test: an empty list of targets used to raise IndexError.
    task_error(write_task(task_dir, gen_config(doc_to_target="[]")), "'doc_to_target'", "empty")
    config = gen_config(doc_to_target="[]", num_fewshot=1, fewshot_split="train")
    task_error(write_task(task_dir, config), "'doc_to_target'", "empty")
