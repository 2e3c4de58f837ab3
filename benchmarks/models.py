"""Safe model loading: references, revision pinning, the safetensors-only policy, devices.

A model reference is a Hub id with an optional ``@revision`` (``org/name@v1.2``) or a local
folder. A reference is first *resolved*: for the Hub, one ``model_info`` call pins the revision to
a commit sha and shows which files exist; the policy is checked on that listing (safetensors only,
no remote code unless allow-listed) before anything is downloaded, and then only safe files are
fetched, pinned to that sha. A local folder is pinned by a hash of its contents. Heavy libraries
(torch, transformers, peft) are imported only when a model is actually loaded.

What a release can make us download is bounded: only the top-level files a model needs
(:data:`MODEL_SUPPORT_FILES` and its safetensors weights: ``model.safetensors``, or the shards its
index names) are fetched, and their sizes from the listing must fit under a cap derived from the
parameter count and ``hub.max_download_gib`` before the first byte is downloaded. The Hub cache is
kept under ``hub.cache_max_gib`` by deleting the least recently used snapshots.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from config.settings import HubSettings, RuntimeSettings, Settings
from core.constants import (
    MODEL_FILE_PATTERNS,
    PICKLE_WEIGHT_SUFFIXES,
    REMOTE_CODE_PATTERNS,
)
from core.errors import (
    DownloadRefused,
    HubUnavailable,
    ModelBroken,
    ModelNotFound,
    PickleWeightsRefused,
    RemoteCodeRefused,
    SupersedeError,
)
from core.hub import HubAdapter

Kind = Literal["model", "adapter"]

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}/[\w.\-]{1,96}$|^[A-Za-z0-9][\w.\-]{0,95}$")

#: Top-level files a model needs besides its weights: config, generation settings, tokenizer
#: and chat template. Nothing else is fetched (no nested folder, no arbitrary *.json or *.txt).
MODEL_SUPPORT_FILES = frozenset(
    {
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json",
        "vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
        "chat_template.jinja", "chat_template.json",
    }
)  # fmt: skip
#: Tokenizer files named after the model (``cl100k_base.tiktoken``).
_TOKENIZER_SUFFIXES = (".tiktoken",)
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: A top-level file name with no path and no glob character (the download patterns are exact).
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*$")
#: A shard name a safetensors index may give: a plain top-level file name, no path, no glob.
_SHARD_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*\.safetensors$")
#: An index is a small JSON document; a larger one is refused before it is read.
_INDEX_MAX_BYTES = 32 * 1024 * 1024
#: Bytes per stored parameter, by the safetensors dtype names the Hub reports.
_STORED_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
    "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
#: Room over the weights' own bytes: safetensors headers, tokenizer, config, chat template.
CAP_SLACK_RATIO = 1.25
CAP_SLACK_BYTES = 32 * 1024 * 1024
GIB = 1024**3


#: Bytes per stored parameter assumed when only the weights' size is known: releases are
#: published in 16-bit almost always (bfloat16 or float16).
STORED_BYTES_GUESS = 2


def estimate_params(weight_bytes: int) -> int:
    """A parameter count from the size of the safetensors weights (16-bit storage assumed)."""
    return max(weight_bytes // STORED_BYTES_GUESS, 1)


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: ``repo_id`` (+ optional ``revision``) on the Hub, or a local ``path``."""

    text: str
    repo_id: str | None = None
    revision: str | None = None
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse ``org/name[@revision]``, or a local folder (existing or path-like)."""
        text = text.strip()
        if not text:
            raise ModelNotFound("empty model reference: give a Hub id like org/name or a folder")
        candidate = Path(text).expanduser()
        if candidate.exists() or text.startswith(("/", "./", "../", "~", ".\\")):
            return cls(text=text, path=candidate.resolve())
        repo_id, _, revision = text.partition("@")
        if not _REPO_ID.match(repo_id) or ".." in repo_id:
            raise ModelNotFound(
                f"{text!r} is neither an existing folder nor a Hub id like org/name[@revision]"
            )
        return cls(text=text, repo_id=repo_id, revision=revision or None)

    @property
    def is_local(self) -> bool:
        return self.path is not None


@dataclass(frozen=True)
class ResolvedModel:
    """A reference pinned to an exact version and downloaded (safe files only) to ``local_dir``."""

    ref: ModelRef
    kind: Kind
    local_dir: Path
    #: The Hub commit sha, or ``sha256:<hex>`` of a local folder's contents.
    revision: str
    trust_remote_code: bool = False

    @property
    def name(self) -> str:
        return self.ref.repo_id or str(self.ref.path)


def _is_pickle(name: str) -> bool:
    return name.lower().endswith(PICKLE_WEIGHT_SUFFIXES)


def check_weight_files(name: str, files: Iterable[str], kind: Kind) -> None:
    """Apply the safetensors-only policy to a file listing (top-level files count).

    A model needs ``model.safetensors`` or ``model.safetensors.index.json``. An adapter needs
    exactly ``adapter_config.json`` and ``adapter_model.safetensors``, and no pickle file beside
    them: peft picks its weight file by its own rules, so a decoy ``adapter_model-x.safetensors``
    next to an ``adapter_model.bin`` would get the pickle loaded.
    """
    top = [f for f in files if "/" not in f]
    pickles = sorted(f for f in top if _is_pickle(f))
    if kind == "adapter":
        if ADAPTER_CONFIG not in top:
            raise ModelNotFound(f"{name}: no adapter_config.json, so it is not a PEFT adapter")
        if pickles:
            raise PickleWeightsRefused(
                f"{name}: refused: the adapter folder holds pickle files "
                f"({', '.join(pickles[:3])}); pickle files can run code when loaded, and peft may "
                f"pick one over a safetensors file. Publish only {ADAPTER_CONFIG} and "
                f"{ADAPTER_WEIGHTS}"
            )
        if ADAPTER_WEIGHTS not in top:
            raise ModelNotFound(f"{name}: no {ADAPTER_WEIGHTS} (the only adapter weights loaded)")
        return
    if SAFE_WEIGHTS in top or SAFE_INDEX in top:
        return
    if pickles:
        raise PickleWeightsRefused(
            f"{name}: refused: only pickle weights ({', '.join(pickles[:3])}) and no safetensors; "
            "pickle files can run code when loaded. Ask the publisher for a safetensors "
            "version, or convert it yourself in a sandbox"
        )
    raise ModelNotFound(f"{name}: no weight files ({SAFE_WEIGHTS} or {SAFE_INDEX}) found")


def support_files(files: Iterable[str], kind: Kind, remote_code: bool = False) -> list[str]:
    """The top-level non-weight files of a listing that loading ``kind`` reads."""
    if kind == "adapter":
        return [ADAPTER_CONFIG]
    chosen = [
        f
        for f in files
        if _PLAIN_NAME.fullmatch(f)
        and (
            f in MODEL_SUPPORT_FILES
            or f.endswith(_TOKENIZER_SUFFIXES)
            or (remote_code and fnmatch.fnmatch(f, "*.py"))
        )
    ]
    return sorted(chosen)


def index_shards(name: str, index: dict[str, Any], files: Iterable[str]) -> list[str]:
    """The shards a safetensors index names: plain top-level file names present in the listing.

    A path (``../../other-model/model.safetensors``) would make the loader read another
    snapshot's weights, so it is refused, as is a name the listing does not hold.
    """
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelBroken(f"{name}: {SAFE_INDEX} has no weight_map")
    present = set(files)
    shards = set()
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not _SHARD_NAME.fullmatch(shard) or ".." in shard:
            raise DownloadRefused(
                f"{name}: refused: {SAFE_INDEX} maps {str(tensor)[:80]!r} to {str(shard)[:120]!r}, "
                "not a plain file name of the repo; an index may name only top-level "
                "*.safetensors files of the same repo"
            )
        if shard not in present:
            raise ModelNotFound(f"{name}: {SAFE_INDEX} names {shard!r}, which the repo lacks")
        shards.add(shard)
    return sorted(shards)


def stored_bytes(parameters: dict[str, int] | None) -> int | None:
    """Bytes of the weights as stored: each dtype's parameter count x its size."""
    if not parameters:
        return None
    return sum(
        int(count) * _STORED_BYTES.get(str(dtype).upper(), 4) for dtype, count in parameters.items()
    )


def download_cap(parameters: dict[str, int] | None, max_download_gib: float) -> tuple[int, str]:
    """The most bytes a model's download may hold, and why: its stored weights (parameter
    count x bytes per stored parameter) with slack, never over ``hub.max_download_gib``."""
    ceiling = int(max_download_gib * GIB)
    weights = stored_bytes(parameters)
    if weights is None:
        return ceiling, f"hub.max_download_gib ({max_download_gib:g} GiB; parameter count unknown)"
    derived = int(weights * CAP_SLACK_RATIO) + CAP_SLACK_BYTES
    if derived < ceiling:
        total = sum(parameters.values()) if parameters else 0
        return derived, f"{total:,} parameters as stored, with slack"
    return ceiling, f"hub.max_download_gib ({max_download_gib:g} GiB)"


def check_download_size(
    name: str, chosen: Iterable[str], sizes: dict[str, int | None], cap: tuple[int, str]
) -> int:
    """Sum the listed sizes of ``chosen``; refuse over ``cap`` or when a size is missing."""
    total = 0
    for file in chosen:
        size = sizes.get(file)
        if size is None:
            raise DownloadRefused(
                f"{name}: refused: the Hub listing gives no size for {file}, so the download "
                "cannot be bounded"
            )
        total += size
    limit, why = cap
    if total > limit:
        raise DownloadRefused(
            f"{name}: refused: its files add up to {total / GIB:.2f} GiB, over the "
            f"{limit / GIB:.2f} GiB cap ({why}); raise hub.max_download_gib if it is expected"
        )
    return total


def _needs_remote_code(config: dict[str, Any]) -> bool:
    return bool(config.get("auto_map")) or bool(config.get("custom_pipelines"))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _check_remote_code(name: str, config: dict[str, Any], allowed: bool, pin: str) -> None:
    """Refuse code from another repo always, and any remote code unless ``allowed``.

    ``pin``: the allow-list entry that would allow this exact version (named in the refusal).
    """
    for value in _strings([config.get("auto_map"), config.get("custom_pipelines")]):
        if "--" in value:
            raise RemoteCodeRefused(
                f"{name}: refused: its auto_map entry {value[:120]!r} pulls code from another repo "
                "(repo--module.Class); code is only ever taken from the pinned repo itself"
            )
    if _needs_remote_code(config) and not allowed:
        raise RemoteCodeRefused(
            f"{name}: refused: its config asks for custom modelling code (auto_map); running "
            "it needs trust_remote_code. If you have reviewed that code, add the pinned entry "
            f"'{pin}' to hub.trust_remote_code in the config"
        )


def content_hash(folder: Path) -> str:
    """``sha256:<hex>`` over the names and bytes of the files a load can read."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        # Code files count: a pinned allow-list entry for a folder must pin its code too.
        if _is_pickle(rel) or not any(
            fnmatch.fnmatch(file.name, pat) for pat in (*MODEL_FILE_PATTERNS, *REMOTE_CODE_PATTERNS)
        ):
            continue
        digest.update(rel.encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


class ModelResolver:
    """Pins and fetches model and adapter references under the configured policy.

    ``keep``: references (``org/name`` or ``org/name@sha``) whose snapshots the cache pruning
    never deletes (the deployed fine-tunes' bases and adapters, see :func:`finetune_refs`); the
    snapshots this resolver resolved are kept too.
    """

    def __init__(
        self, hub: HubSettings, token: str | None = None, *, keep: Iterable[str] = ()
    ) -> None:
        self.hub = hub
        self.token = token
        self.keep = {ref for ref in keep if ref}
        # No request policy: downloads keep huggingface_hub's own timeouts and back-off.
        self.adapter = HubAdapter(
            hub.endpoint, token, timeout_s=hub.timeout_s, cache_dir=hub.cache_dir
        )

    def _allowed(self, ref: ModelRef, revision: str) -> bool:
        """Whether an allow-list entry names this repo (or folder) at exactly ``revision``."""
        for entry in self.hub.trust_remote_code:
            name, _, pin = entry.rpartition("@")
            if pin != revision:
                continue
            if ref.repo_id is not None and name == ref.repo_id:
                return True
            if ref.path is not None and Path(name).expanduser().resolve() == ref.path:
                return True
        return False

    def resolve(self, ref: ModelRef | str, kind: Kind = "model") -> ResolvedModel:
        """Pin ``ref`` to an exact revision, check the policy, and fetch its safe files."""
        if isinstance(ref, str):
            ref = ModelRef.parse(ref)
        if ref.path is not None:
            return self._resolve_local(ref, kind)
        return self._resolve_hub(ref, kind)

    def _resolve_local(self, ref: ModelRef, kind: Kind) -> ResolvedModel:
        assert ref.path is not None
        if not ref.path.is_dir():
            raise ModelNotFound(f"{ref.text}: not a folder")
        files = [p.relative_to(ref.path).as_posix() for p in ref.path.rglob("*") if p.is_file()]
        check_weight_files(ref.text, files, kind)
        revision = content_hash(ref.path)
        allowed = self._allowed(ref, revision)
        if kind == "model":
            config_file = ref.path / "config.json"
            if not config_file.is_file():
                raise ModelNotFound(
                    f"{ref.text}: no config.json, so it is not a transformers model"
                )
            if SAFE_WEIGHTS not in files:
                index = _read_json(ref.path / SAFE_INDEX, ref.text)
                index_shards(ref.text, index, files)
            self._check_configs(ref.text, ref.path, allowed, f"{ref.path}@{revision}")
        return ResolvedModel(ref, kind, ref.path, revision, allowed)

    def _check_configs(self, name: str, folder: Path, allowed: bool, pin: str) -> None:
        for file in ("config.json", "tokenizer_config.json"):
            if (folder / file).is_file():
                _check_remote_code(name, _read_json(folder / file, name), allowed, pin)

    def _resolve_hub(self, ref: ModelRef, kind: Kind) -> ResolvedModel:
        assert ref.repo_id is not None
        name = f"{ref.repo_id}@{ref.revision}" if ref.revision else ref.repo_id
        info = self.adapter.model_info(
            ref.repo_id, revision=ref.revision, name=name, files_metadata=True
        )
        sha = info.sha
        if not sha:
            raise HubUnavailable(f"{name}: the Hub did not return a commit sha; try again")
        sizes: dict[str, int | None] = {s.rfilename: s.size for s in (info.siblings or [])}
        files = list(sizes)
        check_weight_files(name, files, kind)
        if kind == "model" and "config.json" not in sizes:
            raise ModelNotFound(f"{name}: no config.json, so it is not a transformers model")
        allowed = kind == "model" and self._allowed(ref, sha)
        chosen = support_files(files, kind, remote_code=allowed)
        params = getattr(getattr(info, "safetensors", None), "parameters", None)
        cap = download_cap(params, self.hub.max_download_gib)
        if kind == "adapter":
            weights = [ADAPTER_WEIGHTS]
        elif SAFE_WEIGHTS in sizes:
            weights = [SAFE_WEIGHTS]
        else:
            # The index is read first (small and bounded) to know which shards are needed.
            check_download_size(name, [SAFE_INDEX], sizes, (_INDEX_MAX_BYTES, "index size limit"))
            path = self.adapter.download(ref.repo_id, SAFE_INDEX, revision=sha, name=name)
            weights = [SAFE_INDEX, *index_shards(name, _read_json(path, name), files)]
        total = check_download_size(name, [*chosen, *weights], sizes, cap)
        if kind == "model":
            # The remote-code policy is checked on config.json alone, before any weight is fetched.
            config_path = self.adapter.download(ref.repo_id, "config.json", revision=sha, name=name)
            _check_remote_code(name, _read_json(config_path, name), allowed, f"{ref.repo_id}@{sha}")
        self._make_room(total, in_use=f"{ref.repo_id}@{sha}")
        folder = self.adapter.snapshot(
            ref.repo_id,
            revision=sha,
            name=name,
            # Exact names (checked plain above): nothing nested, nothing unlisted.
            allow_patterns=sorted({*chosen, *weights}),
            ignore_patterns=[],
        )
        self.adapter.touch(folder)
        if kind == "model":
            self._check_configs(name, folder, allowed, f"{ref.repo_id}@{sha}")
        return ResolvedModel(ref, kind, folder, sha, allowed)

    def _make_room(self, incoming: int, in_use: str) -> None:
        """Prune the cache so ``incoming`` more bytes fit under ``hub.cache_max_gib``."""
        self.keep.add(in_use)
        # Only a cache folder of Supersede's own: the shared default cache holds other tools'
        # models too, which are not ours to delete.
        if self.hub.cache_max_gib is None or self.hub.cache_dir is None:
            return
        budget = max(int(self.hub.cache_max_gib * GIB) - incoming, 0)
        try:
            deleted = self.adapter.prune_cache(budget, keep=self.keep)
        except OSError as exc:  # pruning is housekeeping: a failure must not fail the benchmark
            log.warning("the Hub cache could not be pruned: %s", exc)
            return
        if deleted:
            log.info(
                "Hub cache over %g GiB: deleted %s", self.hub.cache_max_gib, ", ".join(deleted)
            )

    def weight_bytes(self, repo_id: str, revision: str | None = None) -> int | None:
        """The listed size of the top-level safetensors weights of a Hub repo (None: none
        listed): what routing estimates a parameter count from when the Hub gives none."""
        info = self.adapter.model_info(repo_id, revision=revision, files_metadata=True)
        sizes = [
            s.size or 0
            for s in (info.siblings or [])
            if "/" not in s.rfilename and s.rfilename.endswith(".safetensors")
        ]
        return sum(sizes) if sizes else None


def finetune_refs(settings: Settings) -> tuple[str, ...]:
    """The references of every deployed fine-tune (bases, adapters, full models): kept in the
    Hub cache whatever its size."""
    refs: list[str] = []
    for finetune in settings.finetunes:
        for text in (finetune.base, finetune.adapter, finetune.model):
            if text:
                ref = text.strip()
                refs.append(ref)
                refs.append(ref.partition("@")[0])
    return tuple(dict.fromkeys(refs))


def _read_json(path: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"{name}: {path.name} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise ModelNotFound(f"{name}: {path.name} is not a JSON object")
    return data


# --------------------------------------------------------------------------- loading


def pick_device(runtime: RuntimeSettings) -> str:
    """``auto`` means cuda when a GPU is present, else cpu."""
    if runtime.device != "auto":
        return runtime.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(runtime: RuntimeSettings, device: str) -> str:
    """``auto`` means bfloat16 on GPU and float32 on CPU."""
    if runtime.dtype != "auto":
        return runtime.dtype
    return "bfloat16" if device.startswith("cuda") else "float32"


@dataclass
class LoadedModel:
    """A model ready to score: the (possibly PEFT-wrapped) model, its tokenizer and identity."""

    model: Any
    tokenizer: Any
    base: ResolvedModel
    adapters: tuple[ResolvedModel, ...]
    device: str
    dtype: str
    active_adapter: str | None = None

    def use_adapter(self, name: str | None) -> None:
        """Make adapter ``name`` active, or run the plain base with ``None``."""
        if name is None:
            self.active_adapter = None
            return
        if name not in {adapter_name(a) for a in self.adapters}:
            raise KeyError(f"adapter {name!r} is not loaded")
        self.model.set_adapter(name)
        self.active_adapter = name

    def scoring_model(self) -> Any:
        """A context manager yielding the callable to run (base only when no adapter is active)."""
        import contextlib

        if self.adapters and self.active_adapter is None:
            return self.model.disable_adapter()
        return contextlib.nullcontext()


def adapter_name(adapter: ResolvedModel) -> str:
    """A PEFT-safe adapter name derived from the pinned identity (unique per revision)."""
    raw = f"{adapter.name}@{adapter.revision}"
    return "a_" + hashlib.sha256(raw.encode()).hexdigest()[:16]


class unreadable:
    """Context manager: a model whose files cannot be parsed (a corrupt safetensors header, a
    broken config or tokenizer) is a :class:`ModelBroken` naming it; retrying cannot help."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, SupersedeError):
            return None
        kind = type(exc).__name__
        if kind in ("SafetensorError", "HeaderTooLarge", "HeaderTooSmall", "InvalidHeader") or (
            isinstance(exc, ValueError | KeyError | EOFError | UnicodeDecodeError)
        ):
            detail = str(exc).splitlines()[0][:300] if str(exc) else kind
            raise ModelBroken(f"{self.name}: its files cannot be read ({kind}: {detail})") from None
        return None


def load_model(
    base: ResolvedModel,
    runtime: RuntimeSettings,
    adapters: Sequence[ResolvedModel] = (),
) -> LoadedModel:
    """Load ``base`` once and attach every adapter to it (safetensors only, pinned files)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(runtime)
    dtype = pick_dtype(runtime, device)
    torch_dtype = getattr(torch, dtype)
    with unreadable(f"{base.name}@{base.revision}"):
        tokenizer = AutoTokenizer.from_pretrained(
            base.local_dir, trust_remote_code=base.trust_remote_code
        )
        model: Any = AutoModelForCausalLM.from_pretrained(
            base.local_dir,
            dtype=torch_dtype,
            use_safetensors=True,
            trust_remote_code=base.trust_remote_code,
        )
    model.to(device)
    model.eval()
    if adapters:
        from peft import PeftModel

        first, *rest = adapters
        with unreadable(f"{first.name}@{first.revision}"):
            model = PeftModel.from_pretrained(
                model, str(first.local_dir), adapter_name=adapter_name(first), is_trainable=False
            )
        for adapter in rest:
            with unreadable(f"{adapter.name}@{adapter.revision}"):
                model.load_adapter(str(adapter.local_dir), adapter_name=adapter_name(adapter))
        model.to(device)
        model.eval()
    loaded = LoadedModel(model, tokenizer, base, tuple(adapters), device, dtype)
    if adapters:
        loaded.use_adapter(adapter_name(adapters[0]))
    return loaded
