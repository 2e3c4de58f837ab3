"""Re-tune: the deployed adapter's recipe, read, mapped, budgeted, trained and cached, on the
zoo's tiny real models (the deployed LoRA adapter of the zoo's base, trained on a release)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

import benchmarks.retune as retune
from benchmarks.models import ModelResolver, ResolvedModel, load_model
from benchmarks.retune import (
    RECORD,
    RetunePlan,
    RetuneRefused,
    RetuneSkipped,
    check_leakage,
    estimate_gpu_hours,
    map_target_modules,
    plan_retune,
    recipe_from_adapter,
    train_retune,
    training_rows,
)
from benchmarks.tasks.task import Task, load_task
from config.settings import FineTune, FineTuneRetune, Settings, load_settings, retune_for
from core.errors import ConfigError
from supersede.demo.zoo import Zoo, read_jsonl, write_jsonl
from tests.support.tasks import GENERATE, REVIEW_DIR, shipped_task_copy, write_task

LLAMA_TARGETS = ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")


def quick(**overrides: Any) -> FineTuneRetune:
    """Settings for a few fast training steps on the task file's train split."""
    values: dict[str, Any] = {"training_split": "train", "max_steps": 3, "batch_size": 8,
                              "learning_rate": 3e-3, "max_length": 64}  # fmt: skip
    return FineTuneRetune(**{**values, **overrides})


def evaluated_texts() -> set[str]:
    return {str(doc["text"]) for doc in read_jsonl(REVIEW_DIR / "test.jsonl")}


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Task:
    """The shipped task, its train split without the reviews its test split also holds (the
    synthetic data repeats a few; the leakage test below counts them)."""
    path = shipped_task_copy(tmp_path_factory.mktemp("task") / "review_sentiment")
    kept = [
        d for d in read_jsonl(path.parent / "train.jsonl") if d["text"] not in evaluated_texts()
    ]
    write_jsonl(path.parent / "train.jsonl", kept)
    return load_task(path)


@pytest.fixture(scope="module")
def release(zoo: Zoo) -> ResolvedModel:
    """The new base: a release of the same architecture as the fine-tune's base."""
    return ModelResolver(Settings().hub).resolve(str(zoo.weaker))


@pytest.fixture(scope="module")
def plan(task: Task, release: ResolvedModel, zoo: Zoo) -> RetunePlan:
    return plan_retune(task, release, zoo.adapter, quick())


@pytest.fixture(scope="module")
def trained(plan: RetunePlan, tmp_path_factory: pytest.TempPathFactory) -> retune.RetuneResult:
    return train_retune(plan, tmp_path_factory.mktemp("store"))


def tiny(kind: str) -> Any:
    """A randomly initialised model of another architecture, built from a config."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig

    if kind == "gpt2":
        config: Any = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=64)
    else:
        config = GPTNeoXConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                               intermediate_size=64, vocab_size=64)  # fmt: skip
    return AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------- settings


def test_a_finetunes_retune_keys_replace_the_top_level_ones(tmp_path: Path) -> None:
    settings = Settings(
        retune={"learning_rate": 1e-3, "r": 4, "max_steps": 50},
        finetunes=[
            {"name": "ft", "task": "t.yaml", "base": "a/b", "adapter": "a/c",
             "retune": {"max_steps": None, "r": None, "training_split": "train",
                        "epochs": 2}},
        ],
    )  # fmt: skip
    merged = retune_for(settings, settings.finetunes[0])
    assert (merged.learning_rate, merged.epochs, merged.training_split) == (1e-3, 2.0, "train")
    assert merged.max_steps is None and merged.r is None  # null has a meaning here
    plain = FineTune(name="ft2", task="t.yaml", base="a/b", adapter="a/c")
    assert retune_for(settings, plain).max_steps == 50


def test_a_split_and_a_data_file_together_are_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "finetunes:\n  - {name: ft, task: t.yaml, base: a/b, adapter: a/c,\n"
        "     retune: {training_split: train, data_file: more.jsonl}}\n"
    )
    with pytest.raises(ConfigError, match="not both"):
        load_settings(path)


# --------------------------------------------------------------------------- recipe


def test_the_recipe_is_read_from_the_deployed_adapter(zoo: Zoo) -> None:
    recipe = recipe_from_adapter(zoo.adapter, quick())
    assert (recipe.r, recipe.lora_alpha, recipe.lora_dropout) == (16, 32.0, 0.0)
    assert recipe.target_modules == LLAMA_TARGETS
    assert recipe.task_type == "CAUSAL_LM"
    own = recipe_from_adapter(zoo.adapter, quick(r=4, lora_dropout=0.1, target_modules=["q_proj"]))
    assert (own.r, own.lora_alpha, own.lora_dropout, own.target_modules) == (
        4, 32.0, 0.1, ("q_proj",))  # fmt: skip


def test_target_modules_are_renamed_for_another_architecture(zoo: Zoo) -> None:
    from peft import LoraConfig, get_peft_model

    gpt2, neox = tiny("gpt2"), tiny("neox")
    assert map_target_modules(LLAMA_TARGETS, gpt2) == ("c_proj", "c_fc", "c_attn")
    assert map_target_modules(LLAMA_TARGETS, neox) == (
        "dense_4h_to_h", "dense_h_to_4h", "query_key_value", "dense")  # fmt: skip
    # Fused back to separate names, and an explicit mapping wins over the table.
    llama = retune._architecture(ModelResolver(Settings().hub).resolve(str(zoo.base)))
    assert map_target_modules(["query_key_value"], llama) == ("k_proj", "q_proj", "v_proj")
    assert map_target_modules(["q_proj"], gpt2, {"q_proj": "c_fc"}) == ("c_fc",)
    # The mapped names are real: peft wraps them.
    mapped = map_target_modules(LLAMA_TARGETS, gpt2)
    model = get_peft_model(gpt2, LoraConfig(r=2, target_modules=list(mapped), fan_in_fan_out=True))
    wrapped = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n.endswith("lora_A")}
    assert wrapped == {"lora_A"}


def test_a_target_module_without_counterpart_skips_the_retune() -> None:
    gpt2 = tiny("gpt2")
    with pytest.raises(RetuneSkipped) as info:
        map_target_modules(["q_proj", "router_proj"], gpt2)
    assert "'router_proj'" in str(info.value) and "gpt2" in str(info.value)
    with pytest.raises(RetuneSkipped, match="'nowhere'"):
        map_target_modules(["q_proj"], gpt2, {"q_proj": "nowhere"})


# --------------------------------------------------------------------------- data


def test_training_rows_are_rendered_by_the_tasks_renderer(task: Task, tmp_path: Path) -> None:
    rows = training_rows(task, quick())
    docs = read_jsonl(task.path.parent / "train.jsonl")
    assert len(rows) == len(docs)
    assert rows[0].prompt == f"Review: {docs[0]['text']}\nSentiment:"
    assert [r.answer for r in rows[:5]] == [
        " positive" if d["label"] else " negative" for d in docs[:5]
    ]
    generate = load_task(write_task(tmp_path / "gen", dict[str, object](GENERATE)))
    first = training_rows(generate, quick())[0]
    assert first.answer == (" positive" if docs[0]["label"] else " negative") + "\n"


def test_missing_training_data_names_the_key(task: Task, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"retune\.training_split"):
        training_rows(task, quick(training_split=None))
    with pytest.raises(ConfigError, match=r"retune.training_split.*'valid'.*splits: test, train"):
        training_rows(task, quick(training_split="valid"))
    with pytest.raises(ConfigError, match=r"retune.data_file.*extra.jsonl not found"):
        training_rows(task, quick(training_split=None, data_file="extra.jsonl"), tmp_path)


def test_training_rows_that_are_also_evaluated_are_refused_with_the_count(
    task: Task, release: ResolvedModel, zoo: Zoo, tmp_path: Path
) -> None:
    test_docs = read_jsonl(REVIEW_DIR / "test.jsonl")
    train_docs = read_jsonl(REVIEW_DIR / "train.jsonl")
    mixed = train_docs[:20] + test_docs[3:10]
    write_jsonl(tmp_path / "mixed.jsonl", mixed)
    overlap = sum(1 for d in mixed if d["text"] in evaluated_texts())
    assert overlap >= 7
    settings = quick(training_split=None, data_file="mixed.jsonl")
    assert len(training_rows(task, settings, tmp_path)) == 27
    with pytest.raises(RetuneRefused, match=f"{overlap} training rows") as info:
        plan_retune(task, release, zoo.adapter, settings, tmp_path)
    assert "evaluation split" in str(info.value)
    with pytest.raises(RetuneRefused, match=f"{len(test_docs)} training rows"):
        plan_retune(task, release, zoo.adapter, quick(training_split="test"))
    check_leakage(training_rows(task, quick()), task.requests())  # train and test are disjoint


# --------------------------------------------------------------------------- budget


def test_the_estimate_is_six_flops_per_parameter_per_token() -> None:
    # 6 x 1e9 x 1e6 x 2 = 1.2e16 FLOPs at 100 TFLOP/s = 120 s.
    assert estimate_gpu_hours(10**9, 10**6, 2.0, 100.0) == pytest.approx(120 / 3600)


def test_a_run_over_budget_is_refused_with_the_estimate(
    task: Task, release: ResolvedModel, zoo: Zoo, plan: RetunePlan
) -> None:
    budget = plan.estimate_gpu_hours / 2
    with pytest.raises(RetuneRefused) as info:
        plan_retune(task, release, zoo.adapter, quick(max_gpu_hours=budget))
    message = str(info.value)
    assert f"{plan.estimate_gpu_hours:.3g} GPU hours" in message
    assert f"retune.max_gpu_hours = {budget:g}" in message
    assert plan.tokens_per_epoch > 0 and plan.steps == 3
    assert plan.estimate_gpu_hours == pytest.approx(
        estimate_gpu_hours(plan.parameters, plan.tokens_per_epoch, 3 * 8 / len(plan.rows), 100.0)
    )


# --------------------------------------------------------------------------- training


def test_training_is_deterministic_for_a_seed(
    plan: RetunePlan, trained: retune.RetuneResult, task: Task, release: ResolvedModel,
    zoo: Zoo, tmp_path: Path,
) -> None:  # fmt: skip
    again = train_retune(plan, tmp_path / "again")
    assert not again.cached and again.losses == trained.losses
    weights = "adapter_model.safetensors"
    assert (again.adapter_dir / weights).read_bytes() == (
        trained.adapter_dir / weights
    ).read_bytes()
    other = plan_retune(task, release, zoo.adapter, quick(seed=1))
    assert other.key != plan.key
    reseeded = train_retune(other, tmp_path / "other")
    assert (reseeded.adapter_dir / weights).read_bytes() != (
        trained.adapter_dir / weights
    ).read_bytes()


def test_the_second_run_with_the_same_inputs_trains_nothing(
    plan: RetunePlan, trained: retune.RetuneResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    weights = trained.adapter_dir / "adapter_model.safetensors"
    mtime = weights.stat().st_mtime_ns

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached re-tune must not train")

    monkeypatch.setattr(retune, "_trainable", no_training)
    monkeypatch.setattr(torch.optim, "AdamW", no_training)
    cached = train_retune(plan, trained.adapter_dir.parent, progress=no_training)
    assert cached.cached and cached.adapter_dir == trained.adapter_dir
    assert (cached.steps, cached.wall_s, cached.losses, cached.tokens) == (
        trained.steps, trained.wall_s, trained.losses, trained.tokens)  # fmt: skip
    assert weights.stat().st_mtime_ns == mtime


def test_a_failure_mid_training_leaves_no_adapter(plan: RetunePlan, tmp_path: Path) -> None:
    store = tmp_path / "store"
    steps: list[int] = []

    def crash(step: int, total: int, loss: float) -> None:
        steps.append(step)
        if step == 2:
            raise KeyboardInterrupt("worker killed")

    with pytest.raises(KeyboardInterrupt):
        train_retune(plan, store, progress=crash)
    assert steps == [1, 2]
    assert not (store / plan.key).exists()
    assert list(store.iterdir()) == []


def test_a_failed_write_leaves_no_adapter_and_stale_partials_are_removed(
    plan: RetunePlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    stale = store / f"{retune.PARTIAL_PREFIX}old"
    fresh = store / f"{retune.PARTIAL_PREFIX}writing"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"half")
    old = time.time() - retune.STALE_PARTIAL_S - 60
    os.utime(stale, (old, old))

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        train_retune(plan, store)
    assert not (store / plan.key).exists()
    assert sorted(p.name for p in store.iterdir()) == [fresh.name]  # stale one removed


def test_the_trained_adapter_loads_on_the_new_base_at_its_revision(
    plan: RetunePlan, trained: retune.RetuneResult, release: ResolvedModel, zoo: Zoo
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = trained.adapter_dir
    assert folder == folder.parent / plan.key and trained.steps == 3
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(zoo.weaker)
    assert config["revision"] == release.revision and release.revision.startswith("sha256:")
    assert sorted(config["target_modules"]) == list(LLAMA_TARGETS)
    record = json.loads((folder / RECORD).read_text())
    assert record["key"] == plan.key and record["steps"] == 3 and len(record["losses"]) == 3
    assert record["estimate_gpu_hours"] == plan.estimate_gpu_hours and record["wall_s"] > 0
    # The LoRA B matrices start at zero: trained, they are not.
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    assert any(float(t.abs().sum()) > 0 for name, t in tensors.items() if "lora_B" in name)
    # peft loads it onto the new base, and so does the product's own loader (safetensors policy).
    base = AutoModelForCausalLM.from_pretrained(zoo.weaker, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(folder))
    ids = torch.tensor([[2, 5, 6, 7]])
    with torch.no_grad():
        tuned = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    assert not torch.allclose(tuned, plain)
    resolver = ModelResolver(Settings().hub)
    loaded = load_model(
        release, Settings().runtime.model_copy(update={"device": "cpu"}),
        [resolver.resolve(str(folder), "adapter")],
    )  # fmt: skip
    assert loaded.adapters[0].local_dir == folder


def test_the_shipped_train_split_repeats_fifteen_test_reviews_and_is_refused() -> None:
    # The synthetic review data repeats a few reviews across its splits (the README says so).
    shipped = load_task(REVIEW_DIR / "review_sentiment.yaml")
    rows = training_rows(shipped, quick())
    with pytest.raises(RetuneRefused, match=r"^15 training rows \(of 400\)"):
        check_leakage(rows, shipped.with_num_fewshot(0).requests())
