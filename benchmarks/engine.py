"""The batched engine under the runner: log-likelihoods of choices (multiple_choice) and greedy
continuations (generate_until), on a loaded model, with timing and token counts.

Log-likelihood follows lm-eval's rule exactly (so scores match): trailing context spaces move to
the continuation, ``context + continuation`` is encoded whole and split at the context's length,
over-long inputs are cut from the left, and a choice's score is the sum of its tokens' log-probs;
``acc`` takes the argmax. What makes it faster than lm-eval (the first three change no number;
the last moves log-likelihoods by rounding only):

* inputs are right-padded causal batches sorted longest first, so padding never reaches a real
  token and, but for packed choices (below), no attention mask is needed;
* choices that are one token after the same context share one forward pass (per document and
  across documents with an identical context);
* logits are computed only at the positions that predict continuation tokens
  (``logits_to_keep``), not over the whole sequence, and log-softmax runs on those rows only;
* shared-prefix scoring (the default) for longer choices: each distinct context runs once, its
  choices after it. Where the model's attention takes a custom mask (eager or SDPA, no sliding
  window), a context's choices are packed into its row: each choice's tokens after the first
  sit side by side after the context, take the positions right after it, and a 4D mask lets
  them see the context and their own choice only. Such rows batch with every other row, so a
  document costs one row instead of one per choice (once an engine, one packed row is first
  checked against full rows; a model that disagrees is not packed). Elsewhere each context
  keeps its KV cache, batched with other contexts of the same length (so no padding reaches
  the cache), and every choice then runs its own tokens against a copy of that cache. A choice
  falls back to its own full row when its input would be cut at ``max_length``, or when the
  whole ``context + continuation`` encoding does not start with the context's tokens. The
  model sees the same tokens at the same positions, but a masked or cached pass sums attention
  in another order than one full row: log-likelihoods are not bit for bit those of the full
  rows. In float32 they differ by about 2e-6 on the tiny test models (held to 1e-5) and up to
  2.5e-5 on a real 135M model with 130-150-token prompts (under 1e-5 of the value; held to
  1e-4); in half precision the gap is wider. Two choices closer than that could in principle
  swap places.
  ``exact=True`` keeps one full row per choice.
* the prompt's shared head (the same default): when every input of a run starts with the same
  tokens (an instruction, a system prompt, fixed few-shot examples), those tokens run once and
  every batch continues from a copy of their KV cache, as a serving stack with prefix caching
  does. Only a head of at least :data:`MIN_SHARED_HEAD` tokens and an eighth of the mean input
  is shared, and only where no scored position falls inside it. The same rounding caveat as
  above; ``exact=True`` turns it off too.
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

#: The fewest tokens a run's shared prompt head must have to be run once and reused: below
#: this the copying and the attention mask a cached pass needs cost about what they save.
MIN_SHARED_HEAD = 2

#: The most entries of a packed pass's attention mask (rows x width x width): 64 MiB as the
#: booleans SDPA takes. Batches of 32 rows up to about 1,400 tokens wide stay under it; a pass
#: of wider packed rows holds fewer rows.
MASK_BUDGET = 2**26

#: What one choice reads from a row: the positions whose logits predict its tokens (in order),
#: the tokens, and the result slot (request, choice) the summed log-prob fills.
Read = tuple[tuple[int, ...], list[int], tuple[int, int]]
#: A model input: its tokens, and None for a plain causal row, or each token's segment for a row
#: of packed choices (0: the context; i > 0: choice i, which sees the context and itself only).
Row = tuple[tuple[int, ...], tuple[int, ...] | None]
#: Every distinct row of a run, with the reads it serves.
Rows = dict[Row, list[Read]]
#: Shared contexts: context tokens -> (continuation tokens, result slot) reads.
Shared = dict[tuple[int, ...], list[tuple[list[int], tuple[int, int]]]]


class _Head:
    """A run's shared prompt head: its length in tokens and its KV cache (batch of one)."""

    def __init__(self, length: int, cache: Any) -> None:
        self.length = length
        self.cache = cache

    def rows(self, n: int) -> Any:
        """A fresh cache holding the head ``n`` times, for a pass of ``n`` rows."""
        import torch

        return _select_rows(self.cache, torch.zeros(n, dtype=torch.long))


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.max_memory_allocated()) / 2**20
    # ru_maxrss is in KiB on Linux: the process's peak resident set.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Engine:
    """Batched forward passes and generation on one loaded model, with run statistics."""

    def __init__(
        self, loaded: Any, batch_size: int, max_length: int | None, *, exact: bool = False
    ) -> None:
        self.model = loaded.model
        #: Score every choice as its own full row (no shared-prefix KV cache).
        self.exact = exact
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
        #: The tokens every input of the last log-likelihood run started with, run once and
        #: reused by every pass (0: none was shared).
        self.head_tokens = 0
        self._bos_text = self._prefix_text()
        self._keeps_logits = _accepts_logits_to_keep(self.model)
        #: The forward argument that takes a KV cache (None: the model takes none, so every
        #: choice is a full row).
        self._cache_arg = None if exact else _cache_argument(self.model)
        #: The attention that applies a custom mask as given ("sdpa" or "eager"), or None.
        self._mask_kind = _custom_mask_kind(self.model)
        #: Whether a context's choices are packed into one row (its attention takes a mask).
        self._packs = not exact and self._mask_kind is not None
        #: Whether packing was checked against full rows on this model (once an engine).
        self._packing_checked = False
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()

    def fresh_copy(self, *, exact: bool = False) -> Engine:
        """This engine on the same model and settings, with its own empty counters and token
        cache: what the latency pass runs, so it leaves this engine's statistics alone (and
        pays for tokenizing, as a served request does). ``exact``: every choice a full row."""
        clone = copy.copy(self)
        if exact:
            clone.exact, clone._cache_arg, clone._packs = True, None, False
        clone.batch_times = []
        clone._encoded = {}
        clone.tokens = clone.max_prompt_tokens = clone.max_output_tokens = clone.head_tokens = 0
        return clone

    def warm_up(self, requests: Sequence[Request]) -> None:
        """One small untimed forward pass: the first pass in a process pays for the libraries'
        lazy set-up (thread pools, kernel libraries), which would otherwise be charged to the
        measured run (and to the serving cost derived from it). One row of a few tokens is
        enough: a pass of a whole batch costs the model's full compute again (seconds on a 135M
        model on a CPU) and made the measured first batch no faster."""
        import torch

        if not requests:
            return
        ids = self.encode(requests[0].context)[-8:] or [self.prefix_token_id]
        batch = torch.tensor([ids], dtype=torch.long, device=self.device)
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._keeps_logits else {}
        self.model(input_ids=batch, use_cache=False, **kwargs)

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
        context_enc, continuation_enc, _ = self._split_encoding(context, continuation)
        return context_enc, continuation_enc

    def _split_encoding(self, context: str, continuation: str) -> tuple[list[int], list[int], bool]:
        """:meth:`encode_pair`, and whether the whole encoding starts with the context's tokens
        (false for an empty context: its prefix token is not part of the whole)."""
        if not context:
            return [self.prefix_token_id], self.encode(continuation), False
        context, continuation = self.split_pair(context, continuation)
        whole = self.encode(context + continuation)
        context_enc = self.encode(context)
        n = len(context_enc)
        return context_enc, whole[n:], whole[:n] == context_enc

    # ------------------------------------------------------------------ log-likelihood

    def loglikelihoods(
        self, requests: Sequence[Request], progress: Progress | None
    ) -> list[list[float]]:
        """Sum of continuation log-probs for every choice of every request."""
        # One row per distinct input, with the reads it serves.
        rows: Rows = {}
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
        # Shared-prefix reads: context tokens -> (continuation tokens, slot to fill).
        shared: Shared = {}
        for r_i, request in enumerate(requests):
            pairs = [self._split_encoding(request.context, c) for c in request.continuations]
            single = (
                all(len(cont) == 1 for _, cont, _ in pairs)
                and len({tuple(c) for c, _, _ in pairs}) == 1
            )
            for c_i, (context_enc, cont_enc, prefixed) in enumerate(pairs):
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
                    read = ((len(inp) - 1,), cont_enc, (r_i, c_i))
                    rows.setdefault((inp, None), []).append(read)
                elif (
                    (self._packs or self._cache_arg is not None)
                    and prefixed
                    and len(context_enc) + len(cont_enc) - 1 <= self.max_length
                ):
                    shared.setdefault(tuple(context_enc), []).append((cont_enc, (r_i, c_i)))
                else:
                    self._add_row(rows, context_enc, cont_enc, (r_i, c_i))
        for ctx, reads in list(shared.items()):
            if len(reads) == 1:  # nothing to share: one full row is one pass instead of two
                del shared[ctx]
                self._add_row(rows, list(ctx), *reads[0])
            elif self._packs:
                del shared[ctx]
                self._add_packed(rows, list(ctx), reads)
        if self._packs and not self._packing_checked:
            self._packing_checked = True
            if not self._packing_agrees(rows):
                self._packs = False  # this model gets full rows or the KV-cache path
                return self.loglikelihoods(requests, progress)
        head = self._shared_head(rows, shared)
        done_docs: set[int] = set()
        self._score_rows(rows, results, head, progress, done_docs)
        contexts = sorted(shared.items(), key=lambda kv: -len(kv[0]))
        while contexts:
            # contexts of one length only: the cache then holds no padding
            n = len(contexts[0][0])
            group = [kv for kv in contexts[: self.batch_size] if len(kv[0]) == n]
            contexts = contexts[len(group) :]
            self._score_shared(group, results, head)
            touched = {slot[0] for _, reads in group for _, slot in reads}
            self._report(progress, touched, results, done_docs)
        return results

    def _packing_agrees(self, rows: Rows) -> bool:
        """Score one packed row and the same choices as full rows, untimed: whether they agree.

        An architecture can take the mask and position ids and still not apply them as packing
        needs (ALiBi positions from a row's own layout, say); its packed log-likelihoods would
        then be wrong by far more than rounding. The row checked is one whose choices overlap in
        position (two or more after the context), where such a model goes wrong."""
        import torch

        packed = [(row, reads) for row, reads in rows.items() if row[1] is not None]
        if not packed:
            return True
        (tokens, segments), reads = max(packed, key=lambda kv: max(kv[0][1] or (0,)))
        assert segments is not None
        context = list(tokens[: next(i for i, mark in enumerate(segments) if mark != 0)])
        local = [(positions, cont, (k, 0)) for k, (positions, cont, _) in enumerate(reads)]
        full: Rows = {}
        for _, cont, slot in local:
            self._add_row(full, context, cont, slot)
        saved = (self.tokens, list(self.batch_times))
        as_packed: list[list[float]] = [[math.nan] for _ in local]
        as_full: list[list[float]] = [[math.nan] for _ in local]
        self._score_batch([((tokens, segments), local)], as_packed)
        self._score_rows(full, as_full)
        self.tokens, self.batch_times = saved
        half = getattr(self.model, "dtype", torch.float32) in (torch.float16, torch.bfloat16)
        rel, tol = (2e-2, 0.1) if half else (1e-4, 1e-3)  # far above rounding, far below a bug
        return all(
            math.isclose(a[0], b[0], rel_tol=rel, abs_tol=tol)
            for a, b in zip(as_packed, as_full, strict=True)
        )

    def _score_rows(
        self,
        rows: Rows,
        results: list[list[float]],
        head: _Head | None = None,
        progress: Progress | None = None,
        done_docs: set[int] | None = None,
    ) -> None:
        """Score ``rows`` longest first, ``batch_size`` a pass, fewer where a packed row's mask
        (rows x width x width) would pass :data:`MASK_BUDGET` entries; ``progress`` hears of the
        documents each pass finishes."""
        ordered = sorted(rows.items(), key=lambda kv: -len(kv[0][0]))
        start = 0
        while start < len(ordered):
            batch = ordered[start : start + self.batch_size]
            if any(segments is not None for (_, segments), _ in batch):
                width = len(batch[0][0][0])
                batch = batch[: max(1, MASK_BUDGET // (width * width))]
            start += len(batch)
            self._score_batch(batch, results, head)
            touched = {slot[0] for _, reads in batch for _, _, slot in reads}
            self._report(progress, touched, results, done_docs if done_docs is not None else set())

    def _shared_head(self, rows: Rows, shared: Shared) -> _Head | None:
        """Run the tokens every input of this run starts with once, and keep their KV cache.

        None (every pass runs from its first token) in exact mode, for a model that takes no
        cache or whose cache cannot be copied per row, and for a head shorter than
        :data:`MIN_SHARED_HEAD` tokens or an eighth of the mean input. The head stops before
        the first scored position of any input, so every read comes from a pass over the
        rest."""
        import torch

        self.head_tokens = 0
        if self._cache_arg is None:
            return None
        inputs = [tokens for tokens, _ in rows] + list(shared)
        if len(inputs) < 2:
            return None
        # a shared context's last position gives its choices' first token
        limit = min(
            [positions[0] for reads in rows.values() for positions, _, _ in reads]
            + [len(ctx) - 1 for ctx in shared]
        )
        first, length = inputs[0], 0
        while length < limit and all(inp[length] == first[length] for inp in inputs):
            length += 1
        mean = sum(map(len, inputs)) / len(inputs)
        if length < MIN_SHARED_HEAD or length * 8 < mean:
            return None
        ids = torch.tensor([first[:length]], dtype=torch.long, device=self.device)
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._keeps_logits else {}
        out = self.model(input_ids=ids, use_cache=True, **kwargs)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        if not _copyable(cache):
            return None
        self.tokens += length
        self.head_tokens = length
        return _Head(length, cache)

    def _add_row(
        self,
        rows: Rows,
        context_enc: list[int],
        cont_enc: list[int],
        slot: tuple[int, int],
    ) -> None:
        """One full row ``context + continuation`` (cut from the left at ``max_length``)."""
        whole = (context_enc + cont_enc)[-(self.max_length + 1) :]
        inp = tuple(whole[:-1])
        start = len(inp) - len(cont_enc)
        read = (tuple(range(start, start + len(cont_enc))), cont_enc, slot)
        rows.setdefault((inp, None), []).append(read)

    @staticmethod
    def _add_packed(
        rows: Rows, context_enc: list[int], reads: list[tuple[list[int], tuple[int, int]]]
    ) -> None:
        """Rows of one context followed by its choices' tokens side by side (each choice's
        tokens after the first, once however many documents share it). A choice's first token
        is read at the context's last position, the rest at its own. A row holds choices up to
        the context's length or the longest choice's, whichever is more; further choices start
        another row with the context again."""
        n = len(context_enc)
        cap = max(n, max(len(cont) - 1 for cont, _ in reads))
        # per row: the choices' tokens, their segments, and where each choice starts
        lanes: list[tuple[list[int], list[int], dict[tuple[int, ...], int]]] = []
        placed: list[tuple[int, Read]] = []
        for cont, slot in reads:
            tail = tuple(cont[:-1])
            lane = next((i for i, (_, _, starts) in enumerate(lanes) if tail in starts), None)
            if lane is None:
                lane = next(
                    (i for i, (tokens, _, _) in enumerate(lanes) if len(tokens) + len(tail) <= cap),
                    None,
                )
                if lane is None:
                    lanes.append(([], [], {}))
                    lane = len(lanes) - 1
                tokens, segments, starts = lanes[lane]
                starts[tail] = n + len(tokens)
                segments += [len(starts)] * len(tail)
                tokens += tail
            start = lanes[lane][2][tail]
            placed.append((lane, ((n - 1, *range(start, start + len(tail))), cont, slot)))
        for lane, read in placed:
            tokens, segments, _ = lanes[lane]
            row = (tuple(context_enc) + tuple(tokens), (0,) * n + tuple(segments))
            rows.setdefault(row, []).append(read)

    @staticmethod
    def _report(
        progress: Progress | None,
        touched: set[int],
        results: list[list[float]],
        done_docs: set[int],
    ) -> None:
        """Tell ``progress`` how many of the ``touched`` documents are now fully scored."""
        if progress is None:
            return
        finished = {r for r in touched - done_docs if not any(math.isnan(v) for v in results[r])}
        done_docs |= finished
        if finished:
            progress(len(finished))

    def _score_batch(
        self,
        batch: Sequence[tuple[Row, list[Read]]],
        results: list[list[float]],
        head: _Head | None = None,
    ) -> None:
        """One pass over rows, longest first (after the run's shared head, when there is one).
        A batch holding a row of packed choices runs with their mask and position ids."""
        import torch

        t0 = time.perf_counter()
        skip = head.length if head is not None else 0
        width = len(batch[0][0][0]) - skip
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        lo, hi = width, 0
        for b, ((inp, _), reads) in enumerate(batch):
            ids[b, : len(inp) - skip] = torch.tensor(inp[skip:], dtype=torch.long)
            self.tokens += len(inp) - skip
            for positions, _, _ in reads:
                lo = min(lo, positions[0] - skip)
                hi = max(hi, positions[-1] - skip + 1)
        kwargs: dict[str, Any] = {"use_cache": False}
        if head is not None:
            kwargs = {"use_cache": True, str(self._cache_arg): head.rows(len(batch))}
        if any(segments is not None for (_, segments), _ in batch):
            kwargs.update(self._packed_inputs(batch, skip, width))
        if self._keeps_logits:
            kwargs["logits_to_keep"] = torch.arange(lo, hi, device=self.device)
            offset = lo
        else:
            offset = 0
        logits = self.model(input_ids=ids.to(self.device), **kwargs).logits
        for b, (_, reads) in enumerate(batch):
            for positions, cont, (r_i, c_i) in reads:
                window = logits[b, [p - skip - offset for p in positions]].float()
                logprobs = window.log_softmax(dim=-1)
                target = torch.tensor(cont, device=logprobs.device).unsqueeze(-1)
                results[r_i][c_i] = float(logprobs.gather(-1, target).sum())
        self.batch_times.append(time.perf_counter() - t0)

    def _packed_inputs(
        self, batch: Sequence[tuple[Row, list[Read]]], skip: int, width: int
    ) -> dict[str, Any]:
        """The attention mask and position ids of a batch holding packed rows: a token sees the
        earlier tokens of its row's context and of its own choice (and the shared head), and a
        choice's tokens take the positions right after the context. A plain row is all
        context. Each padding position is a segment of its own, so it sees the context and
        itself (a row that sees nothing would give NaN)."""
        import torch

        segments = (-1 - torch.arange(width)).repeat(len(batch), 1)
        positions = torch.zeros((len(batch), width), dtype=torch.long)
        for b, ((inp, row_segments), _) in enumerate(batch):
            marks = row_segments or (0,) * len(inp)
            segments[b, : len(inp) - skip] = torch.tensor(marks[skip:], dtype=torch.long)
            positions[b, : len(inp) - skip] = torch.tensor(_positions(marks)[skip:])
        allowed = torch.ones((width, width), dtype=torch.bool).tril() & (
            (segments[:, None, :] == 0) | (segments[:, :, None] == segments[:, None, :])
        )
        if skip:
            head = torch.ones((len(batch), width, skip), dtype=torch.bool)
            allowed = torch.cat([head, allowed], dim=-1)
        mask = allowed  # SDPA takes a boolean mask (true: attend), a quarter of a float32 one
        if self._mask_kind == "eager":  # which adds its mask to the scores
            dtype = getattr(self.model, "dtype", torch.float32)
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(
                ~allowed, torch.finfo(dtype).min
            )
        return {
            "attention_mask": mask[:, None].to(self.device),
            "position_ids": positions.to(self.device),
        }

    def _score_shared(
        self,
        group: Sequence[tuple[tuple[int, ...], list[tuple[list[int], tuple[int, int]]]]],
        results: list[list[float]],
        head: _Head | None = None,
    ) -> None:
        """Contexts of one length run once with their KV cache (after the run's shared head,
        when there is one); then each choice's tokens after the first run against a copy of its
        context's rows of that cache (right-padded, ``batch_size`` rows a pass, so no pass holds
        more rows than a full-row batch). The first token's log-prob comes from the context
        pass's last position."""
        import torch

        t0 = time.perf_counter()
        skip = head.length if head is not None else 0
        ids = torch.tensor([list(ctx[skip:]) for ctx, _ in group], dtype=torch.long)
        kwargs: dict[str, Any] = {"use_cache": True}
        if head is not None:
            kwargs[str(self._cache_arg)] = head.rows(len(group))
        if self._keeps_logits:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=ids.to(self.device), **kwargs)
        self.tokens += ids.numel()
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        if not _copyable(cache):
            # A cache this engine cannot copy per row (recurrent or static layers): full rows.
            self._cache_arg = None
            rows: Rows = {}
            for ctx, reads in group:
                for cont_enc, slot in reads:
                    self._add_row(rows, list(ctx), cont_enc, slot)
            self._score_rows(rows, results)
            return
        first = out.logits[:, -1].float().log_softmax(dim=-1)
        tails: list[tuple[int, list[int], tuple[int, int]]] = []
        for b, (_, reads) in enumerate(group):
            for cont_enc, slot in reads:
                if len(cont_enc) == 1:
                    results[slot[0]][slot[1]] = float(first[b, cont_enc[0]])
                else:
                    tails.append((b, cont_enc, slot))
        tails.sort(key=lambda t: -len(t[1]))
        for start in range(0, len(tails), self.batch_size):
            chunk = tails[start : start + self.batch_size]
            width = len(chunk[0][1]) - 1
            inp = torch.zeros((len(chunk), width), dtype=torch.long)
            targets = torch.zeros((len(chunk), width), dtype=torch.long)
            real = torch.zeros((len(chunk), width), dtype=torch.bool)
            for r, (_, cont_enc, _) in enumerate(chunk):
                k = len(cont_enc) - 1
                inp[r, :k] = torch.tensor(cont_enc[:-1], dtype=torch.long)
                targets[r, :k] = torch.tensor(cont_enc[1:], dtype=torch.long)
                real[r, :k] = True
                self.tokens += k
            rows_cache = _select_rows(cache, torch.tensor([b for b, _, _ in chunk]))
            step: dict[str, Any] = {"use_cache": True, str(self._cache_arg): rows_cache}
            logits = self.model(input_ids=inp.to(self.device), **step).logits
            logprobs = logits.float().log_softmax(dim=-1)
            picked = logprobs.gather(-1, targets.to(logprobs.device).unsqueeze(-1)).squeeze(-1)
            picked = picked * real.to(picked.device)
            for r, (b, cont_enc, (r_i, c_i)) in enumerate(chunk):
                results[r_i][c_i] = float(first[b, cont_enc[0]] + picked[r].sum())
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


def _base(model: Any) -> Any:
    """The transformers model under ``model`` (a PEFT wrapper's base model, else itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _forward_parameters(model: Any) -> Sequence[str]:
    """The names ``model``'s forward takes (none when its signature cannot be read)."""
    import inspect

    try:
        return list(inspect.signature(_base(model).forward).parameters)
    except (TypeError, ValueError):
        return []


def _cache_argument(model: Any) -> str | None:
    """The name under which ``model``'s forward takes a KV cache, if it takes one."""
    parameters = _forward_parameters(model)
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _copyable(cache: Any) -> bool:
    """A ``DynamicCache`` of plain or sliding-window attention layers: its rows can be selected
    into a new cache without touching it."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    return (
        isinstance(cache, DynamicCache)
        and bool(cache.layers)
        and all(isinstance(layer, DynamicLayer) for layer in cache.layers)
    )


def _select_rows(cache: Any, rows: Any) -> Any:
    """A new cache holding ``cache``'s batch rows ``rows`` (repeats allowed): the layers are
    shallow copies whose key and value tensors are fresh gathers, so a forward pass that grows
    the copy leaves ``cache`` as it was for the next group of choices."""
    picked = copy.copy(cache)
    picked.layers = [copy.copy(layer) for layer in cache.layers]
    picked.batch_select_indices(rows.to(cache.layers[0].keys.device))
    return picked


def _custom_mask_kind(model: Any) -> str | None:
    """``model``'s attention ("sdpa" or "eager") when it applies a 4D mask given to it as it is
    (flash and flex kernels take none) in every layer (no sliding window) and its forward takes
    position ids; else None."""
    config = getattr(_base(model), "config", None)
    kind = getattr(config, "_attn_implementation", None)
    if kind not in ("eager", "sdpa"):
        return None
    # a sliding window is a mask of its own, which a custom mask would replace
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return None
    if any(layer != "full_attention" for layer in getattr(config, "layer_types", None) or ()):
        return None
    parameters = _forward_parameters(model)
    return str(kind) if "position_ids" in parameters and "attention_mask" in parameters else None


def _positions(segments: Sequence[int]) -> list[int]:
    """Position ids of a row's tokens from their segments: the context counts from 0 and each
    choice's tokens count on from the context's end."""
    n = next((i for i, mark in enumerate(segments) if mark != 0), len(segments))
    out = list(range(n))
    for i in range(n, len(segments)):
        out.append(n if segments[i] != segments[i - 1] else out[-1] + 1)
    return out


def _accepts_logits_to_keep(model: Any) -> bool:
    return "logits_to_keep" in _forward_parameters(model)
