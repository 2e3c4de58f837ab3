"""Shared-prefix scoring (a context's choices packed into one row after it, or run against a
copy of its KV cache; and the run's shared prompt head): the same log-likelihoods as one full
row per choice, within 1e-5."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from benchmarks.engine import Engine, Rows, _positions, _select_rows
from benchmarks.models import LoadedModel
from benchmarks.runner import run_task
from benchmarks.tasks.task import Task, load_task
from tests.support.tasks import MULTI_TOKEN, write_task

#: Choices glued to the context's last token: ``":" + ")"`` encodes as one ``":)"`` token, so
#: the whole encoding no longer starts with the context's tokens and those choices must be
#: scored as full rows; the others share the context (one of them is a single token).
MIXED = dict(
    MULTI_TOKEN,
    task="review_mixed",
    target_delimiter="",
    doc_to_choice=[" positive", " negative and cheap", ") great and lovely", "-( awful"],
)
#: Every choice glued to the context: no context may be shared.
GLUED = dict(MIXED, task="review_glued", doc_to_choice=[") great and lovely", "-( awful and cheap"])
#: An instruction before every document: a head of many tokens every input starts with.
INSTRUCTED = dict(
    MULTI_TOKEN,
    task="review_instructed",
    description="Read the review below and say whether it is great and lovely or awful "
    "and cheap or not sure.\n\n",
)
#: Six choices of four to five tokens: more choice tokens than a context has, so a context's
#: choices take more than one packed row; two of them share their tokens after the first.
MANY = dict(
    MULTI_TOKEN,
    task="review_many",
    doc_to_choice=[
        "awful and cheap and great",
        "great and lovely and not sure",
        "not sure and cheap",
        "lovely and great and awful and cheap",
        "cheap and lovely and sure",
        "sure and lovely and sure",
    ],
)
#: One-token choices after the same instruction: full rows that all start with the head.
INSTRUCTED_SINGLE = dict(
    INSTRUCTED, task="review_instructed_single", doc_to_choice=["great", "awful"]
)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Task]:
    folder = tmp_path_factory.mktemp("tasks")
    return {
        "multi": load_task(write_task(folder, MULTI_TOKEN)),
        "mixed": load_task(write_task(folder, MIXED)),
        "glued": load_task(write_task(folder, GLUED)),
        "instructed": load_task(write_task(folder, INSTRUCTED)),
        "instructed_single": load_task(write_task(folder, INSTRUCTED_SINGLE)),
        "many": load_task(write_task(folder, MANY)),
    }


def scores(
    loaded: LoadedModel, task: Task, batch_size: int, *, packs: bool = True, **kwargs: Any
) -> tuple[Engine, list[list[float]]]:
    """The engine and its log-likelihoods; ``packs=False`` takes the KV-cache path for a
    context's choices (what a model whose attention takes no custom mask gets)."""
    engine = Engine(loaded, batch_size, kwargs.pop("max_length", None), **kwargs)
    engine._packs = engine._packs and packs
    with torch.inference_mode(), loaded.scoring_model():
        return engine, engine.loglikelihoods(task.requests(40), None)


def assert_close(want_all: list[list[float]], got_all: list[list[float]]) -> None:
    """Every log-likelihood within 1e-5, and the same choice ranked first everywhere."""
    for want, got in zip(want_all, got_all, strict=True):
        assert got == pytest.approx(want, abs=1e-5)
        assert max(range(len(got)), key=got.__getitem__) == max(
            range(len(want)), key=want.__getitem__
        )


@pytest.mark.parametrize("path", ["packed", "cache"])
@pytest.mark.parametrize("kind", ["multi", "mixed", "many", "instructed", "instructed_single"])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_shared_prefix_equals_full_rows(
    tuned: LoadedModel, tasks: dict[str, Task], kind: str, batch_size: int, path: str
) -> None:
    exact, want_all = scores(tuned, tasks[kind], batch_size, exact=True)
    shared, got_all = scores(tuned, tasks[kind], batch_size, packs=path == "packed")
    assert_close(want_all, got_all)
    assert exact.head_tokens == 0 and not exact._packs
    assert shared._packs == (path == "packed")
    if kind == "multi":  # each context ran once, then only the continuations' tokens
        assert shared.tokens < exact.tokens * 0.5
    if kind.startswith("instructed"):  # the instruction ran once, not once per input
        instruction = len(shared.encode(INSTRUCTED["description"])) - 1  # - 1: its BOS
        assert shared.head_tokens >= instruction > 10
        assert shared.tokens < exact.tokens * 0.5


def test_the_head_stops_before_the_first_scored_position(tuned: LoadedModel) -> None:
    """Inputs that agree beyond a scored position: the head ends at that position, so its
    log-prob is still read from a pass; a single input, or a head too short, is not shared."""
    engine = Engine(tuned, 4, None)
    with torch.inference_mode(), tuned.scoring_model():
        rows: Rows = {
            ((2, 5, 6, 7, 8, 9, 11), None): [((3, 4, 5, 6), [8, 9, 11, 12], (0, 0))],
            ((2, 5, 6, 7, 8, 9, 13), None): [((6,), [14], (1, 0))],
        }
        head = engine._shared_head(rows, {})
        assert head is not None and engine.head_tokens == head.length == 3
        shared = {(2, 5, 6, 7, 8): [([9, 10], (2, 0))], (2, 5, 6, 7, 9): [([9, 10], (2, 1))]}
        assert engine._shared_head({}, shared) is not None and engine.head_tokens == 4
        assert engine._shared_head({}, dict(list(shared.items())[:1])) is None
        assert engine.head_tokens == 0
        short: Rows = {
            ((2, 5, 6, 7), None): [((3,), [8], (0, 0))],
            ((2, 9, 6, 7), None): [((3,), [8], (1, 0))],
        }
        assert engine._shared_head(short, {}) is None  # one token in common: below the minimum
        long_rows: Rows = {
            ((2, 5, *range(20, 60)), None): [((41,), [8], (0, 0))],
            ((2, 5, 7), None): [((2,), [8], (1, 0))],
        }
        assert engine._shared_head(long_rows, {}) is None  # two tokens of a mean of 22.5


def test_a_contexts_choices_pack_into_rows_no_wider_than_it() -> None:
    """Each choice's tokens after the first sit once in a row after the context; a choice that
    does not fit starts another row with the context again; one-token choices read the
    context's last position."""
    rows: Rows = {}
    reads = [
        ([8, 9, 10, 11], (0, 0)),
        ([8, 9, 10, 12], (0, 1)),  # the same tokens after its first: the same segment
        ([13], (0, 2)),
        ([14, 15], (1, 0)),  # does not fit beside the first: a row of its own
    ]
    Engine._add_packed(rows, [2, 5, 6], reads)
    assert rows == {
        ((2, 5, 6, 8, 9, 10), (0, 0, 0, 1, 1, 1)): [
            ((2, 3, 4, 5), [8, 9, 10, 11], (0, 0)),
            ((2, 3, 4, 5), [8, 9, 10, 12], (0, 1)),
            ((2,), [13], (0, 2)),
        ],
        ((2, 5, 6, 14), (0, 0, 0, 1)): [((2, 3), [14, 15], (1, 0))],
    }
    assert _positions((0, 0, 0, 1, 1, 2, 2, 2)) == [0, 1, 2, 3, 4, 3, 4, 5]


def test_wide_packed_rows_take_fewer_rows_a_pass(
    tuned: LoadedModel, tasks: dict[str, Task], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass's mask is bounded: with room for one row's mask, every packed row is a pass of
    its own, and the log-likelihoods do not change."""
    import benchmarks.engine

    _, want = scores(tuned, tasks["many"], 16, exact=True)
    wide, wide_got = scores(tuned, tasks["many"], 16)
    monkeypatch.setattr(benchmarks.engine, "MASK_BUDGET", 1)
    narrow, narrow_got = scores(tuned, tasks["many"], 16)
    assert_close(want, narrow_got)
    assert_close(wide_got, narrow_got)
    assert len(narrow.batch_times) >= 40 and len(wide.batch_times) * 8 <= len(narrow.batch_times)


def test_a_model_that_does_not_apply_packing_gets_full_rows(
    tuned: LoadedModel, tasks: dict[str, Task], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packing is checked once against full rows before a run: a model that takes the position
    ids and the mask but does not apply them (here: position ids as if unpacked) fails the
    check, and the run scores without packing."""
    packed_inputs = Engine._packed_inputs

    def positions_ignored(self: Engine, batch: Any, skip: int, width: int) -> dict[str, Any]:
        inputs = packed_inputs(self, batch, skip, width)
        inputs["position_ids"] = torch.arange(skip, skip + width).repeat(len(batch), 1)
        return inputs

    monkeypatch.setattr(Engine, "_packed_inputs", positions_ignored)
    engine, got = scores(tuned, tasks["many"], 8)
    assert engine._packing_checked and not engine._packs
    _, want = scores(tuned, tasks["many"], 8, exact=True)
    assert_close(want, got)
    monkeypatch.undo()
    checked, _ = scores(tuned, tasks["many"], 8)
    assert checked._packing_checked and checked._packs  # the real packing passes its check


def test_packed_choices_under_eager_attention(tuned: LoadedModel, tasks: dict[str, Task]) -> None:
    """The mask is additive, so the eager attention (which adds it) agrees as SDPA does."""
    base = tuned.model.get_base_model()
    before = base.config._attn_implementation
    base.set_attn_implementation("eager")
    try:
        shared, got = scores(tuned, tasks["many"], 8)
        assert shared._packs
        _, want = scores(tuned, tasks["many"], 8, exact=True)
        assert_close(want, got)
    finally:
        base.set_attn_implementation(before)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("_attn_implementation", "flash_attention_2"),
        ("_attn_implementation", "flex_attention"),
        ("sliding_window", 8),
        ("layer_types", ["sliding_attention", "full_attention"]),
    ],
)
def test_attention_that_takes_no_custom_mask_keeps_the_cache_path(
    tuned: LoadedModel, setting: str, value: Any
) -> None:
    config = tuned.model.get_base_model().config
    missing = object()
    before = getattr(config, setting, missing)
    assert Engine(tuned, 4, None)._packs
    setattr(config, setting, value)
    try:
        assert not Engine(tuned, 4, None)._packs
    finally:
        if before is missing:
            delattr(config, setting)
        else:
            setattr(config, setting, before)
    assert Engine(tuned, 4, None)._packs


def test_prefix_breaking_choices_fall_back_to_full_rows(
    tuned: LoadedModel, tasks: dict[str, Task]
) -> None:
    engine = Engine(tuned, 8, None)
    for request in tasks["mixed"].requests(5):
        context_enc = engine.encode(request.context)
        prefixed = []
        for choice in request.continuations:
            whole = engine.encode(request.context + choice)
            prefixed.append(whole[: len(context_enc)] == context_enc)
        # the mixed task really has both kinds, so both paths are compared above
        assert prefixed == [True, True, False, False]
    exact, want = scores(tuned, tasks["glued"], 4, exact=True)
    shared, got = scores(tuned, tasks["glued"], 4)
    assert_close(want, got)
    # one full row per choice, as many passes as exact mode's; only the "Review:" head that
    # every row starts with ran once instead of once per row
    assert len(shared.batch_times) == len(exact.batch_times)
    requests = tasks["glued"].requests(40)
    inputs = {tuple(shared.encode(r.context + c)[:-1]) for r in requests for c in r.continuations}
    rows = len(inputs)
    assert shared.head_tokens >= 2
    assert exact.tokens - shared.tokens == shared.head_tokens * (rows - 1)


def test_over_long_inputs_fall_back_to_full_rows(
    tuned: LoadedModel, tasks: dict[str, Task]
) -> None:
    exact, want = scores(tuned, tasks["multi"], 5, exact=True, max_length=9)
    shared, got = scores(tuned, tasks["multi"], 5, max_length=9)
    assert got == want  # every input is cut at 9 tokens: full rows, bit for bit
    assert shared.tokens == exact.tokens
    assert shared.head_tokens == 0  # cut from the left, the inputs share no head


def test_a_selected_cache_leaves_the_context_cache_alone(tuned: LoadedModel) -> None:
    with torch.inference_mode(), tuned.scoring_model():
        context = torch.tensor([[2, 5, 6, 7], [2, 8, 9, 10]])
        cache = tuned.model(input_ids=context, use_cache=True).cache
        before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
        rows = _select_rows(cache, torch.tensor([1, 1, 0]))
        tuned.model(input_ids=torch.tensor([[11, 12]] * 3), cache=rows, use_cache=True)
        assert rows.get_seq_length() == 6 and rows.layers[0].keys.shape[0] == 3
        assert cache.get_seq_length() == 4
        for layer, (keys, values) in zip(cache.layers, before, strict=True):
            assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)


def test_run_task_exact_and_shared_agree(tuned: LoadedModel, tasks: dict[str, Task]) -> None:
    exact = run_task(tuned, tasks["mixed"], limit=60, batch_size=16, exact=True)
    shared = run_task(tuned, tasks["mixed"], limit=60, batch_size=16)
    assert shared.predictions == exact.predictions
    assert shared.outcomes == exact.outcomes
    assert shared.score == exact.score
