"""A tiny model zoo built on the fly, for the example run, the demo and the tests.

Nothing here is downloaded: a word-level tokenizer is built from the task's own text, a tiny
Llama-architecture model is initialised from a seed, and LoRA adapters or full fine-tunes are
trained for a few steps on the shipped review-sentiment task. Everything is saved as safetensors,
exactly as a real Hub repo would hold it, so the real loading code runs on it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("<unk>", "<pad>", "<s>", "</s>")
#: GPT-2-like pre-tokenization: words carry their leading space, so decoding is exact.
WORD_PATTERN = r" ?[A-Za-z0-9']+| ?[^\sA-Za-z0-9']+|\n| +"

PROMPT = "Review: {text}\nSentiment:"
CHOICES = ("negative", "positive")

_PRODUCTS = (
    "jacket",
    "handbag",
    "scarf",
    "watch",
    "sneakers",
    "dress",
    "wallet",
    "belt",
    "coat",
    "sunglasses",
    "boots",
    "shirt",
    "perfume",
    "necklace",
    "backpack",
)
_GOOD = (
    "great",
    "lovely",
    "excellent",
    "perfect",
    "beautiful",
    "comfortable",
    "elegant",
    "superb",
    "stylish",
    "sturdy",
)
_BAD = (
    "awful",
    "cheap",
    "broken",
    "flimsy",
    "ugly",
    "disappointing",
    "faulty",
    "scratched",
    "terrible",
    "uncomfortable",
)
_FILLER = (
    "arrived on time",
    "came in a nice box",
    "was a gift",
    "took a week to arrive",
    "is what I ordered",
    "fits as expected",
    "matches the photos",
)


def review_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """Synthetic retailer reviews; label 1 = positive. One in five is negated ("not great")."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        negated = rng.random() < 0.2
        words = _BAD if (label == 1) == negated else _GOOD
        adjective = rng.choice(words)
        product = rng.choice(_PRODUCTS)
        quality = f"not {adjective}" if negated else adjective
        text = f"The {product} is {quality} and {rng.choice(_FILLER)}."
        if rng.random() < 0.4:
            closers = (
                ("Would buy again.", "Five stars.") if label else ("Returned it.", "One star.")
            )
            text = f"{text} {rng.choice(closers)}"
        rows.append({"text": text, "label": label})
    return rows


def build_tokenizer(corpus: Iterable[str], *, pad_vocab_to: int = 0) -> Any:
    """A word-level fast tokenizer over ``corpus``; ``pad_vocab_to`` adds filler tokens."""
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
    vocab: dict[str, int] = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for text in corpus:
        for piece, _ in splitter.pre_tokenize_str(text):
            vocab.setdefault(piece, len(vocab))
    filler = 0
    while len(vocab) < pad_vocab_to:
        vocab.setdefault(f" w{filler}", len(vocab))
        filler += 1
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = splitter
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=512,
    )


#: The licence the zoo's models are published under (their README.md card says so).
ZOO_LICENSE = "apache-2.0"


def write_card(folder: Path, license_id: str = ZOO_LICENSE, **metadata: Any) -> Path:
    """A model card (``README.md``) whose metadata names the licence, as on the Hub."""
    import yaml

    front = yaml.safe_dump({"license": license_id, **metadata}, sort_keys=False)
    path = folder / "README.md"
    path.write_text(f"---\n{front}---\n\nA tiny model built for tests and the demo.\n")
    return path


def build_base(
    out_dir: Path,
    tokenizer: Any,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int = 128,
    max_positions: int = 256,
    seed: int = 0,
) -> Path:
    """A randomly initialised Llama-architecture model saved with its tokenizer (safetensors)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    write_card(out_dir)
    return out_dir


def _training_batches(
    tokenizer: Any, examples: Sequence[dict[str, Any]], batch_size: int, rng: random.Random
) -> Iterable[tuple[Any, Any, Any]]:
    """Right-padded (input_ids, attention_mask, labels) with loss on the answer token only."""
    import torch

    rows = list(examples)
    rng.shuffle(rows)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        seqs, targets = [], []
        for row in chunk:
            context = tokenizer(PROMPT.format(text=row["text"]), add_special_tokens=False)[
                "input_ids"
            ]
            answer = tokenizer(" " + CHOICES[row["label"]], add_special_tokens=False)["input_ids"]
            seqs.append(context + answer)
            targets.append([-100] * len(context) + answer)
        width = max(len(s) for s in seqs)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets])
        yield ids, mask, labels


def _train(
    model: Any, tokenizer: Any, examples: Sequence[dict[str, Any]], steps: int, lr: float, seed: int
) -> None:
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr)
    model.train()
    done = 0
    while done < steps:
        for ids, mask, labels in _training_batches(tokenizer, examples, 32, rng):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
            done += 1
            if done >= steps:
                break
    model.eval()


def _load_for_training(base_dir: Path) -> tuple[Any, Any]:
    """The base's tokenizer and a float32 copy of its weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    return tokenizer, AutoModelForCausalLM.from_pretrained(base_dir, dtype="float32")


def train_lora(
    base_dir: Path,
    out_dir: Path,
    examples: Sequence[dict[str, Any]],
    *,
    steps: int = 200,
    lr: float = 3e-3,
    rank: int = 16,
    seed: int = 0,
) -> Path:
    """Train a LoRA adapter on ``examples`` for a few steps; saves adapter_model.safetensors."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # the adapter's initial weights come from this seed too
    tokenizer, base = _load_for_training(base_dir)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    _train(model, tokenizer, examples, steps, lr, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


def train_full(
    base_dir: Path,
    out_dir: Path,
    examples: Sequence[dict[str, Any]],
    *,
    steps: int = 150,
    lr: float = 3e-3,
    seed: int = 0,
) -> Path:
    """Fully fine-tune a copy of the base for a few steps (a "newer model" or a full fine-tune)."""
    tokenizer, model = _load_for_training(base_dir)
    _train(model, tokenizer, examples, steps, lr, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    write_card(out_dir)
    return out_dir


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@dataclass(frozen=True)
class Zoo:
    """Paths of a built zoo: a base model, a LoRA fine-tune of it, and two "new releases":
    one trained to beat the fine-tune on the task and one that does not."""

    root: Path
    base: Path
    adapter: Path
    stronger: Path
    weaker: Path


def build_zoo(
    root: Path, train_rows: Sequence[dict[str, Any]], *, seed: int = 0, adapter_steps: int = 200
) -> Zoo:
    """Build the zoo on ``train_rows`` (reused once complete)."""
    zoo = Zoo(
        root=root,
        base=root / "base",
        adapter=root / "adapter",
        stronger=root / "release-stronger",
        weaker=root / "release-weaker",
    )
    marker = root / ".complete"
    if marker.is_file() and (zoo.stronger / "README.md").is_file():
        return zoo
    corpus = [PROMPT.format(text=row["text"]) for row in train_rows]
    corpus += [" " + choice for choice in CHOICES]
    corpus += [
        f"{p} {g} {b} {f}." for p in _PRODUCTS for g in _GOOD for b in _BAD for f in _FILLER[:1]
    ]
    corpus += ["The is not and Would buy again. Returned it. Five stars. One star.", *_FILLER]
    tokenizer = build_tokenizer(corpus)
    build_base(zoo.base, tokenizer, seed=seed)
    train_lora(zoo.base, zoo.adapter, train_rows, steps=adapter_steps, seed=seed)
    # Fully trained for longer than the adapter: it beats the fine-tune with plain prompting.
    train_full(zoo.base, zoo.stronger, train_rows, steps=150, seed=seed)
    # Trained briefly: better than the base, clearly short of the fine-tune.
    train_full(zoo.base, zoo.weaker, train_rows, steps=25, seed=seed + 1)
    marker.write_text("ok\n")
    return zoo
