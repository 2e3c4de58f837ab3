"""Who answers the judge's questions: a :class:`Judge` protocol, a hosted judge on an
OpenAI-compatible endpoint, and a local model answering greedily."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import httpx

from benchmarks.api.endpoint import Endpoint
from benchmarks.judge.spec import JudgeSpec

if TYPE_CHECKING:
    from benchmarks.models import LoadedModel, ModelResolver
    from config.settings import RuntimeSettings, Settings


@dataclass(frozen=True)
class JudgeReply:
    """The judge's raw answer to one question, and the tokens it cost."""

    text: str
    input_tokens: int
    output_tokens: int


class Judge(Protocol):
    """Answers one chat question (``[{"role", "content"}, ...]``) deterministically.

    ``ask`` may be called from several threads at once. It raises
    :class:`~core.errors.EndpointRefused` / :class:`~core.errors.EndpointUnavailable` (or another
    :class:`~core.errors.SupersedeError`) when no answer can be had; an answer that is not in
    the asked format is returned as is, for the caller to judge."""

    @property
    def name(self) -> str:
        """Names the judge in messages and warnings."""
        ...

    def ask(self, messages: list[dict[str, str]]) -> JudgeReply:
        """The judge's answer to ``messages``."""
        ...


class ApiJudge:
    """A judge on an OpenAI-compatible endpoint: temperature 0, ``max_tokens`` from the spec,
    the endpoint's own retries on 408/429/5xx; a refusal or a spent retry budget raises the
    endpoint's error. Close it (or use it as a context manager) to release its connections."""

    def __init__(
        self,
        spec: JudgeSpec,
        api_key: str | None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if spec.api is None:
            raise ValueError("ApiJudge needs a spec of kind 'api'")
        self.spec = spec
        self._endpoint = Endpoint(spec.api, api_key, transport)

    @property
    def name(self) -> str:
        """The endpoint's model name."""
        return self.spec.model

    def ask(self, messages: list[dict[str, str]]) -> JudgeReply:
        """One chat completion; the endpoint's errors propagate."""
        reply = self._endpoint.chat(messages, {"max_tokens": self.spec.max_new_tokens})
        return JudgeReply(reply.text, *reply.usage)

    def close(self) -> None:
        """Release the endpoint's connections."""
        self._endpoint.__exit__(None, None, None)

    def __enter__(self) -> ApiJudge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalJudge:
    """A local causal language model answering greedily, one question at a time.

    The question is rendered with the tokenizer's chat template when it has one, and otherwise
    as the messages' contents joined by blank lines. A prompt longer than the model's context
    (less the answer budget) keeps its end.
    """

    def __init__(self, loaded: LoadedModel, *, max_new_tokens: int = 64) -> None:
        self.loaded = loaded
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model: str,
        resolver: ModelResolver,
        runtime: RuntimeSettings,
        *,
        max_new_tokens: int = 64,
    ) -> LocalJudge:
        """Resolve ``model`` (Hub id or folder) under the model policy and load it."""
        from benchmarks.models import load_model

        return cls(load_model(resolver.resolve(model), runtime), max_new_tokens=max_new_tokens)

    @property
    def name(self) -> str:
        """The model's reference and pinned revision."""
        return f"{self.loaded.base.name}@{self.loaded.base.revision}"

    def render(self, messages: list[dict[str, str]]) -> tuple[str, bool]:
        """The text the model continues, and whether the chat template made it (its special
        tokens are then in the text already)."""
        tokenizer = self.loaded.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            return "\n\n".join(message["content"] for message in messages) + "\n\n", False
        try:
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception:  # a template without a system role: the rubric joins the user turn
            text = tokenizer.apply_chat_template(
                _without_system(messages), tokenize=False, add_generation_prompt=True
            )
        return str(text), True

    def ask(self, messages: list[dict[str, str]]) -> JudgeReply:
        """The model's greedy answer, at most ``max_new_tokens`` tokens. Calls take turns: the
        model and its (fast) tokenizer are not safe to share between threads."""
        with self._lock:
            return self._generate(messages)

    def _generate(self, messages: list[dict[str, str]]) -> JudgeReply:
        import torch

        from benchmarks.engine import context_length

        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        text, templated = self.render(messages)
        ids = list(tokenizer(text, add_special_tokens=not templated)["input_ids"])
        ids = ids[-max(1, context_length(self.loaded) - self.max_new_tokens) :]
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        with torch.inference_mode():
            inputs = torch.tensor([ids], dtype=torch.long, device=self.loaded.device)
            generated = model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
            )
        new = generated[0, len(ids) :].tolist()
        answer = str(tokenizer.decode(new, skip_special_tokens=True))
        return JudgeReply(answer, len(ids), len(new))


def _without_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The system turns' text moved to the start of the first user turn."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system and rest:
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest


def open_judge(
    spec: JudgeSpec, settings: Settings, *, transport: httpx.BaseTransport | None = None
) -> ApiJudge | LocalJudge:
    """The judge ``spec`` describes: an :class:`ApiJudge` with the key from the variable its
    ``api_key_env`` names, or a :class:`LocalJudge` resolved and loaded under ``settings``' Hub
    policy and runtime. Close an :class:`ApiJudge` when done."""
    from config.settings import api_key

    if spec.api is not None:
        return ApiJudge(spec, api_key(spec.api), transport=transport)
    from benchmarks.models import ModelResolver

    token = settings.secrets.hf_token
    resolver = ModelResolver(settings.hub, token.get_secret_value() if token else None)
    return LocalJudge.load(
        spec.model, resolver, settings.runtime, max_new_tokens=spec.max_new_tokens
    )
