"""The batched engine under the runner: log-likelihoods of choices (multiple_choice) and greedy
continuations (generate_until), on a loaded model, with timing and token counts.

Log-likelihood follows lm-eval's rule exactly (so scores match): trailing context spaces move to
the continuation, ``context + continuation`` is encoded whole and split at the context's length,
over-long inputs are cut from the left, and a choice's score is the sum of its tokens' log-probs;
``acc`` takes the argmax. What makes it faster than lm-eval, without changing any number:

* inputs are right-padded causal batches sorted longest first, so padding never reaches a real
  token and no attention mask is needed;
* choices that are one token after the same context share one forward pass (per document and
  across documents with an identical context);
* logits are computed only at the positions that predict continuation tokens
  (``logits_to_keep``), not over the whole sequence, and log-softmax runs on those rows only.
"""

from __future__ import annotations

import copy
import math
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.scoring import RunStats
from benchmarks.tasks.render import Request

#: Called with the number of documents just finished.
Progress = Callable[[int], None]


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.max_memory_allocated()) / 2**20
    # ru_maxrss is in KiB on Linux: the process's peak resident set.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Engine:
    """Batched forward passes and generation on one loaded model, with run statistics."""

    def __init__(self, loaded: Any, batch_size: int, max_length: int | None) -> None:
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.batch_size = max(1, batch_size)
        self.max_length = max_length or _model_max_length(loaded.model, loaded.tokenizer)
        self.batch_times: list[float] = []
        self._encoded: dict[str, list[int]] = {}
        self.tokens = 0
        #: The longest model input of the run, in tokens: context + continuation when scoring
        #: choices, the prompt when generating. With the next, what a serving KV cache holds
        #: for one sequence.
        self.max_prompt_tokens = 0
        #: The longest continuation (choices) or generated output (generation), in tokens.
        self.max_output_tokens = 0
        self._bos_text = self._prefix_text()
        self._keeps_logits = _accepts_logits_to_keep(self.model)
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()

    def fresh_copy(self) -> Engine:
        """This engine on the same model and settings, with its own empty counters and token
        cache: what the latency pass runs, so it leaves this engine's statistics alone (and
        pays for tokenizing, as a served request does)."""
        clone = copy.copy(self)
        clone.batch_times = []
        clone._encoded = {}
        clone.tokens = clone.max_prompt_tokens = clone.max_output_tokens = 0
        return clone

    def warm_up(self, requests: Sequence[Request]) -> None:
        """One untimed forward pass of a batch's shape: the first pass in a process pays for
        kernel selection and allocation, which would otherwise be charged to the measured run
        (and to the serving cost derived from it)."""
        import torch

        if not requests:
            return
        ids = self.encode(requests[0].context)[-32:] or [self.prefix_token_id]
        rows = min(self.batch_size, len(requests))
        batch = torch.tensor([ids] * rows, dtype=torch.long, device=self.device)
        self.model(input_ids=batch, use_cache=False)

    # ------------------------------------------------------------------ tokenization

    def _prefix_text(self) -> str | None:
        token = self.prefix_token_id
        return str(self.tokenizer.decode([token])) if token is not None else None

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context starts from: BOS, else EOS (as lm-eval)."""
        tok = self.tokenizer
        return int(tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, with the tokenizer's special tokens unless it starts with BOS."""
        cached = self._encoded.get(text)
        if cached is not None:
            return cached
        # lm-eval's rule: the tokenizer's own special-token default, except when the text already
        # starts with the BOS string.
        if self._bos_text and text.startswith(self._bos_text):
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        return list(self.tokenizer.encode(text))

    def prefetch(self, texts: Sequence[str]) -> None:
        """Encode many texts in one batched tokenizer call (same ids as :meth:`encode`)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._encoded))
        for with_bos in (True, False):
            group = [
                t for t in todo if bool(self._bos_text and t.startswith(self._bos_text)) == with_bos
            ]
            if not group:
                continue
            kwargs = {"add_special_tokens": False} if with_bos else {}
            ids = self.tokenizer(group, **kwargs)["input_ids"]
            self._encoded.update(zip(group, (list(i) for i in ids), strict=True))

    @staticmethod
    def split_pair(context: str, continuation: str) -> tuple[str, str]:
        """lm-eval's rule: trailing context spaces move to the front of the continuation."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            return context[:-n_spaces], context[-n_spaces:] + continuation
        return context, continuation

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids, split from one encoding of the whole (lm-eval's rule)."""
        if not context:
            return [self.prefix_token_id], self.encode(continuation)
        context, continuation = self.split_pair(context, continuation)
        whole = self.encode(context + continuation)
        context_enc = self.encode(context)
        return context_enc, whole[len(context_enc) :]

    # ------------------------------------------------------------------ log-likelihood

    def loglikelihoods(
        self, requests: Sequence[Request], progress: Progress | None
    ) -> list[list[float]]:
        """Sum of continuation log-probs for every choice of every request."""
        # One row per distinct input: (tokens, positions to read, target tokens, slots to fill).
        rows: dict[tuple[int, ...], list[tuple[int, list[int], tuple[int, int]]]] = {}
        results: list[list[float]] = [[math.nan] * len(r.continuations) for r in requests]
        texts = []
        for request in requests:
            for continuation in request.continuations:
                if not request.context:
                    texts.append(continuation)
                    continue
                context, moved = self.split_pair(request.context, continuation)
                texts += [context, context + moved]
        self.prefetch(texts)
        for r_i, request in enumerate(requests):
            pairs = [self.encode_pair(request.context, c) for c in request.continuations]
            single = (
                all(len(cont) == 1 for _, cont in pairs) and len({tuple(c) for c, _ in pairs}) == 1
            )
            for c_i, (context_enc, cont_enc) in enumerate(pairs):
                if not cont_enc:
                    raise ValueError(
                        f"document {request.doc_id}: choice {request.continuations[c_i]!r} "
                        "encodes to no tokens"
                    )
                self.max_prompt_tokens = max(
                    self.max_prompt_tokens, min(len(context_enc) + len(cont_enc), self.max_length)
                )
                self.max_output_tokens = max(self.max_output_tokens, len(cont_enc))
                if single:
                    # all choices are one token after this context: the context alone is the row
                    inp = tuple(context_enc[-self.max_length :])
                    rows.setdefault(inp, []).append((len(inp) - 1, cont_enc, (r_i, c_i)))
                else:
                    whole = (context_enc + cont_enc)[-(self.max_length + 1) :]
                    inp = tuple(whole[:-1])
                    start = len(inp) - len(cont_enc)
                    rows.setdefault(inp, []).append((start, cont_enc, (r_i, c_i)))
        ordered = sorted(rows.items(), key=lambda kv: -len(kv[0]))
        done_docs: set[int] = set()
        for start in range(0, len(ordered), self.batch_size):
            batch = ordered[start : start + self.batch_size]
            self._score_batch(batch, results)
            if progress is not None:
                newly = {slot[0] for _, reads in batch for _, _, slot in reads} - done_docs
                finished = {r for r in newly if not any(math.isnan(v) for v in results[r])}
                done_docs |= finished
                if finished:
                    progress(len(finished))
        return results

    def _score_batch(
        self,
        batch: Sequence[tuple[tuple[int, ...], list[tuple[int, list[int], tuple[int, int]]]]],
        results: list[list[float]],
    ) -> None:
        import torch

        t0 = time.perf_counter()
        width = len(batch[0][0])
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        lo, hi = width, 0
        for b, (inp, reads) in enumerate(batch):
            ids[b, : len(inp)] = torch.tensor(inp, dtype=torch.long)
            self.tokens += len(inp)
            for start, cont, _ in reads:
                lo = min(lo, start)
                hi = max(hi, start + len(cont))
        kwargs: dict[str, Any] = {"use_cache": False}
        if self._keeps_logits:
            kwargs["logits_to_keep"] = torch.arange(lo, hi, device=self.device)
            offset = lo
        else:
            offset = 0
        logits = self.model(input_ids=ids.to(self.device), **kwargs).logits
        for b, (_, reads) in enumerate(batch):
            for start, cont, (r_i, c_i) in reads:
                rel = start - offset
                window = logits[b, rel : rel + len(cont)].float()
                logprobs = window.log_softmax(dim=-1)
                target = torch.tensor(cont, device=logprobs.device).unsqueeze(-1)
                results[r_i][c_i] = float(logprobs.gather(-1, target).sum())
        self.batch_times.append(time.perf_counter() - t0)

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        requests: Sequence[Request],
        until: Sequence[str],
        max_gen_toks: int,
        progress: Progress | None,
        watchers: Sequence[Any] = (),
    ) -> list[str]:
        """Greedy continuations, cut at the first stop sequence (left-padded batches).

        ``watchers`` are extra stopping criteria that only observe (they return all false),
        e.g. a clock for the first token."""
        import torch

        tok = self.tokenizer
        # lm-eval appends the EOS string to the stop list and decodes without special tokens.
        eos_text = tok.decode([tok.eos_token_id]) if tok.eos_token_id is not None else None
        stops = list(until) + ([eos_text] if eos_text and eos_text not in until else [])
        budget = max(1, self.max_length - max_gen_toks)
        self.prefetch([r.context for r in requests])
        encoded = [self.encode(r.context)[-budget:] for r in requests]
        self.max_prompt_tokens = max([self.max_prompt_tokens, *map(len, encoded)])
        order = sorted(range(len(requests)), key=lambda i: -len(encoded[i]))
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        outputs: list[str] = [""] * len(requests)
        for start in range(0, len(order), self.batch_size):
            t0 = time.perf_counter()
            chunk = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for b, i in enumerate(chunk):
                seq = encoded[i]
                ids[b, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                mask[b, width - len(seq) :] = 1
            criteria = _StopOnStrings(tok, stops, width)
            generated = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_gen_toks,
                do_sample=False,
                stopping_criteria=[criteria, *watchers],
                pad_token_id=pad_id,
            )
            new_tokens = generated[:, width:]
            for b, i in enumerate(chunk):
                text = str(tok.decode(new_tokens[b].tolist(), skip_special_tokens=True))
                for stop in stops:
                    text = text.split(stop)[0]
                outputs[i] = text
                produced = int((new_tokens[b] != pad_id).sum())
                self.tokens += len(encoded[i]) + produced
                self.max_output_tokens = max(self.max_output_tokens, produced)
            self.batch_times.append(time.perf_counter() - t0)
            if progress is not None:
                progress(len(chunk))
        return outputs

    # ------------------------------------------------------------------ statistics

    def stats(self, elapsed: float, n: int) -> RunStats:
        """The run's statistics for ``n`` examples scored in ``elapsed`` seconds."""
        times = sorted(self.batch_times) or [0.0]
        p95 = nearest_rank(times, 0.95)
        return RunStats(
            scoring_s=elapsed,
            examples_per_s=n / elapsed if elapsed > 0 else 0.0,
            tokens_per_s=self.tokens / elapsed if elapsed > 0 else 0.0,
            p50_batch_s=statistics.median(times),
            p95_batch_s=p95,
            peak_memory_mb=_peak_memory_mb(self.device),
            batches=len(self.batch_times),
            tokens=self.tokens,
        )


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted, non-empty ``ordered`` by the nearest-rank rule: the
    smallest value with at least ``q`` of the values at or below it (no interpolation)."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class _StopOnStrings:
    """Per-row stopping: a row is done once its new text contains any stop string."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_width = prompt_width

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = []
        for row in input_ids[:, self.prompt_width :].tolist():
            text = self.tokenizer.decode(row, skip_special_tokens=False)
            done.append(any(stop in text for stop in self.stops))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def context_length(loaded: Any) -> int:
    """The model's own context, in tokens (its config's, else its tokenizer's, else 2048)."""
    return _model_max_length(loaded.model, loaded.tokenizer)


def _model_max_length(model: Any, tokenizer: Any) -> int:
    # Same order as lm-eval: the text config, then the model config, then the tokenizer.
    config = getattr(model, "config", None)
    for cfg in (getattr(config, "text_config", None), config):
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None) if cfg is not None else None
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10**9:
        return limit
    return 2048


def _accepts_logits_to_keep(model: Any) -> bool:
    import inspect

    target = model
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        target = get_base()
    try:
        return "logits_to_keep" in inspect.signature(target.forward).parameters
    except (TypeError, ValueError):
        return False
