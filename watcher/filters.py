"""What counts as a new foundation model: the derivative rules and the configured filters.

A repo is dropped when it is derived from another model by someone else (a fine-tune, adapter,
merge or quantization, as the Hub's ``base_model:<relation>:<parent>`` tags and the model card's
``base_model`` say), or is a format conversion (GGUF, GPTQ, AWQ, EXL2, MLX, bitsandbytes, ...).
One exception: a fine-tune whose every parent lives in the repo's own organisation is the
vendor's own instruct or chat release, and counts.

Before any of that, a repo is accepted only from the watched authors (``watch.hub.authors``, or a
feed's own ``accept_from``): a webhook delivery or a feed post naming anyone else's repo queues no
download and no GPU time. Every path (polling, webhooks, feed links) goes through :func:`decide`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from config.watch import HubWatch
from core.constants import PICKLE_WEIGHT_SUFFIXES

_RELATIONS = ("finetune", "adapter", "quantized", "merge")
#: Tags of quantized copies (set by the Hub from the quantization config or the files).
QUANTIZED_TAGS = frozenset(
    {"gptq", "awq", "exl2", "exl3", "bitsandbytes", "4-bit", "8-bit", "autoround", "hqq", "fp8"}
)
#: Libraries of weights converted for another runtime. (An ``onnx`` or ``gguf`` *tag* beside
#: safetensors weights is an official repo shipping extra formats, not a conversion.)
RUNTIME_LIBRARIES = frozenset({"gguf", "ggml", "mlx", "onnx", "openvino", "ctranslate2"})
#: Repo-name suffixes of conversions, e.g. ``-GGUF``, ``-AWQ``, ``-4bit``, ``-bnb-4bit``, ``-mlx``.
_CONVERSION_NAME = re.compile(
    r"[-_.](gguf|ggml|gptq|awq|exl2|exl3|mlx|onnx|openvino|bnb|int[48]|[248]bit|[248]-bit|"
    r"q[2-8](_k(_[sm])?|_0|_1)?|fp8|nf4|hqq|autoround|w4a16|w8a8)([-_.].*)?$",
    re.IGNORECASE,
)
_WEIGHT_SUFFIXES = (".safetensors", *PICKLE_WEIGHT_SUFFIXES)
#: The setting that names the accepted authors unless a feed names its own.
AUTHORS_SETTING = "watch.hub.authors"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepoFacts:
    """What the Hub says about a repo at one commit (from a listing, model info or webhook)."""

    repo_id: str
    sha: str | None
    tags: tuple[str, ...] = ()
    card_base_models: tuple[str, ...] = ()
    card_relation: str | None = None
    pipeline_tag: str | None = None
    library_name: str | None = None
    params: int | None = None
    created_at: datetime | None = None
    last_modified: datetime | None = None
    gated: bool = False
    private: bool = False
    #: File names at ``sha``; None when the listing did not include them.
    files: tuple[str, ...] | None = None

    @property
    def author(self) -> str:
        return self.repo_id.partition("/")[0] if "/" in self.repo_id else ""

    @classmethod
    def from_model_info(cls, info: Any) -> RepoFacts:
        """Facts from a ``huggingface_hub.ModelInfo`` (listing or model_info, any expand)."""
        card = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
        bases = card.get("base_model") or ()
        if isinstance(bases, str):
            bases = (bases,)
        safetensors = getattr(info, "safetensors", None)
        siblings = getattr(info, "siblings", None)
        return cls(
            repo_id=info.id,
            sha=getattr(info, "sha", None),
            tags=tuple(getattr(info, "tags", None) or ()),
            card_base_models=tuple(str(base) for base in bases),
            card_relation=card.get("base_model_relation"),
            pipeline_tag=getattr(info, "pipeline_tag", None),
            library_name=getattr(info, "library_name", None),
            params=int(safetensors.total) if safetensors and safetensors.total else None,
            created_at=getattr(info, "created_at", None),
            last_modified=getattr(info, "last_modified", None),
            gated=bool(getattr(info, "gated", False)),
            private=bool(getattr(info, "private", False)),
            files=None if siblings is None else tuple(s.rfilename for s in siblings),
        )


@dataclass(frozen=True)
class Decision:
    """``accept``; ``drop`` (not a release, ever); ``wait`` (not yet: look again later)."""

    action: Literal["accept", "drop", "wait"]
    reason: str = ""


ACCEPT = Decision("accept")


def parents(facts: RepoFacts) -> list[tuple[str, str]]:
    """``(relation, parent repo id)`` pairs from the tags, else from the model card."""
    found: list[tuple[str, str]] = []
    for tag in facts.tags:
        if not tag.startswith("base_model:"):
            continue
        rest = tag.removeprefix("base_model:")
        relation, sep, parent = rest.partition(":")
        if sep and relation in _RELATIONS:
            found.append((relation, parent))
    if not found:
        # Older tags name the parent without a relation; the card may carry the relation.
        plain = [t.removeprefix("base_model:") for t in facts.tags if t.startswith("base_model:")]
        relation = facts.card_relation if facts.card_relation in _RELATIONS else "finetune"
        found = [(str(relation), parent) for parent in (plain or facts.card_base_models)]
    return found


def derivative_reason(facts: RepoFacts) -> str | None:
    """Why ``facts`` describes a derivative rather than a foundation release (None: it does not)."""
    tags = {tag.lower() for tag in facts.tags}
    library = (facts.library_name or "").lower()
    if library in RUNTIME_LIBRARIES:
        return f"conversion ({library})"
    if "gguf" in tags and "safetensors" not in tags:
        return "conversion (gguf)"
    quantized = sorted(tags & QUANTIZED_TAGS)
    if quantized:
        return f"quantized copy ({quantized[0]})"
    name = facts.repo_id.rpartition("/")[2]
    if _CONVERSION_NAME.search(name):
        return f"conversion (name {name!r})"
    files = facts.files or ()
    if "adapter_config.json" in files and "config.json" not in files:
        return "adapter (adapter_config.json without a model config)"
    for relation, parent in parents(facts):
        own = parent.partition("/")[0].lower() == facts.author.lower() and "/" in parent
        if relation == "finetune" and own:
            continue  # the vendor's own instruct/chat model of its own base
        return f"{relation} of {parent}"
    return None


def author_reason(
    repo_id: str, accepted: Iterable[str], setting: str = AUTHORS_SETTING
) -> str | None:
    """Why ``repo_id`` is refused for its author (None: its author is accepted).

    Hub user and organisation names are matched without regard to case, as the Hub does.
    """
    author = repo_id.partition("/")[0] if "/" in repo_id else ""
    names = {name.lower() for name in accepted}
    if author and author.lower() in names:
        return None
    empty = "" if names else " (the list is empty)"
    return f"author {author or '(none)'} is not in {setting}{empty}"


def decide(
    facts: RepoFacts,
    rules: HubWatch,
    *,
    accept_from: Iterable[str] | None = None,
    accept_setting: str = AUTHORS_SETTING,
) -> Decision:
    """Apply the accepted authors, the derivative rules and the configured filters to one repo.

    The authors are ``rules.authors`` unless ``accept_from`` (named ``accept_setting`` in the
    reason) is given. A refused author is logged here, so every path says why it skipped a repo.
    """
    accepted = rules.authors if accept_from is None else accept_from
    refused = author_reason(facts.repo_id, accepted, accept_setting)
    if refused:
        log.info("%s skipped: %s", facts.repo_id, refused)
        return Decision("drop", refused)
    reason = derivative_reason(facts)
    if reason:
        return Decision("drop", reason)
    if rules.pipeline_tags and facts.pipeline_tag not in rules.pipeline_tags:
        return Decision("drop", f"pipeline tag {facts.pipeline_tag!r} not watched")
    if rules.include and not any(re.search(p, facts.repo_id) for p in rules.include):
        return Decision("drop", "matches no include pattern")
    for pattern in rules.exclude:
        if re.search(pattern, facts.repo_id):
            return Decision("drop", f"matches exclude pattern {pattern!r}")
    if facts.params is not None:
        if rules.min_params is not None and facts.params < rules.min_params:
            return Decision("drop", f"{facts.params:,} parameters < min_params")
        if rules.max_params is not None and facts.params > rules.max_params:
            return Decision("drop", f"{facts.params:,} parameters > max_params")
    if facts.files is not None and not any(f.endswith(_WEIGHT_SUFFIXES) for f in facts.files):
        # Vendors create the repo first and push the weights later: look again next time.
        return Decision("wait", "no weight files yet")
    return ACCEPT
