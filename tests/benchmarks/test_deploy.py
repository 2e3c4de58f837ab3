"""The deploy checks on their own: licences read from card metadata, serving memory from a
parameter count and a config's KV cache geometry, the latency target, and the checks made again
with what a benchmark run measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.deploy import (
    GIB,
    License,
    ModelFacts,
    assess,
    check_latency,
    check_license,
    check_memory,
    final,
    kv_bytes_per_token,
    license_from_card,
    local_params,
    probe,
    serving_memory_gib,
)
from benchmarks.models import ModelResolver
from config.settings import DEFAULT_LICENSES, DeploySettings
from supersede.demo.zoo import write_card
from tests.support.settings import build_settings

#: Meta's Llama 3.1 8B geometry: 32 layers, 32 query heads sharing 8 KV heads of 128.
LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
}
LLAMA_8B_KV = 2 * 32 * 8 * 128 * 2  # 128 KiB per token


def facts_of(license_id: str | None = None, **fields: Any) -> ModelFacts:
    return ModelFacts(license=License(id=license_id, source="card data"), **fields)


# ---------------------------------------------------------------------------------- licences


def test_licence_from_card_data() -> None:
    lic = license_from_card({"license": "Apache-2.0"}, ["license:mit"], "card data")
    assert (lic.id, lic.source, lic.shown) == ("apache-2.0", "card data", "apache-2.0")


def test_licence_given_as_a_list_takes_the_first() -> None:
    lic = license_from_card({"license": ["cc-by-nc-4.0", "apache-2.0"]}, None, "card data")
    assert lic.id == "cc-by-nc-4.0"


def test_other_licence_keeps_its_name_and_link() -> None:
    card = {"license": "other", "license_name": "ACME-Research",
            "license_link": "https://acme.example/LICENSE"}  # fmt: skip
    lic = license_from_card(card, None, "card data")
    assert (lic.id, lic.name, lic.link) == (
        "other",
        "acme-research",
        "https://acme.example/LICENSE",
    )
    assert lic.shown == "other (acme-research)"


def test_licence_falls_back_to_the_hubs_tag() -> None:
    lic = license_from_card({"language": "en"}, ["text-generation", "license:MIT"], "card data")
    assert (lic.id, lic.source) == ("mit", "tags")


def test_no_licence_anywhere() -> None:
    for card, tags in ((None, None), ({}, ["transformers"]), ({"license": ""}, [])):
        lic = license_from_card(card, tags, "card data")
        assert lic.id is None and lic.shown == "none found"


def test_an_allowed_licence_is_ok() -> None:
    check = check_license(facts_of("apache-2.0"), DEFAULT_LICENSES)
    assert (check.check, check.status) == ("licence", "ok")
    assert check.detail == "licence apache-2.0 allowed"


def test_a_standard_licence_not_allowed_blocks() -> None:
    check = check_license(facts_of("cc-by-nc-4.0"), DEFAULT_LICENSES)
    assert check.status == "blocked" and check.detail == "licence cc-by-nc-4.0 not allowed"


def test_a_vendors_own_licence_needs_review() -> None:
    check = check_license(facts_of("llama3.1"), DEFAULT_LICENSES)
    assert check.status == "review"
    assert "llama3.1" in check.detail and "deploy.licenses" in check.detail
    # Once the legal review accepted it, listing it makes it ok.
    assert check_license(facts_of("llama3.1"), (*DEFAULT_LICENSES, "llama3.1")).status == "ok"


def test_an_other_licence_by_name() -> None:
    lic = License(id="other", name="acme-research", link="https://acme.example/l", source="card")
    facts = ModelFacts(license=lic)
    unlisted = check_license(facts, DEFAULT_LICENSES)
    assert unlisted.status == "review"
    assert "acme-research" in unlisted.detail and "https://acme.example/l" in unlisted.detail
    listed = check_license(facts, ("apache-2.0", "ACME-Research"))
    assert (listed.status, listed.detail) == ("ok", "licence other (acme-research) allowed")


def test_no_licence_found_needs_review() -> None:
    check = check_license(facts_of(None), DEFAULT_LICENSES)
    assert check.status == "review" and "no licence found" in check.detail


def test_licences_not_checked_when_none_are_listed() -> None:
    check = check_license(facts_of("cc-by-nc-4.0"), None)
    assert check.status == "unchecked" and "deploy.licenses is null" in check.detail


def _folder(path: Path, *, card: str | None) -> Path:
    from safetensors.numpy import save_file

    path.mkdir()
    save_file({"a": _zeros(3, 4), "b": _zeros(5)}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(LLAMA_8B))
    if card is not None:
        write_card(path, card)
    return path


def _zeros(*shape: int) -> Any:
    import numpy as np

    return np.zeros(shape, dtype=np.float32)


def _resolver(tmp_path: Path) -> ModelResolver:
    return ModelResolver(build_settings(tmp_path).hub)


def test_a_local_folder_without_a_card_is_not_checked(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "model", card=None)
    facts = probe(_resolver(tmp_path), str(folder), api=None, tokens=100)
    assert facts.license is None
    check = check_license(facts, DEFAULT_LICENSES)
    assert check.status == "unchecked"
    assert check.detail == "a local folder with no README.md card: its licence is not checked"
    # Its size is still read from its own files.
    assert (facts.params, facts.kv_bytes_per_token) == (17, LLAMA_8B_KV)


def test_a_local_folders_card_is_read(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "model", card="cc-by-nc-4.0")
    facts = probe(_resolver(tmp_path), str(folder), api=None, tokens=None)
    assert facts.license is not None
    assert (facts.license.id, facts.license.source) == ("cc-by-nc-4.0", "README.md card")
    assert check_license(facts, DEFAULT_LICENSES).status == "blocked"


# ---------------------------------------------------------------------------------- size


def test_kv_cache_of_a_llama_config_with_grouped_query_attention() -> None:
    assert kv_bytes_per_token(LLAMA_8B) == LLAMA_8B_KV
    # Without num_key_value_heads every query head has its own K and V.
    plain = {k: v for k, v in LLAMA_8B.items() if k != "num_key_value_heads"}
    assert kv_bytes_per_token(plain) == 4 * LLAMA_8B_KV


def test_kv_cache_uses_a_given_head_dim() -> None:
    # Gemma-like: the head size is not hidden_size / heads.
    config = {"hidden_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
              "num_key_value_heads": 16, "head_dim": 256}  # fmt: skip
    assert kv_bytes_per_token(config) == 2 * 28 * 16 * 256 * 2


def test_kv_cache_of_a_multimodal_config_reads_its_text_config() -> None:
    config = {"architectures": ["LlavaForConditionalGeneration"], "text_config": LLAMA_8B,
              "vision_config": {"hidden_size": 1024}}  # fmt: skip
    assert kv_bytes_per_token(config) == LLAMA_8B_KV


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"num_hidden_layers": 32, "num_attention_heads": 32},  # no hidden_size nor head_dim
        {"hidden_size": 4096, "num_attention_heads": 32},  # no layers
        {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 0},
        {"hidden_size": "big", "num_hidden_layers": 32, "num_attention_heads": 32},
    ],
)
def test_kv_cache_unknown_without_the_geometry(config: dict[str, Any]) -> None:
    assert kv_bytes_per_token(config) is None


def test_local_params_from_safetensors_headers(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"w": _zeros(3, 4), "b": _zeros(5)}, str(tmp_path / "model-1.safetensors"),
              metadata={"format": "pt"})  # fmt: skip
    save_file({"e": _zeros(2, 2, 2)}, str(tmp_path / "model-2.safetensors"))
    assert local_params(tmp_path) == 12 + 5 + 8
    (tmp_path / "model-3.safetensors").write_bytes(b"\x05\x00")  # truncated header
    assert local_params(tmp_path) is None
    assert local_params(tmp_path / "nothing-here") is None


def test_serving_memory_adds_weights_and_kv_cache() -> None:
    facts = facts_of("apache-2.0", params=8_000_000_000, kv_bytes_per_token=LLAMA_8B_KV,
                     tokens_per_request=1000)  # fmt: skip
    need = serving_memory_gib(facts, DeploySettings(concurrency=8))
    assert need is not None
    weights = 8e9 * 2 / GIB
    kv = LLAMA_8B_KV * 1000 * 8 / GIB
    assert need[0] == pytest.approx(weights + kv)
    assert "bfloat16 weights" in need[1] and "8 requests of 1,000 tokens (estimated)" in need[1]
    # float32 doubles the weights and the cache.
    wide = serving_memory_gib(facts, DeploySettings(concurrency=8, dtype="float32"))
    assert wide is not None and wide[0] == pytest.approx(2 * (weights + kv))


def test_int4_halves_the_weights_of_int8() -> None:
    facts = facts_of("apache-2.0", params=8_000_000_000)
    int8 = serving_memory_gib(facts, DeploySettings(dtype="int8"))
    int4 = serving_memory_gib(facts, DeploySettings(dtype="int4"))
    assert int8 is not None and int4 is not None
    assert int4[0] == pytest.approx(int8[0] / 2) == pytest.approx(4e9 / GIB)
    assert "KV cache unknown" in int4[1]


def test_a_model_that_fits() -> None:
    facts = facts_of("apache-2.0", params=8_000_000_000, kv_bytes_per_token=LLAMA_8B_KV,
                     tokens_per_request=1000)  # fmt: skip
    check, gib = check_memory(facts, DeploySettings(gpu_memory_gb=80))
    assert check.status == "ok" and check.detail.startswith(
        "fits: needs 15.9 GiB of 72.0 GiB usable"
    )
    assert gib == pytest.approx(15.9, abs=0.05)


def test_a_model_too_large_is_blocked_naming_both_figures() -> None:
    facts = facts_of("apache-2.0", params=8_000_000_000, kv_bytes_per_token=LLAMA_8B_KV,
                     tokens_per_request=1000)  # fmt: skip
    check, gib = check_memory(facts, DeploySettings(gpu_memory_gb=16))
    assert check.status == "blocked"
    assert check.detail.startswith(
        "needs 15.9 GiB, serving GPUs have 16 GiB (14.4 GiB usable at 90%)"
    )
    assert gib == pytest.approx(15.9, abs=0.05)
    # Two of them hold it.
    pair, _ = check_memory(facts, DeploySettings(gpu_memory_gb=16, gpu_count=2))
    assert pair.status == "ok" and "of 28.8 GiB usable" in pair.detail
    # Blocked across two GPUs, both are named.
    small, _ = check_memory(facts, DeploySettings(gpu_memory_gb=8, gpu_count=2))
    assert small.status == "blocked" and "serving GPUs have 2 x 8 GiB" in small.detail
    # Served in int4 the weights take a quarter of bfloat16's: it fits one GPU.
    int4, _ = check_memory(facts, DeploySettings(gpu_memory_gb=16, dtype="int4"))
    assert int4.status == "ok"


def test_an_unknown_size_needs_review() -> None:
    check, gib = check_memory(facts_of("apache-2.0"), DeploySettings(gpu_memory_gb=24))
    assert (check.status, gib) == ("review", None) and "size unknown" in check.detail


def test_memory_not_checked_without_gpu_memory() -> None:
    facts = facts_of("apache-2.0", params=8_000_000_000)
    check, gib = check_memory(facts, DeploySettings())
    assert check.status == "unchecked" and "deploy.gpu_memory_gb is null" in check.detail
    assert check.detail.startswith("needs 14.9 GiB to serve") and gib is not None
    api, _ = check_memory(ModelFacts(api=True), DeploySettings(gpu_memory_gb=24))
    assert api.status == "unchecked" and "API" in api.detail


# ---------------------------------------------------------------------------------- latency


def test_latency_against_the_target() -> None:
    measured = {"p50_ms": 120.0, "p95_ms": 850.0}
    assert check_latency(measured, 1000).status == "ok"
    missed = check_latency(measured, 800)
    assert missed.status == "blocked"
    assert missed.detail == "p95 latency 850 ms misses the 800 ms target"
    unset = check_latency(measured, None)
    assert unset.status == "unchecked" and "p95 850 ms" in unset.detail
    nothing: dict[str, Any] | None
    for nothing in (None, {}):
        unmeasured = check_latency(nothing, 800)
        assert unmeasured.status == "review" and "latency not measured" in unmeasured.detail
    assert check_latency(None, None).status == "unchecked"


# ---------------------------------------------------------------------------------- after the run


def test_final_uses_the_measured_request_length_and_latency() -> None:
    deploy = DeploySettings(gpu_memory_gb=16, latency_p95_ms=500)
    facts = facts_of("apache-2.0", params=7_000_000_000, kv_bytes_per_token=LLAMA_8B_KV,
                     tokens_per_request=4000)  # fmt: skip
    before = assess(facts, deploy)
    # Estimated 4,000 tokens a request: 13.0 + 3.9 GiB does not fit 14.4.
    assert [c.status for c in before.checks] == ["ok", "blocked"]
    assert before.latency_target_ms == 500 and before.available_memory_gb == pytest.approx(14.4)
    extra = {"max_prompt_tokens": 180, "max_output_tokens": 20,
             "latency": {"p50_ms": 90.0, "p95_ms": 640.0, "sample": 16}}  # fmt: skip
    after = final(before, deploy, extra)
    assert after.facts.tokens_per_request == 200 and after.facts.tokens_measured
    memory = next(c for c in after.checks if c.check == "memory")
    assert memory.status == "ok" and "200 tokens (measured)" in memory.detail
    assert after.serving_memory_gb == pytest.approx((7e9 * 2 + LLAMA_8B_KV * 200 * 8) / GIB)
    latency = next(c for c in after.checks if c.check == "latency")
    assert latency.status == "blocked" and "640 ms misses the 500 ms target" in latency.detail
    assert (after.latency_p50_ms, after.latency_p95_ms) == (90.0, 640.0)
    assert after.blockers == ("p95 latency 640 ms misses the 500 ms target",)
    assert after.license == "apache-2.0"


def test_final_without_measurements_keeps_the_estimate() -> None:
    deploy = DeploySettings(latency_p95_ms=500)
    facts = facts_of("apache-2.0", params=1000, kv_bytes_per_token=64, tokens_per_request=300)
    after = final(assess(facts, deploy), deploy, {"max_prompt_tokens": 0})
    assert after.facts.tokens_per_request == 300 and not after.facts.tokens_measured
    assert after.reviews == ("latency not measured; the 500 ms target is p95",)
    assert after.latency_p95_ms is None
