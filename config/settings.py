"""Typed settings, built once at the edge (CLI, worker start-up) and passed down.

Sources, highest precedence first:

1. environment variables ``SUPERSEDE_<SECTION>__<KEY>`` (e.g. ``SUPERSEDE_RUNTIME__BATCH_SIZE=8``);
   ``HF_ENDPOINT`` also sets ``hub.endpoint``;
2. the YAML file: ``--config PATH``, else ``$SUPERSEDE_CONFIG``, else ``config/supersede.yaml``;
3. the defaults below.

Secrets (``HF_TOKEN``) come only from the environment: a secret-looking key in YAML is an error,
so a token never lands in a file that gets committed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.api import ApiCandidate
from config.notify import NotifySettings
from config.observability import ObservabilitySettings
from config.urls import SecretUrl
from config.watch import WatchSettings
from config.workers import WorkersSettings
from core.constants import CONFIG_ENV, ENV_NESTED_DELIMITER, ENV_PREFIX
from core.errors import ConfigError
from core.suggest import did_you_mean

#: The shipped config, used when no other file is named and ``config/supersede.yaml`` is absent.
PACKAGED_CONFIG = Path(__file__).with_name("supersede.yaml")

_SECRET_WORDS = ("token", "secret", "password", "api_key", "apikey")
#: Settings fields filled by load_settings itself, never from YAML.
_INTERNAL_FIELDS = ("source_file", "secrets")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(_Section):
    """Where results (and later job state) are kept."""

    url: SecretUrl = Field(
        SecretUrl("sqlite:///.supersede/supersede.db"),
        description="SQLAlchemy URL: sqlite:///PATH (default) or postgresql+psycopg://...; a "
        "password in it is shown as *** wherever the settings are printed.",
    )


#: A pinned remote-code allow-list entry: a Hub commit sha, or a local folder's content hash.
_PINNED_ENTRY = re.compile(r".+@(?:[0-9a-f]{40}|sha256:[0-9a-f]{64})")


class HubSettings(_Section):
    """How models are fetched from the Hugging Face Hub (or a compatible endpoint)."""

    endpoint: str = Field("https://huggingface.co", description="Hub base URL (HF_ENDPOINT).")
    cache_dir: str | None = Field(None, description="Download cache; None = the HF default.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of each Hub API call, seconds.")
    trust_remote_code: tuple[str, ...] = Field(
        (),
        description="Pinned repos allowed to run their own modelling code, each "
        "'org/name@<40-hex commit sha>' (a local folder: 'PATH@sha256:<hex>'). Empty = none.",
    )
    max_download_gib: float = Field(
        300.0,
        gt=0,
        description="Largest download one model may need, GiB; a model is also refused over "
        "its parameter count x bytes per stored parameter (plus slack).",
    )
    cache_max_gib: float | None = Field(
        200.0,
        gt=0,
        description="Download cache size, GiB, beyond which the least recently used candidate "
        "snapshots are deleted (never the one in use or a fine-tune's). Applies only when "
        "hub.cache_dir names a folder of Supersede's own (the shared default cache is never "
        "pruned). None = never prune.",
    )

    @model_validator(mode="after")
    def _pinned(self) -> HubSettings:
        for entry in self.trust_remote_code:
            if not _PINNED_ENTRY.fullmatch(entry):
                raise ValueError(
                    f"hub.trust_remote_code entry {entry!r} is not pinned: write it as "
                    "'org/name@<40-hex commit sha>' (the commit whose code you reviewed; a bare "
                    "repo id would trust every later push) or, for a local folder, "
                    "'PATH@sha256:<hex>' (the refusal message names the exact entry)"
                )
        return self


class RuntimeSettings(_Section):
    """How models are run."""

    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on GPU, float32 on CPU."
    )
    batch_size: int = Field(32, ge=1, le=4096)
    max_length: int | None = Field(
        None, ge=8, description="Token budget per sequence; None = the model's own limit."
    )
    latency_sample: int = Field(
        16,
        ge=0,
        le=1000,
        description="Requests timed one at a time (batch size 1) after the batched run, for the "
        "per-request latency a deployment sees (p50/p95; time to first token and per output "
        "token on generation tasks). 0 = not measured.",
    )


class PromptSettings(_Section):
    """How a model is prompted on a task, on top of the task file's own template."""

    num_fewshot: int | None = Field(
        None, ge=0, le=64, description="Few-shot examples; None = the task file's num_fewshot."
    )
    chat_template: Literal["auto", "on", "off"] = Field(
        "auto", description="Wrap the prompt in the model's chat template: auto = when it has one."
    )
    system_prompt: str | None = Field(None, description="System message (chat template only).")
    fewshot_as_multiturn: bool = Field(
        True,
        description="With the chat template, each few-shot example is a user turn and an "
        "assistant turn (lm-eval's --fewshot_as_multiturn, its default with a chat template); "
        "false = the examples and the question in one user turn.",
    )


class Economics(_Section):
    """What a deployed fine-tune cost and costs, and what switching away from it would."""

    tuning_cost_usd: float = Field(0.0, ge=0, description="Spent on tuning (sunk).")
    monthly_upkeep_usd: float = Field(0.0, ge=0, description="Monthly cost of keeping it alive.")
    monthly_requests: int = Field(0, ge=0, description="Requests served per month.")
    switching_cost_usd: float = Field(
        0.0,
        ge=0,
        description="One-off cost of switching to a candidate: integration, prompt migration, "
        "validation, a canary. Switching must pay it back within horizon_months.",
    )
    candidate_monthly_upkeep_usd: float = Field(
        0.0, ge=0, description="Monthly cost of running a candidate besides serving it."
    )
    retune_switching_cost_usd: float | None = Field(
        None,
        ge=0,
        description="One-off cost of moving to the adapter re-tuned on a new base, besides "
        "its training (validation, a canary; the prompt format stays). None = "
        "switching_cost_usd.",
    )
    horizon_months: float = Field(
        12.0, gt=0, le=120, description="Months within which switching must pay back."
    )
    value_per_point_usd: float | None = Field(
        None,
        ge=0,
        description="What one point of the task metric (0.01) is worth per month. None (and no "
        "value_per_error_usd) = quality is not priced.",
    )
    value_per_error_usd: float | None = Field(
        None,
        ge=0,
        description="What one wrong answer costs, per request: quality is then worth "
        "value_per_error_usd x monthly_requests x the change in the metric. Give this or "
        "value_per_point_usd, not both.",
    )

    @model_validator(mode="after")
    def _one_value(self) -> Economics:
        if self.value_per_point_usd is not None and self.value_per_error_usd is not None:
            raise ValueError(
                "give value_per_point_usd (per point, per month) or value_per_error_usd (per "
                "wrong answer), not both"
            )
        return self


#: Serving dtypes and their bytes per parameter (int8 and int4: weight-only quantised serving).
SERVING_DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "int8": 1.0, "int4": 0.5}


#: Licences allowed by default: permissive ones that allow commercial use without conditions a
#: legal review must weigh. A vendor's own licence (llama3.1, gemma, ...) is added by the user.
DEFAULT_LICENSES = ("apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc0-1.0",
                    "unlicense")  # fmt: skip


class DeploySettings(_Section):
    """What a candidate must satisfy to replace a fine-tune in production. A check whose setting
    is unset (None) is not made, and the verdict says so."""

    licenses: tuple[str, ...] | None = Field(
        DEFAULT_LICENSES,
        description="Licences allowed (Hub / SPDX ids, e.g. apache-2.0, or the license_name of "
        "an 'other' licence). None = licences are not checked. A standard licence not listed "
        "blocks the candidate; a vendor's own or unknown licence needs review.",
    )
    gpu_memory_gb: float | None = Field(
        None, gt=0, description="GiB of memory per serving GPU. None = fit is not checked."
    )
    gpu_count: int = Field(1, ge=1, le=64, description="Serving GPUs a model may span.")
    memory_utilization: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of the serving GPUs' memory weights and KV cache may take (the rest: "
        "CUDA context, activations); vLLM calls it gpu_memory_utilization.",
    )
    dtype: Literal["float32", "bfloat16", "float16", "int8", "int4"] = Field(
        "bfloat16", description="The dtype weights are served in (bytes per parameter)."
    )
    concurrency: int = Field(
        8, ge=1, le=4096, description="Requests served at once: KV cache is held for each."
    )
    latency_p95_ms: float | None = Field(
        None,
        gt=0,
        description="Per-request p95 latency a candidate must meet, ms, measured at batch size "
        "1 where it was benchmarked. None = no target.",
    )
    benchmark_blocked: bool = Field(
        False,
        description="Benchmark a candidate even when its licence or size blocks it (to know "
        "what you are missing). False = it is not downloaded.",
    )


class DeployOverrides(_Section):
    """A fine-tune's own deploy settings: each key set here replaces the top-level one."""

    licenses: tuple[str, ...] | None = None
    gpu_memory_gb: float | None = Field(None, gt=0)
    gpu_count: int | None = Field(None, ge=1, le=64)
    memory_utilization: float | None = Field(None, gt=0, le=1)
    dtype: Literal["float32", "bfloat16", "float16", "int8", "int4"] | None = None
    concurrency: int | None = Field(None, ge=1, le=4096)
    latency_p95_ms: float | None = Field(None, gt=0)
    benchmark_blocked: bool | None = None


#: Training a re-tune: never, when the plain candidate's verdict leaves room, or always.
RetuneWhen = Literal["never", "at_risk", "always"]


class RetuneSettings(_Section):
    """The third contender: the deployed adapter's LoRA recipe trained on the new base.

    The recipe (r, lora_alpha, lora_dropout, target_modules) comes from the deployed adapter's
    ``adapter_config.json``; a key set here replaces what the adapter says."""

    when: RetuneWhen = Field(
        "at_risk",
        description="never; at_risk = when the plain candidate is AT_RISK, NEEDS_REVIEW, "
        "HOLDS within holds_within, or SUPERSEDED (re-tuning may widen the lead); always = "
        "whenever the plain comparison gave a verdict and the candidate is not blocked.",
    )
    holds_within: float = Field(
        0.05,
        ge=0,
        le=1,
        description="With when: at_risk, a HOLDS verdict whose candidate is behind by less "
        "than this (task metric units) is re-tuned too.",
    )
    store_dir: str = Field(
        ".supersede/retune",
        description="Folder where trained adapters are kept, one sub-folder per cache key.",
    )
    max_gpu_hours: float = Field(
        4.0,
        gt=0,
        description="Largest estimated training cost, GPU hours; a longer run is refused with "
        "its estimate before any training.",
    )
    gpu_tflops: float = Field(
        100.0,
        gt=0,
        description="Effective training throughput of one GPU, TFLOP/s, for the estimate "
        "(6 x parameters x tokens x epochs FLOPs / this): a utilised fraction of the peak "
        "(about 40% of an A100's 312 bf16 TFLOP/s is 125).",
    )
    learning_rate: float = Field(2e-4, gt=0, le=1, description="AdamW learning rate.")
    epochs: float = Field(3.0, gt=0, le=1000, description="Passes over the training rows.")
    max_steps: int | None = Field(
        None, ge=1, description="Optimiser steps; set, it replaces epochs. None = from epochs."
    )
    batch_size: int = Field(8, ge=1, le=4096, description="Training rows per optimiser step.")
    max_length: int = Field(
        1024,
        ge=8,
        description="Token budget per training row (prompt cut from the left, the answer kept); "
        "never more than the model's own context.",
    )
    seed: int = Field(0, description="Seed of the adapter's initial weights and the shuffle.")
    r: int | None = Field(None, ge=1, le=4096, description="LoRA rank; None = the adapter's.")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha; None = the adapter's.")
    lora_dropout: float | None = Field(
        None, ge=0, lt=1, description="LoRA dropout; None = the adapter's."
    )
    target_modules: tuple[str, ...] | None = Field(
        None,
        description="Module names LoRA is applied to; None = the deployed adapter's, mapped to "
        "the new architecture's names.",
    )
    module_map: dict[str, str] = Field(
        {},
        description="Extra target-module name mapping (deployed name -> new model's name), "
        "tried before the built-in table of equivalent names.",
    )


class RetuneOverrides(_Section):
    """A fine-tune's own re-tune settings: each key set here replaces the top-level one; plus
    its training data (a split of its task file, or a JSONL file in the task's format)."""

    when: RetuneWhen | None = None
    holds_within: float | None = Field(None, ge=0, le=1)
    store_dir: str | None = None
    max_gpu_hours: float | None = Field(None, gt=0)
    gpu_tflops: float | None = Field(None, gt=0)
    learning_rate: float | None = Field(None, gt=0, le=1)
    epochs: float | None = Field(None, gt=0, le=1000)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1, le=4096)
    max_length: int | None = Field(None, ge=8)
    seed: int | None = None
    r: int | None = Field(None, ge=1, le=4096)
    lora_alpha: float | None = Field(None, gt=0)
    lora_dropout: float | None = Field(None, ge=0, lt=1)
    target_modules: tuple[str, ...] | None = None
    module_map: dict[str, str] | None = None
    training_split: str | None = Field(
        None,
        description="A split named in the task file's data_files. None (and no data_file) = "
        "the task file's training_split.",
    )
    data_file: str | None = Field(
        None,
        description="A JSON Lines file of documents in the task's format; relative paths "
        "resolve against the config file, like task.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> RetuneOverrides:
        if self.training_split is not None and self.data_file is not None:
            raise ValueError(
                "give retune.training_split (a split of the task file) or retune.data_file "
                "(a JSONL file), not both"
            )
        return self


class FineTuneRetune(RetuneSettings):
    """One fine-tune's merged re-tune settings (see :func:`retune_for`): the top-level section,
    its own overrides, and where its training data comes from."""

    training_split: str | None = None
    data_file: str | None = None


class JudgeOverrides(_Section):
    """The judge of an open-ended task (a task file's ``judge:`` section, Supersede's extension
    of the lm-eval format), or a fine-tune's overrides of it: each key set here replaces the
    task file's."""

    rubric: str | None = Field(
        None, max_length=20_000, description="The criteria (the brand guideline) it applies."
    )
    mode: Literal["pairwise", "reference"] | None = Field(
        None, description="pairwise (verdicts): which answer is better; reference (bench): 1-5."
    )
    api: str | None = Field(
        None, description="An api_candidates entry serving the judge (endpoint, key, prices)."
    )
    model: str | None = Field(
        None, description="Without api: a Hub id[@revision] or folder run by the engine."
    )
    max_new_tokens: int | None = Field(None, ge=1, le=4096)
    max_failures: float | None = Field(None, ge=0, le=1)


class FineTune(_Section):
    """A deployed fine-tune: a base plus a PEFT adapter, or a fully fine-tuned ``model``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][\w.\-]{0,63}$")
    task: str = Field(description="Task file; relative paths resolve against the config file.")
    base: str | None = None
    adapter: str | None = None
    model: str | None = None
    #: The prompt format it was trained on (its own; candidates get ``candidates.prompt``).
    prompt: PromptSettings = PromptSettings(chat_template="off")
    economics: Economics = Economics()
    deploy: DeployOverrides = Field(
        DeployOverrides(), description="Overrides of the top-level deploy settings for this one."
    )
    retune: RetuneOverrides = Field(
        RetuneOverrides(),
        description="Overrides of the top-level retune settings for this one, and its training "
        "data.",
    )
    slack_channel: str | None = Field(None, description="Overrides notify.slack.channel.")
    judge: JudgeOverrides = Field(
        JudgeOverrides(), description="Overrides of its task file's judge (judged tasks)."
    )

    @model_validator(mode="after")
    def _one_shape(self) -> FineTune:
        if self.model and (self.base or self.adapter):
            raise ValueError("give either model (a full fine-tune) or base + adapter, not both")
        if not self.model and not (self.base and self.adapter):
            raise ValueError("needs base and adapter, or model for a full fine-tune")
        return self

    @property
    def model_ref(self) -> str:
        """The model to load: the base of an adapter fine-tune, or the full model."""
        return self.model or str(self.base)


class CandidateSettings(_Section):
    """How newly released candidates are prompted."""

    prompt: PromptSettings = PromptSettings()


class ServingSettings(_Section):
    """Serving prices."""

    gpu_hour_usd: float = Field(
        2.0,
        ge=0,
        description="Price of one GPU hour for self-hosting, where the GPU queue a model was "
        "benchmarked on names no usd_per_hour of its own (and for `local` runs).",
    )


class VerdictSettings(_Section):
    """How sure a verdict must be."""

    margin: float = Field(
        0.02, ge=0, le=1, description="Non-inferiority margin, in the task metric's units."
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of the interval.")
    cost_tolerance: float = Field(
        0.05, ge=0, le=1, description="Relative cost difference treated as equal (timing noise)."
    )
    bootstrap_resamples: int = Field(10_000, ge=10_000, le=1_000_000)
    seed: int = Field(0, description="Seed of the bootstrap: the same inputs, the same interval.")


class Secrets(BaseSettings):
    """Secrets, read from the environment only."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    hf_token: SecretStr | None = Field(None, validation_alias="HF_TOKEN")
    hf_endpoint: str | None = Field(None, validation_alias="HF_ENDPOINT")


class Settings(BaseSettings):
    """All Supersede settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    store: StoreSettings = StoreSettings()
    hub: HubSettings = HubSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    serving: ServingSettings = ServingSettings()
    deploy: DeploySettings = DeploySettings()
    retune: RetuneSettings = RetuneSettings()
    verdict: VerdictSettings = VerdictSettings()
    candidates: CandidateSettings = CandidateSettings()
    finetunes: tuple[FineTune, ...] = ()
    api_candidates: tuple[ApiCandidate, ...] = ()
    watch: WatchSettings = WatchSettings()
    workers: WorkersSettings = WorkersSettings()
    notify: NotifySettings = NotifySettings()
    observability: ObservabilitySettings = ObservabilitySettings()

    #: The file the settings were read from (None: defaults and environment only).
    source_file: Path | None = Field(None, exclude=True)
    #: Secrets from the environment; never serialised.
    secrets: Secrets = Field(default_factory=Secrets, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, then what load_settings passes in (the YAML document).
        return env_settings, init_settings


def resolve_config_path(path: str | Path | None) -> Path | None:
    """The config file to read: explicit path, ``$SUPERSEDE_CONFIG``, ``config/supersede.yaml``."""
    if path is not None:
        return Path(path)
    env_path = os.environ.get(CONFIG_ENV)
    if env_path:
        return Path(env_path)
    local = Path("config/supersede.yaml")
    if local.is_file():
        return local
    return PACKAGED_CONFIG if PACKAGED_CONFIG.is_file() else None


def load_settings(path: str | Path | None = None) -> Settings:
    """Read, merge and validate the settings; raise :class:`ConfigError` with one clear message."""
    file = resolve_config_path(path)
    document = _read_yaml(file) if file is not None else {}
    where = str(file) if file is not None else "environment"
    _reject_secrets(document, where)
    _reject_unknown_sections(document, where)
    try:
        secrets = Secrets()
        hub = document.get("hub")
        env_endpoint = os.environ.get(f"{ENV_PREFIX}HUB{ENV_NESTED_DELIMITER}ENDPOINT")
        if secrets.hf_endpoint and not env_endpoint and isinstance(hub, dict | None):
            document = {**document, "hub": {**(hub or {}), "endpoint": secrets.hf_endpoint}}
        return Settings(**document, source_file=file, secrets=secrets)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where)) from None


def _read_yaml(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise ConfigError(
            f"config file {file} not found: pass --config PATH or set {CONFIG_ENV}, "
            "or copy config/supersede.yaml"
        )
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{file}: not valid YAML{at}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot be read: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{file}: expected a mapping of sections at the top, got {type(data).__name__}"
        )
    return data


def _reject_unknown_sections(document: dict[Any, Any], where: str) -> None:
    sections = [name for name in Settings.model_fields if name not in _INTERNAL_FIELDS]
    for key in document:
        if key not in sections:
            hint = did_you_mean(str(key), sections, listing="known")
            raise ConfigError(f"{where}: invalid configuration: key '{key}': unknown key{hint}")


def _reject_secrets(document: Any, where: str, prefix: str = "") -> None:
    if isinstance(document, list):
        for i, item in enumerate(document):
            _reject_secrets(item, where, f"{prefix}{i}.")
        return
    if not isinstance(document, dict):
        return
    for key, value in document.items():
        path = f"{prefix}{key}"
        # "*_env" keys name an environment variable that holds a secret: that is allowed.
        secret_like = isinstance(key, str) and any(w in key.lower() for w in _SECRET_WORDS)
        if secret_like and not str(key).endswith("_env"):
            raise ConfigError(
                f"{where}: key '{path}' looks like a secret; secrets are read only from the "
                "environment (e.g. HF_TOKEN, or the variable an api_key_env names), never from "
                "a config file"
            )
        _reject_secrets(value, where, f"{path}.")


def _describe(exc: ValidationError, where: str) -> str:
    problems = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"]) or "(top level)"
        variable = ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(p) for p in error["loc"]).upper()
        source = f" (from environment variable {variable})" if variable in os.environ else ""
        if error["type"] == "extra_forbidden":
            hint = _did_you_mean(error["loc"])
            problems.append(f"key '{loc}'{source}: unknown key{hint}")
        else:
            got = error.get("input")
            shown = f", got {got!r}" if not isinstance(got, dict) else ""
            problems.append(f"key '{loc}'{source}: {error['msg'].lower()}{shown}")
    return f"{where}: invalid configuration: " + "; ".join(problems)


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    known = [name for name in model.model_fields if name not in _INTERNAL_FIELDS]
    return did_you_mean(str(loc[-1]), known, listing="known keys")


def api_key(candidate: ApiCandidate) -> str | None:
    """The candidate's API key, read from the environment variable it names."""
    return os.environ.get(candidate.api_key_env) if candidate.api_key_env else None


def secret_values(settings: Settings) -> list[str]:
    """Every secret this configuration can see (tokens, keys, the webhook secret), for
    redaction: none of them may appear in a log line, a report or a message."""
    slack = settings.notify.slack
    names = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", slack.token_env, slack.signing_secret_env,
             slack.app_token_env, settings.watch.webhook.secret_env}  # fmt: skip
    names |= {a.api_key_env for a in settings.api_candidates if a.api_key_env}
    for feed in settings.watch.feeds:
        names |= {rule.api_key_env for rule in feed.api_models if rule.api_key_env}
    values = {os.environ.get(name, "") for name in names}
    return sorted((v for v in values if len(v) >= 6), key=len, reverse=True)


def slack_api_url() -> str | None:
    """``SLACK_API_URL``: another base URL for the Slack Web API (a proxy, a test server)."""
    return os.environ.get("SLACK_API_URL") or None


def slack_app_mode(settings: Settings) -> str | None:
    """How the Slack app takes requests: ``socket`` (the app-level token's variable is set),
    ``http`` (the signing secret's is), or None (no buttons, no ``/supersede``)."""
    slack = settings.notify.slack
    if secret(slack.app_token_env):
        return "socket"
    if secret(slack.signing_secret_env):
        return "http"
    return None


def secret(variable: str) -> str | None:
    """The value of the environment variable a ``*_env`` setting names (None when unset)."""
    return os.environ.get(variable) or None


def finetune(settings: Settings, name: str) -> FineTune:
    """The configured fine-tune called ``name``; a ConfigError lists the known ones."""
    for entry in settings.finetunes:
        if entry.name == name:
            return entry
    known = [f.name for f in settings.finetunes]
    hint = did_you_mean(name, known)
    listed = ", ".join(known) if known else "none: add one under 'finetunes:'"
    raise ConfigError(f"no fine-tune named '{name}' in the config{hint}; configured: {listed}")


def deploy_for(settings: Settings, ft: FineTune) -> DeploySettings:
    """The deploy settings a fine-tune's candidates are held to: the top-level ``deploy``
    section, with each key the fine-tune's own ``deploy`` sets in its place."""
    own = ft.deploy.model_dump(exclude_unset=True)
    return settings.deploy.model_copy(update=own) if own else settings.deploy


def retune_for(settings: Settings, ft: FineTune) -> FineTuneRetune:
    """The re-tune settings of one fine-tune: the top-level ``retune`` section, with each key
    the fine-tune's own ``retune`` sets in its place, and its training data. A key written as
    null replaces the top-level one only where null has a meaning (``max_steps: null`` = from
    epochs, ``r: null`` = the adapter's rank); elsewhere it keeps the top-level value.
    ``data_file`` is kept as written; it resolves against the config file's folder like
    ``task``."""
    nullable = {k for k, f in FineTuneRetune.model_fields.items() if f.default is None}
    own = {
        key: value
        for key, value in ft.retune.model_dump(exclude_unset=True).items()
        if value is not None or key in nullable
    }
    return FineTuneRetune(**{**settings.retune.model_dump(), **own})


def task_path(settings: Settings, task: str) -> Path:
    """A fine-tune's task file: relative paths resolve against the config file's folder."""
    path = Path(task).expanduser()
    if path.is_absolute() or settings.source_file is None:
        return path
    return settings.source_file.parent / path
