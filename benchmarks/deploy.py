"""Can a candidate be deployed in the fine-tune's place? Licence, serving memory and latency.

Checked in two steps:

1. **Before any download** (:func:`probe` then :func:`assess`): the licence from the Hub's
   metadata (card data ``license``, with ``license_name``/``license_link`` for ``other``, else
   a ``license:`` tag; a local folder's ``README.md`` card; an API candidate's configured
   ``license``) and the memory needed to serve, from the parameter count and ``config.json``
   (KV cache geometry). A candidate these block is not benchmarked unless
   ``deploy.benchmark_blocked`` asks for it.
2. **After the benchmark** (:func:`final`): the memory again, with the prompt and output lengths
   the run measured, and the per-request p95 latency at batch size 1 against
   ``deploy.latency_p95_ms``.

Each check ends ``ok``, ``blocked`` (the candidate cannot replace the fine-tune as configured),
``review`` (a person must decide: a vendor's own or a missing licence, an unknown size) or
``unchecked`` (its setting is unset, or there is nothing to check: the verdict says which).

Memory to serve = parameters x bytes per parameter of ``deploy.dtype``
+ KV cache per token x (longest prompt + longest output, in tokens) x ``deploy.concurrency``,
against ``deploy.gpu_memory_gb`` x ``deploy.gpu_count`` x ``deploy.memory_utilization``.
KV cache per token = 2 (K and V) x layers x KV heads x head size x 2 bytes (4 in float32; the
cache stays 16-bit when weights are served in int8 or int4).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from config.settings import SERVING_DTYPE_BYTES, DeploySettings

if TYPE_CHECKING:
    from benchmarks.models import ModelResolver
    from benchmarks.tasks.task import Task
    from config.api import ApiCandidate
    from config.settings import PromptSettings

GIB = 1024**3
#: Characters per token assumed for the prompt-length estimate made before a tokenizer is
#: fetched: English text averages about four; three keeps the KV cache estimate on the safe side.
CHARS_PER_TOKEN_ESTIMATE = 3.0

#: Licence ids of the Hub's licence list that are standard, published licences (SPDX and the
#: like). One of these not in ``deploy.licenses`` blocks: its terms are known, and were not
#: allowed. Any other id (a vendor's own: llama3.1, gemma, ...) needs a person's review.
_STANDARD = """apache-2.0 mit afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause
    bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0
    cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
    cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
    cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 eupl-1.1 eupl-1.2
    agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0
    odc-by odbl openrail openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl
    bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m"""
STANDARD_LICENSES = frozenset(_STANDARD.split())

CheckName = Literal["licence", "memory", "latency"]
Status = Literal["ok", "blocked", "review", "unchecked"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class License(_Frozen):
    """A candidate's licence as its publisher declared it."""

    id: str | None = Field(None, description="Hub / SPDX id (lower case); None: none found.")
    name: str | None = Field(None, description="license_name, for a licence of id 'other'.")
    link: str | None = Field(None, description="license_link, for a licence of id 'other'.")
    source: str = Field(description="Where it was read: 'card data', 'tags', 'README.md', ...")

    @property
    def shown(self) -> str:
        """``apache-2.0``; ``other (acme-research)``; ``none found``."""
        if self.id is None:
            return "none found"
        return f"{self.id} ({self.name})" if self.id == "other" and self.name else self.id


class ModelFacts(_Frozen):
    """What the deploy checks need to know of a model, read without downloading its weights."""

    license: License | None = Field(None, description="None: not checked (say why in `note`).")
    license_note: str | None = None
    params: int | None = None
    #: KV cache bytes per token at 16 bits (all layers, K and V); None: unknown architecture.
    kv_bytes_per_token: int | None = None
    #: Longest prompt + output of the task, in tokens (estimated, or measured after the run).
    tokens_per_request: int | None = None
    tokens_measured: bool = False
    api: bool = False


class Check(_Frozen):
    """One deploy check's outcome, in a lead's words."""

    check: CheckName
    status: Status
    detail: str


def _checked(check: CheckName, status: Status, detail: str) -> Check:
    return Check(check=check, status=status, detail=detail)


class Deployability(_Frozen):
    """Every deploy check of a candidate for one fine-tune, and the figures behind them."""

    checks: tuple[Check, ...] = ()
    facts: ModelFacts = ModelFacts()
    serving_memory_gb: float | None = None
    available_memory_gb: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_target_ms: float | None = None
    #: False when the candidate was blocked before the benchmark and not run.
    benchmarked: bool = True

    @property
    def blockers(self) -> tuple[str, ...]:
        return tuple(c.detail for c in self.checks if c.status == "blocked")

    @property
    def reviews(self) -> tuple[str, ...]:
        return tuple(c.detail for c in self.checks if c.status == "review")

    @property
    def license(self) -> str | None:
        lic = self.facts.license
        return lic.shown if lic is not None else None


# ---------------------------------------------------------------------------------- licences


def _first(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    text = str(value).strip().lower() if value is not None else ""
    return text or None


def license_from_card(card: dict[str, Any] | None, tags: Any, source: str) -> License:
    """The licence in a model card's metadata (``license``, and ``license_name`` /
    ``license_link`` for ``other``), else in the Hub's ``license:<id>`` tags."""
    card = card or {}
    found = _first(card.get("license"))
    if found is not None:
        name = _first(card.get("license_name"))
        link = card.get("license_link")
        return License(id=found, name=name, link=str(link) if link else None, source=source)
    for tag in tags or ():
        if isinstance(tag, str) and tag.lower().startswith("license:"):
            return License(id=_first(tag.partition(":")[2]), source="tags")
    return License(id=None, source=source)


def check_license(facts: ModelFacts, allowed: tuple[str, ...] | None) -> Check:
    """Allowed (``ok``), a standard licence not allowed (``blocked``), a vendor's own, ``other``
    or none found (``review``), or not checked."""
    lic = facts.license
    if allowed is None:
        return _checked("licence", "unchecked", "licences not checked (deploy.licenses is null)")
    if lic is None:
        return _checked("licence", "unchecked", facts.license_note or "licence not checked")
    permitted = {entry.strip().lower() for entry in allowed}
    accept = "allow it in deploy.licenses once accepted"
    if lic.id is None:
        return _checked("licence", "review", f"no licence found ({lic.source}): needs review")
    if lic.id in permitted or (lic.id == "other" and lic.name in permitted):
        return _checked("licence", "ok", f"licence {lic.shown} allowed")
    if lic.id == "other":
        link = f", {lic.link}" if lic.link else ""
        name = lic.name or "other"
        return _checked("licence", "review", f"custom licence {name}{link} needs review ({accept})")
    if lic.id in STANDARD_LICENSES:
        return _checked("licence", "blocked", f"licence {lic.id} not allowed")
    return _checked("licence", "review", f"licence {lic.id} (the vendor's own) needs review "
                    f"({accept})")  # fmt: skip


# ---------------------------------------------------------------------------------- size


def kv_bytes_per_token(config: dict[str, Any]) -> int | None:
    """KV cache bytes per token at 16 bits, from a transformers ``config.json`` (a multimodal
    config's ``text_config`` when there is one); None when its geometry is not given."""
    text = config.get("text_config")
    if isinstance(text, dict):
        config = {**config, **text}
    try:
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return 2 * layers * kv_heads * head_dim * 2


def local_params(folder: Path) -> int | None:
    """Parameters in a folder's safetensors files, from their headers (no tensor is read)."""
    total = 0
    files = sorted(folder.glob("*.safetensors"))
    for file in files:
        try:
            with file.open("rb") as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                if size > 100 * 2**20:
                    return None
                header = json.loads(handle.read(size))
        except (OSError, ValueError, struct.error):
            return None
        for name, tensor in header.items():
            if name != "__metadata__" and isinstance(tensor, dict):
                total += math.prod(int(d) for d in tensor.get("shape", ()))
    return total or None


def request_tokens_estimate(task: Task, prompt: PromptSettings | None) -> int:
    """The task's longest request (prompt + output) in tokens, estimated from characters
    before any tokenizer is fetched (:data:`CHARS_PER_TOKEN_ESTIMATE`)."""
    if prompt is not None and prompt.num_fewshot is not None:
        task = task.with_num_fewshot(prompt.num_fewshot)
    longest = 0
    for request in task.requests(None):
        output = max(map(len, request.continuations), default=0)
        longest = max(longest, len(request.context) + output)
    tokens = math.ceil(longest / CHARS_PER_TOKEN_ESTIMATE)
    if task.output_type != "multiple_choice":
        tokens += task.max_gen_toks
    return tokens


# ---------------------------------------------------------------------------------- probing


def probe(
    resolver: ModelResolver,
    candidate: str,
    *,
    api: ApiCandidate | None,
    tokens: int | None,
) -> ModelFacts:
    """A candidate's licence and size, read without downloading weights: the Hub's model info
    and ``config.json`` (a local folder's own files; an API candidate's configured rule)."""
    from benchmarks.models import ModelRef, check_weight_files

    if api is not None:
        if api.license is None:
            return ModelFacts(license_note="API candidate: its terms are not checked (set the "
                              "rule's license)", api=True)  # fmt: skip
        return ModelFacts(license=License(id=api.license.lower(), source="API rule"), api=True)
    ref = ModelRef.parse(candidate)
    if ref.path is not None:
        return _probe_folder(ref.path, tokens)
    assert ref.repo_id is not None
    name = ref.text
    info = resolver.adapter.model_info(ref.repo_id, revision=ref.revision, name=name)
    card = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
    lic = license_from_card(card, getattr(info, "tags", None), "card data")
    safetensors = getattr(info, "safetensors", None)
    params = int(safetensors.total) if safetensors and safetensors.total else None
    kv = None
    sha = getattr(info, "sha", None) or ref.revision
    files = {s.rfilename for s in (getattr(info, "siblings", None) or [])}
    # The loading policy first: a refused model (pickle weights only) has nothing fetched.
    check_weight_files(name, files, "model")
    if sha and "config.json" in files:
        path = resolver.adapter.download(ref.repo_id, "config.json", revision=sha, name=name)
        kv = kv_bytes_per_token(_read_config(path))
    if params is None:
        weights = resolver.weight_bytes(ref.repo_id, sha)
        if weights:
            from benchmarks.models import estimate_params

            params = estimate_params(weights)
    return ModelFacts(license=lic, params=params, kv_bytes_per_token=kv, tokens_per_request=tokens)


def _probe_folder(folder: Path, tokens: int | None) -> ModelFacts:
    from huggingface_hub.repocard import metadata_load

    card_file = folder / "README.md"
    lic = None
    note = None
    if card_file.is_file():
        try:
            card = metadata_load(card_file)
        except (ValueError, OSError):
            card = None
        lic = license_from_card(card, None, "README.md card")
    else:
        note = "a local folder with no README.md card: its licence is not checked"
    config = folder / "config.json"
    kv = kv_bytes_per_token(_read_config(config)) if config.is_file() else None
    return ModelFacts(
        license=lic, license_note=note, params=local_params(folder), kv_bytes_per_token=kv,
        tokens_per_request=tokens,
    )  # fmt: skip


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------- checks


def serving_memory_gib(facts: ModelFacts, deploy: DeploySettings) -> tuple[float, str] | None:
    """GiB needed to serve the candidate, and how it adds up; None when its size is unknown."""
    if facts.params is None:
        return None
    weights = facts.params * SERVING_DTYPE_BYTES[deploy.dtype] / GIB
    parts = f"{gib(weights)} of {deploy.dtype} weights"
    kv = 0.0
    if facts.kv_bytes_per_token is not None and facts.tokens_per_request:
        per_token = facts.kv_bytes_per_token * (2 if deploy.dtype == "float32" else 1)
        kv = per_token * facts.tokens_per_request * deploy.concurrency / GIB
        how = "measured" if facts.tokens_measured else "estimated"
        parts += (
            f" + {gib(kv)} of KV cache for {deploy.concurrency} requests of "
            f"{facts.tokens_per_request:,} tokens ({how})"
        )
    elif facts.kv_bytes_per_token is None:
        parts += " (KV cache unknown: config.json gives no attention geometry)"
    return weights + kv, parts


def gib(value: float) -> str:
    """``41.2 GiB``, ``0.35 GiB``, ``140 GiB``; below a tenth of a GiB in MiB (``12 MiB``), so a
    small model's figure never reads as zero."""
    if value >= 100:
        return f"{value:,.0f} GiB"
    if value >= 0.1:
        return f"{value:.1f} GiB" if value >= 1 else f"{value:.2g} GiB"
    mib = value * 1024
    return f"{mib:.2g} MiB" if mib >= 0.01 else "under 0.01 MiB"


def ms(value: float) -> str:
    """``840 ms``, ``3.2 ms``, ``0.004 ms``."""
    if value >= 10:
        return f"{value:,.0f} ms"
    return f"{value:.2g} ms"


def check_memory(facts: ModelFacts, deploy: DeploySettings) -> tuple[Check, float | None]:
    """Whether the candidate fits the serving GPUs, and the GiB it needs."""
    if facts.api:
        return _checked("memory", "unchecked", "served by its API"), None
    need = serving_memory_gib(facts, deploy)
    needed = need[0] if need is not None else None
    if deploy.gpu_memory_gb is None:
        detail = "serving memory not checked (deploy.gpu_memory_gb is null)"
        if need is not None:
            detail = f"needs {gib(need[0])} to serve; {detail}"
        return _checked("memory", "unchecked", detail), needed
    if need is None:
        unknown = "size unknown (no parameter count): check it fits by hand"
        return _checked("memory", "review", unknown), None
    usable = deploy.gpu_memory_gb * deploy.gpu_count * deploy.memory_utilization
    gpus = f"{deploy.gpu_memory_gb:g} GiB"
    if deploy.gpu_count > 1:
        gpus = f"{deploy.gpu_count} x {gpus}"
    if need[0] > usable:
        detail = (
            f"needs {gib(need[0])}, serving GPUs have {gpus} "
            f"({gib(usable)} usable at {deploy.memory_utilization:.0%}): {need[1]}"
        )
        return _checked("memory", "blocked", detail), needed
    detail = f"fits: needs {gib(need[0])} of {gib(usable)} usable ({need[1]})"
    return _checked("memory", "ok", detail), needed


def check_latency(latency: dict[str, Any] | None, target: float | None) -> Check:
    """The candidate's measured per-request p95 against the target."""
    p95 = latency.get("p95_ms") if latency else None
    if target is None:
        shown = f"p95 {ms(p95)} per request; " if p95 is not None else ""
        return _checked("latency", "unchecked", f"{shown}no target (deploy.latency_p95_ms)")
    goal = f"the {ms(target)} target"
    if p95 is None:
        return _checked("latency", "review", f"latency not measured; {goal} is p95")
    if p95 > target:
        return _checked("latency", "blocked", f"p95 latency {ms(p95)} misses {goal}")
    return _checked("latency", "ok", f"p95 latency {ms(p95)} meets {goal}")


def assess(facts: ModelFacts, deploy: DeploySettings) -> Deployability:
    """The checks that can be made before the benchmark: licence and memory."""
    memory, need = check_memory(facts, deploy)
    available = (
        deploy.gpu_memory_gb * deploy.gpu_count * deploy.memory_utilization
        if deploy.gpu_memory_gb is not None else None
    )  # fmt: skip
    return Deployability(
        checks=(check_license(facts, deploy.licenses), memory),
        facts=facts,
        serving_memory_gb=need,
        available_memory_gb=available,
        latency_target_ms=deploy.latency_p95_ms,
    )


def final(
    before: Deployability,
    deploy: DeploySettings,
    extra: dict[str, Any] | None,
) -> Deployability:
    """Every check after the benchmark: the memory again with the measured request length
    (``extra``: the candidate's run result extras), and the latency."""
    facts = before.facts
    extra = extra or {}
    measured = extra.get("max_prompt_tokens")
    if isinstance(measured, int | float) and measured > 0:
        output = extra.get("max_output_tokens")
        total = int(measured) + (int(output) if isinstance(output, int | float) else 0)
        facts = facts.model_copy(update={"tokens_per_request": total, "tokens_measured": True})
    latency = extra.get("latency") if isinstance(extra.get("latency"), dict) else None
    again = assess(facts, deploy)
    checks = (*again.checks, check_latency(latency, deploy.latency_p95_ms))
    return again.model_copy(
        update={
            "checks": checks,
            "latency_p50_ms": latency.get("p50_ms") if latency else None,
            "latency_p95_ms": latency.get("p95_ms") if latency else None,
        }
    )
