"""Re-tune: the deployed adapter's LoRA recipe trained on a new base, the third contender.

When a new open-weights model is released, a fine-tune's owner can keep the fine-tune, switch to
the new model with plain prompting, or train the same adapter recipe on the new base. This
module is the third option's engine, in the order a run takes:

1. :func:`training_rows`: the training documents (a split of the task file, or a JSONL file in
   the task's document format) rendered by the task's own renderer, zero-shot, as
   ``(prompt, answer)`` pairs: the answer is what the model is scored on (target delimiter +
   gold choice), so training teaches exactly what the benchmark asks.
2. :func:`check_leakage`: a training row whose prompt is also an evaluation prompt (same
   SHA-256 of the rendered text) would make the re-tuned model's score meaningless; any overlap
   refuses the run with the count.
3. :func:`recipe_from_adapter` and :func:`map_target_modules`: r, alpha, dropout and target
   modules from the deployed adapter's ``adapter_config.json`` (settings override), the target
   modules renamed for the new architecture (``q_proj`` on Llama is ``query_key_value`` on
   GPT-NeoX and ``c_attn`` on GPT-2). A module with no counterpart skips the contender
   (:class:`RetuneSkipped`, with the reason).
4. :func:`estimate_gpu_hours`: the budget check, before any weight is loaded; over
   ``retune.max_gpu_hours`` refuses the run with the estimate.
5. :func:`train_retune`: peft + torch on the new base at its pinned revision. The result is kept
   under ``<store_dir>/<key>/``, where the key hashes everything that decides the weights (base
   commit, data, recipe, training settings, seed): a second run with the same inputs trains
   nothing. The adapter is written to a temporary folder and renamed into place once complete,
   so a run killed mid-training leaves no half-written adapter.

:func:`plan_retune` runs steps 1-4 and returns a :class:`RetunePlan` for step 5. Training is
deterministic for a seed on the CPU (the adapter's initial weights, dropout and the shuffle all
draw from it); on a GPU, kernels may differ run to run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.models import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ResolvedModel, unreadable
from benchmarks.tasks.data import load_splits
from benchmarks.tasks.render import Renderer, Request
from benchmarks.tasks.task import Task
from config.settings import FineTuneRetune, RetuneSettings
from core.errors import ConfigError, FatalError, ModelNotFound, TaskFileError

#: Written beside the adapter: the loss curve, wall time, steps, tokens, estimate, recipe, key.
RECORD = "retune.json"
#: Prefix of the temporary folders adapters are written to before they are renamed into place.
PARTIAL_PREFIX = ".partial-"
#: A temporary folder older than this is left over from a killed run and is removed (writing an
#: adapter takes seconds; training happens before the folder exists).
STALE_PARTIAL_S = 3600.0
#: FLOPs per parameter per training token: forward (2) + backward (4), the usual estimate of
#: dense training. LoRA skips the frozen weights' gradients (about 4 per token), so this errs
#: on the safe side of a budget by up to 1.5x.
FLOPS_PER_PARAM_TOKEN = 6
#: Bumped when the training loop changes what a key's weights would be.
KEY_VERSION = 1

#: Target-module names that play the same role across architectures. A deployed target module
#: missing from the new model is replaced by every name of its group(s) that the new model has.
#: ``c_proj`` (GPT-2) is both the attention output and the MLP down projection.
EQUIVALENT_MODULES: tuple[frozenset[str], ...] = (
    # attention input projections: separate (Llama, OPT, GPT-J), fused (NeoX, Falcon, Bloom,
    # GPT-2, MPT, Phi-3)
    frozenset({"q_proj", "k_proj", "v_proj", "query_key_value", "c_attn", "Wqkv", "qkv_proj"}),
    # attention output projection
    frozenset({"o_proj", "dense", "c_proj", "out_proj"}),
    # MLP input (gate and up) projections
    frozenset({"gate_proj", "up_proj", "gate_up_proj", "c_fc", "dense_h_to_4h", "fc1", "w1", "w3"}),
    # MLP output (down) projection
    frozenset({"down_proj", "dense_4h_to_h", "fc2", "w2", "c_proj"}),
    # output head and token embeddings (modules_to_save of some recipes)
    frozenset({"lm_head", "embed_out"}),
    frozenset({"embed_tokens", "embed_in", "wte", "word_embeddings"}),
)

#: ``progress(step, total_steps, loss)`` after each optimiser step.
Progress = Callable[[int, int, float], None]


class RetuneSkipped(FatalError):
    """The re-tune contender cannot be built for this candidate (e.g. a target module of the
    recipe has no counterpart in the new architecture); the comparison goes on without it."""


class RetuneRefused(FatalError):
    """The re-tune is refused on purpose: training data overlaps the evaluation split, or the
    estimated training cost is over the budget."""


@dataclass(frozen=True)
class Recipe:
    """The LoRA recipe trained on the new base."""

    r: int
    lora_alpha: float
    lora_dropout: float
    #: Module names (or peft's ``"all-linear"``, or a regular expression, kept as a string).
    target_modules: tuple[str, ...] | str
    task_type: str = "CAUSAL_LM"
    #: Modules trained in full beside the adapter (peft's ``modules_to_save``).
    modules_to_save: tuple[str, ...] = ()
    bias: str = "none"
    use_rslora: bool = False
    use_dora: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (tuples as lists), for the record and the cache key."""
        data = dataclasses.asdict(self)
        for key in ("target_modules", "modules_to_save"):
            if isinstance(data[key], tuple):
                data[key] = list(data[key])
        return data


class TrainingRow(NamedTuple):
    """One training example: the rendered prompt and the answer the loss is taken on."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class RetunePlan:
    """Everything :func:`train_retune` needs, checked: data, recipe, budget, cache key."""

    base: ResolvedModel
    recipe: Recipe
    rows: tuple[TrainingRow, ...]
    settings: RetuneSettings
    #: SHA-256 of the rendered training rows (the data as trained on).
    data_hash: str
    parameters: int
    #: Tokens in one pass over the rows (after truncation to ``max_length``).
    tokens_per_epoch: int
    steps: int
    max_length: int
    estimate_gpu_hours: float
    key: str


@dataclass(frozen=True)
class RetuneResult:
    """A trained (or cached) re-tuned adapter and how it was trained."""

    adapter_dir: Path
    key: str
    #: True when an adapter trained earlier with the same key was reused (nothing trained).
    cached: bool
    steps: int
    #: Seconds from loading the base to the adapter written (as recorded when it was trained).
    wall_s: float
    #: Training loss after each step.
    losses: tuple[float, ...]
    #: Tokens (prompt and answer, no padding) the training steps ran on.
    tokens: int
    estimate_gpu_hours: float


# --------------------------------------------------------------------------- data


def training_rows(
    task: Task, settings: FineTuneRetune, config_dir: Path | None = None
) -> list[TrainingRow]:
    """The training rows: ``retune.data_file`` (resolved against ``config_dir``, the config
    file's folder), else the split ``retune.training_split``, else the task file's
    ``training_split``, rendered zero-shot by the task's own renderer.

    A multiple-choice row's answer is the target delimiter + the gold choice (the continuation
    the benchmark scores); a generation row's is the target delimiter + the gold text + the
    task's first stop string (so the model learns where to stop), as lm-eval writes few-shot
    answers.
    """
    docs = _training_docs(task, settings, config_dir)
    if not docs:
        raise ConfigError(f"{task.path}: the re-tune's training data has no documents")
    rendered = dataclasses.replace(task, docs=tuple(docs), num_fewshot=0)
    renderer = Renderer(rendered)
    delimiter = str(task.config.get("target_delimiter", " "))
    rows = []
    for i, doc in enumerate(docs):
        request = renderer.request(i, doc)
        if task.output_type == "multiple_choice":
            assert isinstance(request.gold, int)
            answer = request.continuations[request.gold]
        else:
            gold = request.gold[0] if isinstance(request.gold, tuple) else str(request.gold)
            answer = delimiter + gold + (task.until[0] if task.until else "")
        rows.append(TrainingRow(request.context, answer))
    return rows


def _training_docs(
    task: Task, settings: FineTuneRetune, config_dir: Path | None
) -> list[Mapping[str, Any]]:
    if settings.data_file is not None:
        path = Path(settings.data_file).expanduser()
        if not path.is_absolute() and config_dir is not None:
            path = config_dir / path
        if not path.is_file():
            raise ConfigError(
                f"key 'retune.data_file': {path} not found (relative paths resolve against the "
                "config file's folder)"
            )
        config = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"retune": str(path)}}}
        try:
            splits, _ = load_splits(path, config)
        except TaskFileError as exc:
            raise ConfigError(f"key 'retune.data_file': {exc}") from None
        return list(splits["retune"])
    split = settings.training_split or task.config.get("training_split")
    if not split:
        raise ConfigError(
            f"{task.path}: no training data for the re-tune: set the fine-tune's "
            "retune.training_split (a split of the task file's data_files) or retune.data_file, "
            "or training_split in the task file"
        )
    key = "retune.training_split" if settings.training_split else f"{task.path}: training_split"
    splits, _ = load_splits(task.path, task.config)
    if split not in splits:
        raise ConfigError(
            f"key '{key}': split {split!r} is not in the task file's dataset_kwargs.data_files "
            f"(splits: {', '.join(sorted(splits))})"
        )
    return list(splits[split])


def _prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_leakage(train_rows: Sequence[TrainingRow], eval_requests: Sequence[Request]) -> None:
    """Refuse training rows whose prompt is also an evaluation prompt.

    Compares the SHA-256 of the exact rendered prompt text, so both sides must be rendered the
    same way: zero-shot, as :func:`training_rows` renders (few-shot contexts draw different
    shots per document). Raises :class:`RetuneRefused` with the number of overlapping rows.
    """
    evaluated = {_prompt_hash(request.context) for request in eval_requests}
    overlap = sum(1 for row in train_rows if _prompt_hash(row.prompt) in evaluated)
    if overlap:
        raise RetuneRefused(
            f"{overlap} training rows (of {len(train_rows)}) are also in the evaluation "
            "split (same rendered prompt); remove them from the training data, or the re-tuned "
            "model's score would be measured on what it was trained on"
        )


def data_hash(rows: Iterable[TrainingRow]) -> str:
    """SHA-256 of the rendered rows, in order: the training data as the model sees it."""
    digest = hashlib.sha256()
    for prompt, answer in rows:
        digest.update(prompt.encode("utf-8") + b"\0" + answer.encode("utf-8") + b"\0")
    return digest.hexdigest()


# --------------------------------------------------------------------------- recipe


def recipe_from_adapter(adapter_dir: Path, settings: RetuneSettings) -> Recipe:
    """The deployed adapter's LoRA recipe, each key the settings set in its place."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"{adapter_dir}: {ADAPTER_CONFIG} is unreadable: {exc}") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else None
        raise RetuneSkipped(
            f"{adapter_dir}: the deployed adapter is not a LoRA adapter ({kind}); only LoRA "
            "recipes are re-tuned"
        )
    targets: Any = settings.target_modules or config.get("target_modules")
    if not targets:
        raise RetuneSkipped(
            f"{adapter_dir}: {ADAPTER_CONFIG} names no target_modules; set retune.target_modules"
        )
    return Recipe(
        r=settings.r if settings.r is not None else int(config.get("r", 8)),
        lora_alpha=(
            settings.lora_alpha
            if settings.lora_alpha is not None
            else float(config.get("lora_alpha", 8))
        ),
        lora_dropout=(
            settings.lora_dropout
            if settings.lora_dropout is not None
            else float(config.get("lora_dropout", 0.0))
        ),
        target_modules=targets if isinstance(targets, str) else tuple(sorted(targets)),
        task_type=str(config.get("task_type") or "CAUSAL_LM"),
        modules_to_save=tuple(sorted(config.get("modules_to_save") or ())),
        bias=str(config.get("bias") or "none"),
        use_rslora=bool(config.get("use_rslora", False)),
        use_dora=bool(config.get("use_dora", False)),
    )


def _describe(model: Any) -> str:
    config = getattr(model, "config", None)
    name = getattr(config, "name_or_path", "") or getattr(config, "_name_or_path", "")
    kind = getattr(config, "model_type", None) or type(model).__name__
    return f"{name} ({kind})" if name else str(kind)


def map_target_modules(
    target_modules: Sequence[str] | str,
    model: Any,
    module_map: Mapping[str, str] | None = None,
) -> tuple[str, ...] | str:
    """The deployed adapter's target modules, named as ``model`` names them.

    A name the new model has (peft's rule: a module's name equals it or ends with ``.name``) is
    kept; else ``module_map`` is tried, then :data:`EQUIVALENT_MODULES`. A string (peft's
    ``"all-linear"`` or a regular expression) is kept when it matches a module. Raises
    :class:`RetuneSkipped` naming the module and the model when one has no counterpart.
    """
    names = [name for name, _ in model.named_modules() if name]
    if isinstance(target_modules, str):
        if target_modules == "all-linear" or any(re.fullmatch(target_modules, n) for n in names):
            return target_modules
        raise RetuneSkipped(
            f"target modules pattern {target_modules!r} of the deployed adapter matches no "
            f"module of {_describe(model)}; set retune.target_modules"
        )
    leaves = {name.rsplit(".", 1)[-1] for name in names}

    def present(target: str) -> bool:
        return any(name == target or name.endswith("." + target) for name in names)

    mapped: list[str] = []
    for target in target_modules:
        if present(target):
            mapped.append(target)
            continue
        if module_map and target in module_map:
            if not present(module_map[target]):
                raise RetuneSkipped(
                    f"retune.module_map maps {target!r} to {module_map[target]!r}, which is not a "
                    f"module of {_describe(model)}"
                )
            mapped.append(module_map[target])
            continue
        leaf = target.rsplit(".", 1)[-1]
        found = sorted(
            {name for group in EQUIVALENT_MODULES if leaf in group for name in group & leaves}
        )
        if not found:
            raise RetuneSkipped(
                f"target module {target!r} of the deployed adapter has no counterpart in "
                f"{_describe(model)}; name one with retune.module_map ({target}: <module>) or "
                "set retune.target_modules"
            )
        mapped.extend(found)
    return tuple(dict.fromkeys(mapped))


# --------------------------------------------------------------------------- budget


def estimate_gpu_hours(parameters: int, tokens: int, epochs: float, gpu_tflops: float) -> float:
    """GPU hours to train: ``6 x parameters x tokens x epochs`` FLOPs (forward 2 + backward 4
    per parameter per token) at ``gpu_tflops`` effective TFLOP/s, in hours."""
    flops = FLOPS_PER_PARAM_TOKEN * parameters * tokens * epochs
    return flops / (gpu_tflops * 1e12) / 3600.0


def _encode(
    tokenizer: Any, rows: Sequence[TrainingRow], max_length: int
) -> list[tuple[list[int], int]]:
    """Token ids of each row and where its answer starts, split as the engine scores it:
    the whole text encoded once, the prompt's own encoding giving the split (trailing prompt
    spaces move to the answer, lm-eval's rule). Over-long rows lose prompt tokens from the left.
    """
    bos = tokenizer.bos_token

    def encode(text: str) -> list[int]:
        with_special = not (bos and text.startswith(bos))
        return list(tokenizer.encode(text, add_special_tokens=with_special))

    encoded = []
    for prompt, answer in rows:
        spaces = len(prompt) - len(prompt.rstrip())
        context = prompt[: len(prompt) - spaces]
        whole = encode(prompt + answer)
        start = len(encode(context)) if context else 0
        if start >= len(whole):
            continue  # no answer token: nothing to learn from this row
        cut = max(0, len(whole) - max_length)
        whole = whole[cut:][:max_length]
        encoded.append((whole, max(start - cut, 0)))
    return encoded


def _architecture(base: ResolvedModel) -> Any:
    """The new base built on the meta device: module names and parameter count, no weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with unreadable(f"{base.name}@{base.revision}"):
        config = AutoConfig.from_pretrained(
            base.local_dir, trust_remote_code=base.trust_remote_code
        )
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
                config, trust_remote_code=base.trust_remote_code
            )
    model.config.name_or_path = base.name
    return model


def plan_retune(
    task: Task,
    base: ResolvedModel,
    adapter_dir: Path,
    settings: FineTuneRetune,
    config_dir: Path | None = None,
) -> RetunePlan:
    """Check everything before training: the data (:func:`training_rows`), leakage against the
    task's evaluation split, the recipe mapped to ``base``'s architecture, and the budget.

    Raises :class:`RetuneRefused` (leakage, over budget), :class:`RetuneSkipped` (a target
    module with no counterpart) or :class:`ConfigError` (no training data).
    """
    from transformers import AutoTokenizer

    rows = training_rows(task, settings, config_dir)
    check_leakage(rows, task.with_num_fewshot(0).requests())
    recipe = recipe_from_adapter(adapter_dir, settings)
    model = _architecture(base)
    recipe = dataclasses.replace(
        recipe,
        target_modules=map_target_modules(recipe.target_modules, model, settings.module_map),
        modules_to_save=_as_tuple(
            map_target_modules(recipe.modules_to_save, model, settings.module_map)
        ),
    )
    parameters = sum(p.numel() for p in model.parameters())
    context = getattr(model.config, "max_position_embeddings", None)
    max_length = min(settings.max_length, int(context)) if context else settings.max_length
    with unreadable(f"{base.name}@{base.revision}"):
        tokenizer = AutoTokenizer.from_pretrained(
            base.local_dir, trust_remote_code=base.trust_remote_code
        )
    tokens = sum(len(ids) for ids, _ in _encode(tokenizer, rows, max_length))
    steps = settings.max_steps or math.ceil(settings.epochs * len(rows) / settings.batch_size)
    epochs = steps * settings.batch_size / len(rows)
    estimate = estimate_gpu_hours(parameters, tokens, epochs, settings.gpu_tflops)
    if estimate > settings.max_gpu_hours:
        raise RetuneRefused(
            f"training is estimated at {estimate:.3g} GPU hours, over the budget of "
            f"retune.max_gpu_hours = {settings.max_gpu_hours:g} ({parameters:,} parameters x "
            f"{tokens:,} tokens x {epochs:.3g} epochs x {FLOPS_PER_PARAM_TOKEN} FLOPs at "
            f"{settings.gpu_tflops:g} TFLOP/s); raise the budget or lower epochs/max_steps"
        )
    hashed = data_hash(rows)
    key = cache_key(base, hashed, recipe, settings, max_length)
    return RetunePlan(base, recipe, tuple(rows), settings, hashed, parameters, tokens, steps,
                      max_length, estimate, key)  # fmt: skip


def _as_tuple(value: tuple[str, ...] | str) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else value


def cache_key(
    base: ResolvedModel, data: str, recipe: Recipe, settings: RetuneSettings, max_length: int
) -> str:
    """SHA-256 over what decides the trained weights: the base (repo id and commit, or a local
    folder's content hash), the training data, the recipe, the training settings and seed."""
    identity = {
        "version": KEY_VERSION,
        "base": {"repo_id": base.ref.repo_id, "revision": base.revision},
        "data": data,
        "recipe": recipe.as_dict(),
        "training": _training(settings, max_length),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _training(settings: RetuneSettings, max_length: int) -> dict[str, Any]:
    return {
        "learning_rate": settings.learning_rate,
        "epochs": settings.epochs,
        "max_steps": settings.max_steps,
        "batch_size": settings.batch_size,
        "max_length": max_length,
        "seed": settings.seed,
    }


# --------------------------------------------------------------------------- training


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, RECORD))


def _from_record(folder: Path, cached: bool) -> RetuneResult:
    record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    return RetuneResult(
        adapter_dir=folder,
        key=record["key"],
        cached=cached,
        steps=record["steps"],
        wall_s=record["wall_s"],
        losses=tuple(record["losses"]),
        tokens=record["tokens"],
        estimate_gpu_hours=record["estimate_gpu_hours"],
    )


def _remove_stale(store_dir: Path) -> None:
    now = time.time()
    for folder in store_dir.glob(PARTIAL_PREFIX + "*"):
        try:
            if now - folder.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def train_retune(
    plan: RetunePlan,
    store_dir: Path,
    device: str = "cpu",
    dtype: str = "float32",
    progress: Progress | None = None,
) -> RetuneResult:
    """Train the plan's adapter into ``<store_dir>/<key>/``, or reuse the one already there.

    The adapter (``adapter_model.safetensors`` + ``adapter_config.json`` naming the base at its
    exact revision) and ``retune.json`` are written to a temporary folder in ``store_dir`` and
    renamed into place once complete. An exception (a failing ``progress`` callback included)
    leaves nothing at the final path; a temporary folder left by a killed run is removed by a
    later run once it is :data:`STALE_PARTIAL_S` old.
    """
    store_dir = Path(store_dir)
    final = store_dir / plan.key
    if _complete(final):
        return _from_record(final, cached=True)
    store_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(store_dir)
    started = time.monotonic()
    model, tokenizer = _trainable(plan, device, dtype)
    losses, tokens = _train(model, tokenizer, plan, device, progress)
    partial = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{plan.key[:16]}-", dir=store_dir))
    try:
        model.save_pretrained(str(partial), safe_serialization=True)
        wall_s = time.monotonic() - started
        _write_record(partial, plan, losses, tokens, wall_s, device, dtype)
        _fsync_tree(partial)
        if final.exists() and not _complete(final):
            shutil.rmtree(final)  # not one of ours: an incomplete copy put there by hand
        try:
            os.replace(partial, final)
        except OSError:
            if not _complete(final):
                raise
            return _from_record(final, cached=True)  # another run finished the same key first
        _fsync_dir(store_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return _from_record(final, cached=False)


def _trainable(plan: RetunePlan, device: str, dtype: str) -> tuple[Any, Any]:
    """The base loaded at ``dtype`` on ``device`` and wrapped with a fresh LoRA adapter whose
    config names the base at its exact revision."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = plan.base
    with unreadable(f"{base.name}@{base.revision}"):
        tokenizer = AutoTokenizer.from_pretrained(
            base.local_dir, trust_remote_code=base.trust_remote_code
        )
        model: Any = AutoModelForCausalLM.from_pretrained(
            base.local_dir,
            dtype=getattr(torch, dtype),
            use_safetensors=True,
            trust_remote_code=base.trust_remote_code,
        )
    model.to(device)
    recipe = plan.recipe
    config = LoraConfig(
        r=recipe.r,
        lora_alpha=recipe.lora_alpha,  # type: ignore[arg-type]  # peft annotates int; floats work
        lora_dropout=recipe.lora_dropout,
        target_modules=(
            recipe.target_modules
            if isinstance(recipe.target_modules, str)
            else list(recipe.target_modules)
        ),
        modules_to_save=list(recipe.modules_to_save) or None,
        task_type=recipe.task_type,
        bias=recipe.bias,  # type: ignore[arg-type]
        use_rslora=recipe.use_rslora,
        use_dora=recipe.use_dora,
    )
    torch.manual_seed(plan.settings.seed)  # the adapter's initial weights
    peft_model = get_peft_model(model, config)
    own = peft_model.peft_config["default"]
    own.base_model_name_or_path = base.name
    own.revision = base.revision
    return peft_model, tokenizer


def _batches(
    encoded: Sequence[tuple[list[int], int]], batch_size: int, pad: int, rng: random.Random
) -> Iterator[tuple[list[list[int]], list[list[int]], list[list[int]]]]:
    """Endless shuffled epochs of right-padded (ids, mask, labels); loss on answers only."""
    while True:
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = [encoded[i] for i in order[start : start + batch_size]]
            width = max(len(ids) for ids, _ in chunk)
            ids = [s + [pad] * (width - len(s)) for s, _ in chunk]
            mask = [[1] * len(s) + [0] * (width - len(s)) for s, _ in chunk]
            labels = [[-100] * a + s[a:] + [-100] * (width - len(s)) for s, a in chunk]
            yield ids, mask, labels


def _train(
    model: Any, tokenizer: Any, plan: RetunePlan, device: str, progress: Progress | None
) -> tuple[list[float], int]:
    """AdamW with a linear decay to zero and gradient clipping at 1.0 (the transformers
    Trainer's defaults), ``plan.steps`` steps; the loss curve and the tokens trained on."""
    import torch

    settings = plan.settings
    encoded = _encode(tokenizer, plan.rows, plan.max_length)
    if not encoded:
        raise RetuneRefused("no training row has an answer token to learn from")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(settings.seed)  # dropout
    rng = random.Random(settings.seed)  # the shuffle
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    total = plan.steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1 - step / total)
    losses: list[float] = []
    tokens = 0
    model.train()
    batches = _batches(encoded, settings.batch_size, int(pad or 0), rng)
    for step in range(1, total + 1):
        ids, mask, labels = (torch.tensor(t, device=device) for t in next(batches))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad()
        losses.append(float(loss.detach()))
        tokens += int(mask.sum())
        if progress is not None:
            progress(step, total, losses[-1])
    model.eval()
    return losses, tokens


def _write_record(
    folder: Path,
    plan: RetunePlan,
    losses: Sequence[float],
    tokens: int,
    wall_s: float,
    device: str,
    dtype: str,
) -> None:
    import peft
    import torch
    import transformers

    record = {
        "key": plan.key,
        "base": {"name": plan.base.name, "revision": plan.base.revision},
        "recipe": plan.recipe.as_dict(),
        "training": _training(plan.settings, plan.max_length),
        "data_hash": plan.data_hash,
        "rows": len(plan.rows),
        "steps": len(losses),
        "tokens": tokens,
        "losses": list(losses),
        "wall_s": wall_s,
        "parameters": plan.parameters,
        "estimate_gpu_hours": plan.estimate_gpu_hours,
        "device": device,
        "dtype": dtype,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }
    (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _fsync_tree(folder: Path) -> None:
    """Flush the files to disk before the rename makes them visible at the final path."""
    for file in folder.iterdir():
        if file.is_file():
            with file.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
