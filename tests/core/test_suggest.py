"""The one 'did you mean' helper every unknown-name error uses."""

from __future__ import annotations

from core.suggest import closest, did_you_mean


def test_a_close_choice_is_suggested() -> None:
    assert did_you_mean("runtme", ["runtime", "watch"]) == " (did you mean 'runtime'?)"
    assert closest("doc_to_txt", {"doc_to_text", "doc_to_target"}) == "doc_to_text"


def test_no_close_choice_gives_no_hint_unless_a_listing_is_asked_for() -> None:
    assert did_you_mean("zzz", ["runtime", "watch"]) == ""
    assert closest("zzz", ["runtime"]) is None
    assert did_you_mean("zzz", ["runtime", "watch"], listing="known") == " (known: runtime, watch)"


def test_choices_may_be_any_iterable_read_once() -> None:
    choices = (name for name in ["exact_match", "f1"])
    assert did_you_mean("exact_mtch", choices, listing="known") == " (did you mean 'exact_match'?)"
    assert did_you_mean("q", iter(["a", "b"]), listing="known keys") == " (known keys: a, b)"
