"""Safe model loading: references, revision pinning, the safetensors-only policy, devices.

A model reference is a Hub id with an optional ``@revision`` (``org/name@v1.2``) or a local
folder. A reference is first *resolved*: for the Hub, one ``model_info`` call pins the revision to
a commit sha and shows which files exist; the policy is checked on that listing (safetensors only,
no remote code unless allow-listed) before anything is downloaded, and then only safe files are
fetched, pinned to that sha. A local folder is pinned by a hash of its contents. Heavy libraries
(torch, transformers, peft) are imported only when a model is actually loaded.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from config.settings import HubSettings, RuntimeSettings
from core.constants import (
    MODEL_FILE_PATTERNS,
    PICKLE_WEIGHT_SUFFIXES,
    REMOTE_CODE_PATTERNS,
)
from core.errors import (
    HubUnavailable,
    ModelBroken,
    ModelNotFound,
    PickleWeightsRefused,
    RemoteCodeRefused,
    SupersedeError,
)
from core.hub import HubAdapter

Kind = Literal["model", "adapter"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}/[\w.\-]{1,96}$|^[A-Za-z0-9][\w.\-]{0,95}$")


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
    """Apply the safetensors-only policy to a file listing (top-level files count)."""
    top = [f for f in files if "/" not in f]
    if kind == "adapter":
        if "adapter_config.json" not in top:
            raise ModelNotFound(f"{name}: no adapter_config.json, so it is not a PEFT adapter")
        safe = [f for f in top if f.startswith("adapter_model") and f.endswith(".safetensors")]
    else:
        safe = [f for f in top if f.endswith(".safetensors")]
    if safe:
        return
    pickles = sorted(f for f in top if _is_pickle(f))
    if pickles:
        raise PickleWeightsRefused(
            f"{name}: refused: only pickle weights ({', '.join(pickles[:3])}) and no safetensors; "
            "pickle files can run code when loaded. Ask the publisher for a safetensors "
            "version, or convert it yourself in a sandbox"
        )
    raise ModelNotFound(f"{name}: no weight files (*.safetensors) found")


def _needs_remote_code(config: dict[str, Any]) -> bool:
    return bool(config.get("auto_map")) or bool(config.get("custom_pipelines"))


def _check_remote_code(name: str, config: dict[str, Any], allowed: bool) -> None:
    if _needs_remote_code(config) and not allowed:
        raise RemoteCodeRefused(
            f"{name}: refused: its config asks for custom modelling code (auto_map); running "
            "it needs trust_remote_code. If you have reviewed that code, add the repo id to "
            "hub.trust_remote_code in the config"
        )


def content_hash(folder: Path) -> str:
    """``sha256:<hex>`` over the names and bytes of the files a load can read."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        if _is_pickle(rel) or not any(
            fnmatch.fnmatch(file.name, pat) for pat in MODEL_FILE_PATTERNS
        ):
            continue
        digest.update(rel.encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


class ModelResolver:
    """Pins and fetches model and adapter references under the configured policy."""

    def __init__(self, hub: HubSettings, token: str | None = None) -> None:
        self.hub = hub
        self.token = token
        # No request policy: downloads keep huggingface_hub's own timeouts and back-off.
        self.adapter = HubAdapter(
            hub.endpoint, token, timeout_s=hub.timeout_s, cache_dir=hub.cache_dir
        )

    def _allowed(self, ref: ModelRef) -> bool:
        return ref.text in self.hub.trust_remote_code or (
            ref.repo_id is not None and ref.repo_id in self.hub.trust_remote_code
        )

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
        allowed = self._allowed(ref)
        config_file = ref.path / ("adapter_config.json" if kind == "adapter" else "config.json")
        if kind == "model":
            if not config_file.is_file():
                raise ModelNotFound(
                    f"{ref.text}: no config.json, so it is not a transformers model"
                )
            _check_remote_code(ref.text, _read_json(config_file, ref.text), allowed)
        return ResolvedModel(ref, kind, ref.path, content_hash(ref.path), allowed)

    def _resolve_hub(self, ref: ModelRef, kind: Kind) -> ResolvedModel:
        assert ref.repo_id is not None
        name = f"{ref.repo_id}@{ref.revision}" if ref.revision else ref.repo_id
        info = self.adapter.model_info(ref.repo_id, revision=ref.revision, name=name)
        sha = info.sha
        if not sha:
            raise HubUnavailable(f"{name}: the Hub did not return a commit sha; try again")
        files = [s.rfilename for s in (info.siblings or [])]
        check_weight_files(name, files, kind)
        allowed = self._allowed(ref)
        if kind == "model" and "config.json" in files:
            # The remote-code policy is checked on config.json alone, before any weight is fetched.
            config_path = self.adapter.download(ref.repo_id, "config.json", revision=sha, name=name)
            _check_remote_code(name, _read_json(config_path, name), allowed)
        patterns = list(MODEL_FILE_PATTERNS) + (list(REMOTE_CODE_PATTERNS) if allowed else [])
        folder = self.adapter.snapshot(
            ref.repo_id,
            revision=sha,
            name=name,
            allow_patterns=patterns,
            ignore_patterns=[f"*{s}" for s in PICKLE_WEIGHT_SUFFIXES],
        )
        if kind == "model":
            config_file = folder / "config.json"
            if not config_file.is_file():
                raise ModelNotFound(f"{name}: no config.json, so it is not a transformers model")
            _check_remote_code(name, _read_json(config_file, name), allowed)
        return ResolvedModel(ref, kind, folder, sha, allowed)


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
