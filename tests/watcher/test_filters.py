"""The derivative rules and the configured filters, on facts shaped like the Hub's."""

from __future__ import annotations

from typing import Any

import pytest
from huggingface_hub import ModelInfo

from config.watch import HubWatch
from watcher.filters import (
    ACCEPT,
    Decision,
    RepoFacts,
    author_reason,
    decide,
    derivative_reason,
    parents,
)

#: ``bob`` is watched too, so his fine-tune of acme's model is dropped as a derivative.
RULES = HubWatch(authors=("acme", "bob"))


def facts(repo_id: str = "acme/Acme-7B", **fields: Any) -> RepoFacts:
    defaults: dict[str, Any] = {
        "sha": "a" * 40,
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "params": 7_000_000_000,
        "files": ("config.json", "model.safetensors"),
        "tags": ("transformers", "safetensors"),
    }
    return RepoFacts(repo_id=repo_id, **{**defaults, **fields})


@pytest.mark.parametrize(
    ("repo_id", "fields", "reason"),
    [
        ("bob/Acme-7B-math", {"tags": ("base_model:finetune:acme/Acme-7B",)}, "finetune of"),
        ("acme/Acme-7B-lora", {"tags": ("base_model:adapter:acme/Acme-7B",)}, "adapter of"),
        ("acme/Acme-7B-Instruct-AWQ", {"tags": ("awq",)}, "quantized copy (awq)"),
        ("acme/Acme-7B-q", {"tags": ("base_model:quantized:acme/Acme-7B",)}, "quantized of"),
        ("acme/Acme-Merge", {"tags": ("base_model:merge:acme/Acme-7B",)}, "merge of"),
        ("acme/Acme-7B-gguf-pack", {"library_name": "gguf"}, "conversion (gguf)"),
        ("acme/Acme-7B-mlx-port", {"library_name": "mlx"}, "conversion (mlx)"),
        ("acme/Acme-7B-GGUF", {}, "conversion (name"),
        ("acme/Acme-7B-Instruct-GPTQ-Int4", {}, "conversion (name"),
        ("acme/Acme-7B-exl2", {}, "conversion (name"),
        ("acme/Acme-7B-bnb-4bit", {}, "conversion (name"),
        ("acme/Acme-7B-Q4_K_M", {}, "conversion (name"),
        ("acme/Acme-7B-FP8", {}, "conversion (name"),
        ("acme/files-only", {"tags": ("gguf",)}, "conversion (gguf)"),
        ("acme/Acme-7B-other", {"tags": ("4-bit", "bitsandbytes")}, "quantized copy"),
        # The vendor fine-tuned someone else's base: a derivative, not a foundation release.
        ("acme/Llama-ft", {"tags": ("base_model:finetune:meta/Llama-8B",)}, "finetune of"),
        (
            "acme/Adapter-only",
            {"files": ("adapter_config.json", "adapter_model.safetensors")},
            "adapter",
        ),
    ],
)
def test_derivatives_are_dropped(repo_id: str, fields: dict[str, Any], reason: str) -> None:
    decision = decide(facts(repo_id, **fields), RULES)
    assert decision.action == "drop"
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("repo_id", "fields"),
    [
        ("acme/Acme-7B", {}),
        # The vendor's own instruct release of its own base counts.
        ("acme/Acme-7B-Instruct", {"tags": ("base_model:finetune:acme/Acme-7B",)}),
        ("ACME/Acme-7B-Chat", {"tags": ("base_model:finetune:acme/Acme-7B",)}),
        # Extra formats beside safetensors are not a conversion.
        ("acme/Acme-1B", {"tags": ("safetensors", "onnx", "gguf", "transformers")}),
        ("acme/Acme-7B-v0.3", {}),
        ("acme/Qwen-like-8B", {}),
    ],
)
def test_foundation_releases_are_accepted(repo_id: str, fields: dict[str, Any]) -> None:
    assert decide(facts(repo_id, **fields), RULES).action == "accept"


def test_parents_come_from_tags_else_the_model_card() -> None:
    tagged = facts(tags=("base_model:acme/Base", "base_model:adapter:acme/Base"))
    assert parents(tagged) == [("adapter", "acme/Base")]
    old_style = facts(tags=("base_model:other/Base",))
    assert parents(old_style) == [("finetune", "other/Base")]
    carded = facts(tags=(), card_base_models=("other/Base",), card_relation="quantized")
    assert parents(carded) == [("quantized", "other/Base")]
    assert derivative_reason(carded) == "quantized of other/Base"


@pytest.mark.parametrize(
    ("rules", "fields", "action"),
    [
        ({"pipeline_tags": ("text-generation",)}, {"pipeline_tag": "feature-extraction"}, "drop"),
        ({"pipeline_tags": ()}, {"pipeline_tag": "feature-extraction"}, "accept"),
        ({"min_params": 10_000_000_000}, {"params": 7_000_000_000}, "drop"),
        ({"max_params": 1_000_000_000}, {"params": 7_000_000_000}, "drop"),
        ({"max_params": 1_000_000_000}, {"params": None}, "accept"),  # unknown: let it through
        ({"include": (r"Acme-\d+B$",)}, {}, "accept"),
        ({"include": (r"^nothing",)}, {}, "drop"),
        ({"exclude": (r"(?i)acme-7b",)}, {}, "drop"),
        ({}, {"files": ("README.md", ".gitattributes")}, "wait"),
        ({}, {"files": ("config.json", "pytorch_model.bin")}, "accept"),  # refused later, loudly
        ({}, {"files": None}, "accept"),
    ],
)
def test_configured_filters(rules: dict[str, Any], fields: dict[str, Any], action: str) -> None:
    assert decide(facts(**fields), HubWatch(**{"authors": ("acme",), **rules})).action == action


def test_only_accepted_authors_pass_before_any_other_rule() -> None:
    stranger = facts("mallory/Acme-7B")
    refused = decide(stranger, RULES)
    assert refused == Decision("drop", "author mallory is not in watch.hub.authors")
    empty = decide(facts(), HubWatch(authors=()))
    assert empty.reason == "author acme is not in watch.hub.authors (the list is empty)"
    # A feed's own list replaces the authors, and is named in the reason.
    setting = "watch.feeds[vendor].accept_from"
    assert decide(stranger, RULES, accept_from=("Mallory",), accept_setting=setting) == ACCEPT
    assert decide(facts(), RULES, accept_from=(), accept_setting=setting).reason == (
        f"author acme is not in {setting} (the list is empty)"
    )
    assert author_reason("no-slash", ("acme",)) == "author (none) is not in watch.hub.authors"


def test_facts_from_a_real_model_info() -> None:
    info = ModelInfo(
        id="acme/Acme-7B-Instruct",
        sha="b" * 40,
        createdAt="2026-11-27T10:00:00.000Z",
        lastModified="2026-11-28T10:00:00.000Z",
        tags=["transformers", "safetensors", "base_model:finetune:acme/Acme-7B"],
        pipeline_tag="text-generation",
        library_name="transformers",
        gated="manual",
        private=False,
        safetensors={"parameters": {"BF16": 7_241_732_096}, "total": 7_241_732_096},
        siblings=[{"rfilename": "config.json"}, {"rfilename": "model.safetensors"}],
        cardData={"base_model": "acme/Acme-7B", "license": "apache-2.0"},
    )
    got = RepoFacts.from_model_info(info)
    assert got.repo_id == "acme/Acme-7B-Instruct" and got.author == "acme"
    assert got.sha == "b" * 40 and got.params == 7_241_732_096 and got.gated
    assert got.files == ("config.json", "model.safetensors")
    assert got.card_base_models == ("acme/Acme-7B",)
    assert got.created_at is not None and got.created_at.year == 2026
    assert decide(got, RULES).action == "accept"


def test_facts_without_expanded_fields() -> None:
    got = RepoFacts.from_model_info(ModelInfo(id="acme/x"))
    assert got.files is None and got.params is None and got.tags == () and not got.gated
