"""A GPU check: scoring and decode speed, memory and LoRA adapters on random Llama models.

A performance check, not a test; nothing is downloaded. Llama-architecture models of about 1B and
8B parameters are built from a config with random weights, in bfloat16 on the GPU, with a
word-level tokenizer built by the tiny zoo's builder. For each it measures:

* multiple-choice scoring tokens/s, through the engine's scoring path (``run_task``) on a
  synthetic two-choice task (two-token choices, so every choice's tokens are scored);
* greedy decode tokens/s at batch 1 and 32 (a fixed number of new tokens, so every step counts);
* each as a fraction of the memory-bandwidth roofline: weight bytes read per forward pass /
  measured time per pass (a scoring batch or a decode step), over the card's bandwidth;
* peak GPU memory (``torch.cuda.max_memory_allocated``) against the routing estimate
  (``workers/routing.py`` ``need_gib`` with the default ``workers.memory_overhead``).

Then, on the first model, a base and 4 LoRA adapters (r=8, random) are scored with one base load
(``load_model`` with every adapter, switching with ``set_adapter``) and, for comparison, each with
a fresh load of the base and that one adapter. It prints one table and writes JSON::

    .venv/bin/python perf/gpu_check.py                       # on a CUDA machine, < 8 minutes
    .venv/bin/python perf/gpu_check.py --dry-run             # the same path on CPU, a tiny model

``--dry-run`` runs a tiny model (hidden 64, 2 layers) in float32 on the CPU with small counts;
the roofline is then ``n/a``. Exit status: 0 done, 2 when it cannot run (no GPU, out of memory).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_setup import MULTI_TOKEN_CHOICES, TASK_YAML

HERE = Path(__file__).resolve().parent.parent
DEFAULT_OUT = HERE / "perf" / "results" / "gpu_check.json"
GIB = 1024**3

#: Memory bandwidth in GB/s by a substring of ``torch.cuda.get_device_name()``, first match wins
#: (more specific names first: "H100 PCIe" before "H100", "L40S" before "L4").
BANDWIDTH_GBS: tuple[tuple[str, float], ...] = (
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB", 2039.0),
    ("A100-PCIE-80GB", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("L40", 864.0),
    ("A10G", 600.0),
    ("L4", 300.0),
)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Shape:
    """A Llama shape (Llama 3.2 1B and Llama 3.1 8B for the real run)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    max_positions: int


SHAPES = {
    "1b": Shape("1b", 2048, 16, 32, 8, 8192, 128_256, True, 4096),
    "8b": Shape("8b", 4096, 32, 32, 8, 14336, 128_256, False, 4096),
    "tiny": Shape("tiny", 64, 2, 4, 2, 128, 0, False, 512),
}


@dataclass(frozen=True)
class Plan:
    """Counts for one run: the real GPU run, or the dry run on CPU."""

    device: str
    dtype: str
    shapes: tuple[str, ...]
    docs: int
    reviews_per_doc: int
    score_batch: int
    decode_batches: tuple[int, ...]
    prompt_tokens: int
    new_tokens: int
    repeats: int
    adapters: int
    lora_docs: int


GPU_PLAN = Plan("cuda", "bfloat16", ("1b", "8b"), 512, 8, 32, (1, 32), 128, 64, 3, 4, 256)
DRY_PLAN = Plan("cpu", "float32", ("tiny",), 16, 2, 8, (1, 32), 16, 8, 1, 4, 8)


class CheckError(Exception):
    """A condition that stops the check, with a message for the user."""


# --------------------------------------------------------------------------- building


def build_task(workdir: Path, plan: Plan) -> tuple[Any, Any]:
    """The synthetic task (loaded by the benchmarks' task loader) and a tokenizer for it."""
    from benchmarks.tasks.task import load_task
    from supersede.demo.zoo import build_tokenizer, review_examples, write_jsonl

    reviews = review_examples(plan.docs * plan.reviews_per_doc, seed=20_240_601)
    rows = []
    for d in range(plan.docs):
        chunk = reviews[d * plan.reviews_per_doc : (d + 1) * plan.reviews_per_doc]
        rows.append({"text": " ".join(r["text"] for r in chunk), "label": chunk[-1]["label"]})
    folder = workdir / "task"
    write_jsonl(folder / "test.jsonl", rows)
    task_file = folder / "gpu_check_reviews.yaml"
    choices = json.dumps(list(MULTI_TOKEN_CHOICES))
    task_file.write_text(TASK_YAML.format(variant="two-token", name="gpu_check_reviews",
                                          choices=choices), encoding="utf-8")  # fmt: skip
    corpus = [f"Review: {row['text']}\nSentiment:" for row in rows]
    corpus += [" " + c for c in MULTI_TOKEN_CHOICES]
    vocab = max(SHAPES[name].vocab for name in plan.shapes)
    return load_task(task_file), build_tokenizer(corpus, pad_vocab_to=vocab)


def build_model(shape: Shape, tokenizer: Any, plan: Plan, seed: int = 0) -> Any:
    """A random Llama model built in place on the device, in the plan's dtype."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=shape.tied,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, plan.dtype))
    try:
        with torch.device(plan.device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()  # type: ignore[no-untyped-call]
    return model


def in_memory(model: Any, tokenizer: Any, name: str, plan: Plan) -> Any:
    """A :class:`LoadedModel` around a model built in memory (no folder behind it)."""
    from benchmarks.models import LoadedModel, ModelRef, ResolvedModel

    base = ResolvedModel(
        ref=ModelRef(text=f"random-{name}"), kind="model", local_dir=Path("."), revision="random"
    )
    return LoadedModel(model, tokenizer, base, (), plan.device, plan.dtype)


def step_bytes(model: Any) -> int:
    """Weight bytes read by one forward pass: every parameter, except the input embedding table
    when it is not tied to the output head (a pass reads only its own tokens' rows of it)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    if not model.config.tie_word_embeddings:
        total -= embed.numel() * embed.element_size()
    return int(total)


# --------------------------------------------------------------------------- measuring


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def roofline(bytes_per_pass: int, seconds_per_pass: float, bandwidth_gbs: float | None) -> Any:
    """Achieved weight-read bandwidth over the card's: a float, or "n/a"/"unknown"."""
    if bandwidth_gbs is None:
        return "unknown"
    if bandwidth_gbs <= 0:
        return "n/a"
    return bytes_per_pass / seconds_per_pass / (bandwidth_gbs * 1e9)


def measure_scoring(
    loaded: Any, task: Any, plan: Plan, limit: int, nbytes: int, bw: float | None
) -> dict[str, Any]:
    """The engine's multiple-choice path, timed by the engine itself."""
    from benchmarks.runner import run_task

    sync(plan.device)
    started = time.perf_counter()
    result = run_task(loaded, task, limit=limit, batch_size=plan.score_batch)
    sync(plan.device)
    wall = time.perf_counter() - started
    stats = result.stats
    per_batch = stats.scoring_s / max(stats.batches, 1)
    return {
        "examples": result.n,
        "batch_size": plan.score_batch,
        "batches": stats.batches,
        "tokens": stats.tokens,
        "scoring_s": stats.scoring_s,
        "wall_s": wall,
        "tokens_per_s": stats.tokens_per_s,
        "mean_batch_s": per_batch,
        "roofline_fraction": roofline(nbytes, per_batch, bw),
        "accuracy": result.score,
        "peak_memory_mb": stats.peak_memory_mb,
    }


def prompt_ids(loaded: Any, task: Any, batch: int, length: int) -> Any:
    """``batch`` rows of exactly ``length`` real tokens taken from the task's contexts."""
    import torch

    stream: list[int] = []
    for request in task.requests():
        stream += loaded.tokenizer.encode(request.context, add_special_tokens=False)
        if len(stream) >= batch * length:
            break
    while len(stream) < batch * length:
        stream += stream or [loaded.tokenizer.eos_token_id]
    return torch.tensor(stream[: batch * length], dtype=torch.long).view(batch, length)


def measure_decode(
    loaded: Any, task: Any, plan: Plan, batch: int, nbytes: int, bw: float | None
) -> dict[str, Any]:
    """Greedy decode of exactly ``new_tokens`` per row; a step's time is the difference between
    ``new_tokens`` and 1 new token, over ``new_tokens - 1`` (so the prompt's pass cancels)."""
    import torch

    model = loaded.model
    ids = prompt_ids(loaded, task, batch, plan.prompt_tokens).to(plan.device)
    mask = torch.ones_like(ids)
    pad = loaded.tokenizer.pad_token_id

    def timed(new: int) -> float:
        sync(plan.device)
        t0 = time.perf_counter()
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=pad,
        )
        sync(plan.device)
        elapsed = time.perf_counter() - t0
        if out.shape[1] != ids.shape[1] + new:
            raise CheckError(f"decode made {out.shape[1] - ids.shape[1]} tokens, not {new}")
        return elapsed

    with torch.inference_mode():
        timed(2)  # warm-up: kernel selection and the cache's first allocations
        full = min(timed(plan.new_tokens) for _ in range(plan.repeats))
        first = min(timed(1) for _ in range(plan.repeats))
    step = max(full - first, 1e-9) / (plan.new_tokens - 1)
    return {
        "batch": batch,
        "prompt_tokens": plan.prompt_tokens,
        "new_tokens": plan.new_tokens,
        "generate_s": full,
        "step_s": step,
        "tokens_per_s": batch / step,
        "roofline_fraction": roofline(nbytes, step, bw),
    }


def peak_gib(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.max_memory_allocated()) / GIB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def check_model(
    shape: Shape,
    tokenizer: Any,
    task: Any,
    plan: Plan,
    bw: float | None,
    lora_dir: Path | None = None,
) -> dict[str, Any]:
    """One model's figures; with ``lora_dir``, the model and its adapters are saved there."""
    from config.workers import WorkersSettings
    from workers.routing import need_gib

    free(plan.device)
    reset_peak(plan.device)
    t0 = time.perf_counter()
    model = build_model(shape, tokenizer, plan)
    sync(plan.device)
    build_s = time.perf_counter() - t0
    loaded = in_memory(model, tokenizer, shape.name, plan)
    params = sum(p.numel() for p in model.parameters())
    nbytes = step_bytes(model)
    scoring = measure_scoring(loaded, task, plan, plan.docs, nbytes, bw)
    decode = [measure_decode(loaded, task, plan, b, nbytes, bw) for b in plan.decode_batches]
    overhead = WorkersSettings().memory_overhead
    estimate = need_gib(params, plan.dtype, overhead)
    peak = peak_gib(plan.device)
    figures = {
        "name": shape.name,
        "shape": shape.__dict__,
        "parameters": params,
        "weight_bytes_per_pass": nbytes,
        "build_s": build_s,
        "scoring": scoring,
        "decode": decode,
        "memory": {
            "measured": "torch.cuda.max_memory_allocated"
            if plan.device.startswith("cuda")
            else "process peak resident set (CPU)",
            "peak_gib": peak,
            "estimate_gib": estimate,
            "memory_overhead": overhead,
            "peak_over_estimate": peak / estimate,
        },
    }
    if lora_dir is not None:
        save_base_and_adapters(model, tokenizer, plan, lora_dir)
    del loaded, model
    free(plan.device)
    return figures


# --------------------------------------------------------------------------- LoRA


def save_base_and_adapters(model: Any, tokenizer: Any, plan: Plan, workdir: Path) -> None:
    """The model as safetensors in ``workdir/base`` and ``plan.adapters`` random LoRA adapters
    of it in ``workdir/adapter-<i>``."""
    import torch
    from peft import LoraConfig, get_peft_model

    base_dir = workdir / "base"
    model.save_pretrained(base_dir, safe_serialization=True)
    tokenizer.save_pretrained(base_dir)
    adapter_dirs = []
    for i in range(plan.adapters):
        torch.manual_seed(100 + i)
        config = LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=LORA_TARGETS,
            lora_dropout=0.0,
            init_lora_weights=False,  # random A and B: each adapter changes the scores
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, config)
        folder = workdir / f"adapter-{i}"
        peft_model.save_pretrained(str(folder), safe_serialization=True)
        model = peft_model.unload()
        adapter_dirs.append(folder)


def check_lora(task: Any, plan: Plan, workdir: Path) -> dict[str, Any]:
    """Base + ``plan.adapters`` random LoRA adapters: one base load vs a fresh load each."""
    from benchmarks.models import ModelRef, ResolvedModel, adapter_name, load_model
    from benchmarks.runner import run_task
    from config.settings import RuntimeSettings

    base_dir = workdir / "base"
    adapter_dirs = [workdir / f"adapter-{i}" for i in range(plan.adapters)]

    def resolved(folder: Path, kind: Any) -> ResolvedModel:
        return ResolvedModel(ModelRef(text=str(folder), path=folder), kind, folder, folder.name)

    base = resolved(base_dir, "model")
    adapters = [resolved(folder, "adapter") for folder in adapter_dirs]
    runtime = RuntimeSettings(device=plan.device, dtype=plan.dtype)

    # Untimed: the first load and scoring in a process pay for imports and kernel selection.
    warm = load_model(base, runtime, adapters[:1])
    run_task(warm, task, limit=plan.score_batch, batch_size=plan.score_batch)
    del warm
    free(plan.device)

    # One base load with every adapter attached, then each adapter scored in turn.
    sync(plan.device)
    t0 = time.perf_counter()
    loaded = load_model(base, runtime, adapters)
    sync(plan.device)
    shared_load_s = time.perf_counter() - t0
    shared_scores, shared_walls = [], []
    for adapter in adapters:
        t0 = time.perf_counter()
        loaded.use_adapter(adapter_name(adapter))
        result = run_task(loaded, task, limit=plan.lora_docs, batch_size=plan.score_batch)
        sync(plan.device)
        shared_walls.append(time.perf_counter() - t0)
        shared_scores.append(result.predictions)
    del loaded
    free(plan.device)

    # A fresh load of the base with one adapter, for each adapter.
    fresh_loads, fresh_walls, fresh_scores = [], [], []
    for adapter in adapters:
        sync(plan.device)
        t0 = time.perf_counter()
        loaded = load_model(base, runtime, [adapter])
        sync(plan.device)
        fresh_loads.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        result = run_task(loaded, task, limit=plan.lora_docs, batch_size=plan.score_batch)
        sync(plan.device)
        fresh_walls.append(time.perf_counter() - t1)
        fresh_scores.append(result.predictions)
        del loaded
        free(plan.device)

    n = len(adapters)
    shared_per = (shared_load_s + sum(shared_walls)) / n
    fresh_per = (sum(fresh_loads) + sum(fresh_walls)) / n
    return {
        "adapters": n,
        "rank": 8,
        "examples": plan.lora_docs,
        "shared_load_s": shared_load_s,
        "shared_score_s": shared_walls,
        "shared_per_adapter_s": shared_per,
        "fresh_load_s": fresh_loads,
        "fresh_score_s": fresh_walls,
        "fresh_per_adapter_s": fresh_per,
        "shared_over_fresh": shared_per / fresh_per,
        "predictions_equal": shared_scores == fresh_scores,
        "adapters_differ": len({tuple(p) for p in shared_scores}) > 1,
    }


# --------------------------------------------------------------------------- report


def bandwidth(plan: Plan, option: float | None) -> tuple[str, float | None, str]:
    """The device's name, its bandwidth in GB/s (0 = not applicable), and where it came from."""
    if not plan.device.startswith("cuda"):
        return "cpu", 0.0, "n/a"
    import torch

    name = str(torch.cuda.get_device_name())
    if option is not None:
        return name, option, "--bandwidth-gbs"
    for key, gbs in BANDWIDTH_GBS:
        if key.lower() in name.lower():
            return name, gbs, f"table ({key})"
    return name, None, "unknown"


def fmt(value: Any, spec: str = ".3g") -> str:
    return format(value, spec) if isinstance(value, float | int) else str(value)


def table(report: dict[str, Any]) -> str:
    """One Markdown table of every figure."""
    device = report["device"]
    if device["source"] == "n/a":
        where = "roofline n/a on CPU"
    elif device["source"] == "unknown":
        where = "bandwidth unknown (give --bandwidth-gbs)"
    else:
        where = f"bandwidth {device['bandwidth_gbs']:g} GB/s from {device['source']}"
    lines = [
        f"GPU check on {device['name']} ({report['dtype']}); {where}",
        "",
        "| model | figure | value | of roofline |",
        "|---|---|---|---|",
    ]
    for m in report["models"]:
        count = m["parameters"]
        name = f"{m['name']} ({count / 1e9:.2f}B)" if count >= 1e8 else f"{m['name']} ({count:,})"
        s = m["scoring"]
        lines.append(
            f"| {name} | multiple-choice scoring, tokens/s (batch {s['batch_size']}, "
            f"{s['examples']} docs) | {s['tokens_per_s']:,.0f} | {fmt(s['roofline_fraction'])} |"
        )
        for d in m["decode"]:
            lines.append(
                f"| {name} | greedy decode, tokens/s at batch {d['batch']} "
                f"({d['step_s'] * 1e3:.2f} ms/step) | {d['tokens_per_s']:,.0f} | "
                f"{fmt(d['roofline_fraction'])} |"
            )
        mem = m["memory"]
        lines.append(
            f"| {name} | peak memory GiB / routing estimate GiB (overhead "
            f"{mem['memory_overhead']:g}) | {mem['peak_gib']:.2f} / {mem['estimate_gib']:.2f} "
            f"= {mem['peak_over_estimate']:.2f} | |"
        )
    lora = report["lora"]
    lines.append(
        f"| {report['models'][0]['name']} + {lora['adapters']} LoRA (r={lora['rank']}) | s per "
        f"adapter, one base load / a fresh load each | {lora['shared_per_adapter_s']:.2f} / "
        f"{lora['fresh_per_adapter_s']:.2f} = {lora['shared_over_fresh']:.2f} | |"
    )
    lines.append("")
    lines.append(
        f"predictions equal (one load vs fresh): {lora['predictions_equal']}; "
        f"total {report['total_s']:.1f} s"
    )
    return "\n".join(lines)


def run(plan: Plan, bandwidth_option: float | None, workdir: Path) -> dict[str, Any]:
    import torch
    import transformers

    started = time.perf_counter()
    if plan.device == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    name, bw, source = bandwidth(plan, bandwidth_option)
    task, tokenizer = build_task(workdir, plan)
    lora_dir = workdir / "lora"
    models = [
        check_model(SHAPES[shape], tokenizer, task, plan, bw, lora_dir if i == 0 else None)
        for i, shape in enumerate(plan.shapes)
    ]
    lora = check_lora(task, plan, lora_dir)
    return {
        "dry_run": plan.device == "cpu",
        "device": {"name": name, "bandwidth_gbs": bw if bw else source, "source": source},
        "dtype": plan.dtype,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "plan": plan.__dict__,
        "models": models,
        "lora": lora,
        "total_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="A tiny float32 model on the CPU, small counts."
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Where the JSON goes.")
    parser.add_argument(
        "--bandwidth-gbs",
        type=float,
        default=None,
        help="The card's memory bandwidth in GB/s (default: from a table by the card's name).",
    )
    args = parser.parse_args(argv)
    if args.bandwidth_gbs is not None and args.bandwidth_gbs <= 0:
        parser.error("--bandwidth-gbs must be positive")
    sys.path.insert(0, str(HERE))
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("HF_HUB_DISABLE_TELEMETRY", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", category=FutureWarning)
    import torch

    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --dry-run to check the path on CPU")
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            report = run(plan, args.bandwidth_gbs, Path(tmp))
    except torch.cuda.OutOfMemoryError as exc:
        print(f"gpu_check: out of GPU memory: {str(exc).splitlines()[0]}")
        return 2
    except CheckError as exc:
        print(f"gpu_check: {exc}")
        return 2
    print(table(report))
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        print(f"gpu_check: cannot write {args.out}: {exc.strerror or exc}")
        return 2
    print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
