"""The runner: one task scored on one loaded model, with per-example outcomes and run statistics.

It adapts the task's prompts to the model (few-shot count, chat template), drives the batched
:class:`benchmarks.engine.Engine` and hands the outputs to :mod:`benchmarks.scoring`. The scoring
rules, and why they give lm-eval's numbers faster, are in :mod:`benchmarks.engine`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.engine import Engine, Progress, context_length
from benchmarks.latency import measure_latency
from benchmarks.scoring import RunResult, build_result, score_choices, score_texts
from benchmarks.tasks.render import Request, chat_messages, check_chat_prompt
from benchmarks.tasks.task import Task
from config.settings import PromptSettings


def run_task(
    loaded: Any,
    task: Task,
    *,
    limit: int | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    progress: Progress | None = None,
    prompt: PromptSettings | None = None,
    max_prompt_chars: int | None = None,
    latency_sample: int = 0,
    exact: bool = False,
) -> RunResult:
    """Score ``loaded`` (a :class:`benchmarks.models.LoadedModel`) on ``task``.

    ``prompt`` adapts the task's own prompt to the model: another number of few-shot examples,
    and the model's chat template (with an optional system prompt). A prompt the chat template
    renders longer than ``max_prompt_chars`` (or than the model's context allows) is refused.

    ``extra`` holds ``max_prompt_tokens`` and ``max_output_tokens`` (see
    :class:`~benchmarks.engine.Engine`) and, when ``latency_sample`` is positive, ``latency``:
    that many requests served one at a time after the timed run (:mod:`benchmarks.latency`),
    so neither the run statistics nor any score depend on it.

    ``exact`` scores every choice as its own full row instead of sharing each context's KV cache
    across its choices (:mod:`benchmarks.engine`): the same predictions, log-likelihoods equal
    bit for bit to the unshared computation rather than within 1e-5.
    """
    import torch

    if prompt is not None and prompt.num_fewshot is not None:
        task = task.with_num_fewshot(prompt.num_fewshot)
    requests = task.requests(limit)
    if prompt is not None and uses_chat_template(loaded.tokenizer, prompt):
        requests = apply_chat_template(
            requests, loaded.tokenizer, prompt, task, max_chars=max_prompt_chars, loaded=loaded
        )
    engine = Engine(loaded, batch_size, max_length, exact=exact)
    with torch.inference_mode(), loaded.scoring_model():
        engine.warm_up(requests)
    started = time.perf_counter()
    predictions: list[Any]
    with torch.inference_mode(), loaded.scoring_model():
        if task.output_type == "multiple_choice":
            loglikelihoods = engine.loglikelihoods(requests, progress)
            per_metric, predictions = score_choices(task, requests, loglikelihoods)
        else:
            texts = engine.generate(requests, task.until, task.max_gen_toks, progress)
            per_metric, predictions = score_texts(task, requests, texts)
    elapsed = time.perf_counter() - started
    stats = engine.stats(elapsed, len(requests))
    extra: dict[str, Any] = {
        "max_prompt_tokens": engine.max_prompt_tokens,
        "max_output_tokens": engine.max_output_tokens,
    }
    if latency_sample > 0:
        generation = (
            None if task.output_type == "multiple_choice" else (task.until, task.max_gen_toks)
        )
        with torch.inference_mode(), loaded.scoring_model():
            latency = measure_latency(engine, requests, latency_sample, generation=generation)
        if latency is not None:
            extra["latency"] = latency
    return build_result(task, per_metric, predictions, stats, extra)


def uses_chat_template(tokenizer: Any, prompt: PromptSettings) -> bool:
    """``on`` always, ``off`` never, ``auto`` when the tokenizer ships a chat template."""
    if prompt.chat_template == "auto":
        return bool(getattr(tokenizer, "chat_template", None))
    return prompt.chat_template == "on"


def apply_chat_template(
    requests: Sequence[Request],
    tokenizer: Any,
    prompt: PromptSettings,
    task: Task,
    *,
    max_chars: int | None = None,
    loaded: Any = None,
) -> list[Request]:
    """Each context becomes the chat turns of :func:`~benchmarks.tasks.render.chat_messages`
    (system prompt and description, few-shot turns, the question) plus the generation prompt;
    choices then follow the assistant marker directly, without the target delimiter, as lm-eval
    does with ``--apply_chat_template``."""
    delimiter = str(task.config.get("target_delimiter", " "))
    context_tokens = context_length(loaded) if loaded is not None else None
    model = loaded.base.name if loaded is not None else "the model"
    wrapped = []
    for request in requests:
        messages = chat_messages(
            request,
            task.config,
            system_prompt=prompt.system_prompt,
            fewshot_as_multiturn=prompt.fewshot_as_multiturn,
        )
        context = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        if max_chars is not None and context_tokens is not None:
            context = check_chat_prompt(
                str(context), model=model, max_chars=max_chars, context_tokens=context_tokens
            )
        continuations = tuple(c.removeprefix(delimiter) for c in request.continuations)
        wrapped.append(
            dataclasses.replace(request, context=str(context), continuations=continuations)
        )
    return wrapped
