"""Settings: defaults < YAML file < environment, and one clear ConfigError for every bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import config.settings as settings_module
from config.notify import NotifySettings
from config.observability import ObservabilitySettings
from config.settings import PACKAGED_CONFIG, Settings, load_settings, resolve_config_path
from config.watch import WatchSettings
from config.workers import WorkersSettings
from core.constants import CONFIG_ENV
from core.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "supersede.yaml"

DEFAULTS: dict[str, Any] = {
    "store": {"url": "sqlite:///.supersede/supersede.db"},
    "hub": {
        "endpoint": "https://huggingface.co",
        "cache_dir": None,
        "timeout_s": 30.0,
        "trust_remote_code": (),
        "max_download_gib": 300.0,
        "cache_max_gib": 200.0,
    },
    "runtime": {
        "device": "auto",
        "dtype": "auto",
        "batch_size": 32,
        "max_length": None,
        "latency_sample": 16,
    },
    "serving": {"gpu_hour_usd": 2.0},
    "deploy": {
        "licenses": (
            "apache-2.0",
            "mit",
            "bsd-2-clause",
            "bsd-3-clause",
            "cc-by-4.0",
            "cc0-1.0",
            "unlicense",
        ),
        "gpu_memory_gb": None,
        "gpu_count": 1,
        "memory_utilization": 0.9,
        "dtype": "bfloat16",
        "concurrency": 8,
        "latency_p95_ms": None,
        "benchmark_blocked": False,
    },
    "retune": {
        "when": "at_risk",
        "holds_within": 0.05,
        "store_dir": ".supersede/retune",
        "max_gpu_hours": 4.0,
        "gpu_tflops": 100.0,
        "learning_rate": 2e-4,
        "epochs": 3.0,
        "max_steps": None,
        "batch_size": 8,
        "max_length": 1024,
        "seed": 0,
        "r": None,
        "lora_alpha": None,
        "lora_dropout": None,
        "target_modules": None,
        "module_map": {},
    },
    "verdict": {
        "margin": 0.02,
        "confidence": 0.95,
        "cost_tolerance": 0.05,
        "bootstrap_resamples": 10_000,
        "seed": 0,
    },
    "candidates": {
        "prompt": {
            "num_fewshot": None,
            "chat_template": "auto",
            "system_prompt": None,
            "fewshot_as_multiturn": True,
        }
    },
    "finetunes": (),
    "api_candidates": (),
    "watch": WatchSettings().model_dump(),
    "workers": WorkersSettings().model_dump(),
    "notify": NotifySettings().model_dump(),
    "observability": ObservabilitySettings().model_dump(),
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SUPERSEDE_* / HF_* variables from the outer environment; cwd without a config file."""
    for name in list(os.environ):
        if name.upper().startswith(("SUPERSEDE_", "HF_")):
            monkeypatch.delenv(name)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)


@pytest.fixture
def no_packaged_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(settings_module, "PACKAGED_CONFIG", tmp_path / "absent" / "supersede.yaml")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None, *fragments: str) -> str:
    """Load ``path``; assert one ConfigError naming the file and every fragment; return it."""
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    if path is not None:
        assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --- sources and precedence ---------------------------------------------------------------


def test_defaults_without_any_file(no_packaged_config: None) -> None:
    assert resolve_config_path(None) is None
    loaded = load_settings()
    assert loaded.source_file is None
    assert loaded.model_dump() == DEFAULTS


def test_packaged_file_is_used_when_nothing_else_is_named() -> None:
    assert resolve_config_path(None) == PACKAGED_CONFIG
    loaded = load_settings()
    assert loaded.source_file == PACKAGED_CONFIG
    assert loaded.model_dump() == DEFAULTS


def test_shipped_config_file_loads_and_equals_the_defaults(no_packaged_config: None) -> None:
    assert REPO_CONFIG.is_file()
    from_file = load_settings(REPO_CONFIG)
    assert from_file.source_file == REPO_CONFIG
    assert from_file.model_dump() == load_settings().model_dump() == DEFAULTS
    # Every section and key of the model is spelled out in the shipped file.
    document = yaml.safe_load(REPO_CONFIG.read_text(encoding="utf-8"))
    assert {k: set(v) for k, v in document.items()} == {k: set(v) for k, v in DEFAULTS.items()}


def test_yaml_values_override_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.yaml",
        "runtime:\n  batch_size: 16\n  device: cpu\n"
        "hub:\n  timeout_s: 5\n"
        "  trust_remote_code: [acme/model@0123456789abcdef0123456789abcdef01234567]\n",
    )
    loaded = load_settings(path)
    assert loaded.source_file == path
    assert loaded.runtime.batch_size == 16
    assert loaded.runtime.device == "cpu"
    assert loaded.hub.timeout_s == 5.0
    assert loaded.hub.trust_remote_code == ("acme/model@0123456789abcdef0123456789abcdef01234567",)
    # keys the file does not name keep their defaults
    assert loaded.runtime.dtype == "auto"
    assert loaded.store.url == DEFAULTS["store"]["url"]


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path / "s.yaml", "# nothing\n")).model_dump() == DEFAULTS


def test_env_overrides_yaml_and_keeps_the_rest_of_the_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "s.yaml", "runtime:\n  batch_size: 16\n  device: cpu\n")
    monkeypatch.setenv("SUPERSEDE_RUNTIME__BATCH_SIZE", "8")
    loaded = load_settings(path)
    assert loaded.runtime.batch_size == 8
    assert loaded.runtime.device == "cpu"


def test_env_overrides_defaults_without_a_file(
    no_packaged_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPERSEDE_STORE__URL", "postgresql+psycopg://u@127.0.0.1:5432/s")
    assert load_settings().store.url == "postgresql+psycopg://u@127.0.0.1:5432/s"


def test_hf_endpoint_sets_hub_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "s.yaml", "hub:\n  endpoint: http://from-yaml\n  timeout_s: 7\n")
    monkeypatch.setenv("HF_ENDPOINT", "http://from-hf-endpoint")
    loaded = load_settings(path)
    assert loaded.hub.endpoint == "http://from-hf-endpoint"
    assert loaded.hub.timeout_s == 7.0


def test_supersede_hub_endpoint_wins_over_hf_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "s.yaml", "hub:\n  endpoint: http://from-yaml\n")
    monkeypatch.setenv("HF_ENDPOINT", "http://from-hf-endpoint")
    monkeypatch.setenv("SUPERSEDE_HUB__ENDPOINT", "http://from-supersede")
    assert load_settings(path).hub.endpoint == "http://from-supersede"


def test_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write(tmp_path / "explicit.yaml", "runtime:\n  batch_size: 1\n")
    from_env = write(tmp_path / "from_env.yaml", "runtime:\n  batch_size: 2\n")
    write(Path.cwd() / "config" / "supersede.yaml", "runtime:\n  batch_size: 3\n")

    assert load_settings().runtime.batch_size == 3
    assert load_settings().source_file == Path("config/supersede.yaml")
    monkeypatch.setenv(CONFIG_ENV, str(from_env))
    assert load_settings().runtime.batch_size == 2
    assert load_settings().source_file == from_env
    assert load_settings(explicit).runtime.batch_size == 1
    assert load_settings(str(explicit)).source_file == explicit


def test_empty_supersede_config_variable_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    write(Path.cwd() / "config" / "supersede.yaml", "runtime:\n  batch_size: 3\n")
    monkeypatch.setenv(CONFIG_ENV, "")
    assert load_settings().runtime.batch_size == 3


# --- errors -------------------------------------------------------------------------------


def test_unknown_key_names_file_key_path_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "runtime:\n  batchsize: 8\n")
    config_error(path, "'runtime.batchsize'", "unknown key", "did you mean 'batch_size'?")


def test_unknown_section_suggests_the_close_section(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "runtme:\n  batch_size: 8\n")
    config_error(path, "'runtme'", "did you mean 'runtime'?")


def test_unknown_key_without_a_close_match_lists_known_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "hub:\n  zzzzzz: 1\n")
    message = config_error(path, "'hub.zzzzzz'", "unknown key")
    assert "did you mean" not in message
    assert "endpoint" in message and "trust_remote_code" in message
    # internal fields are never offered as keys
    assert "source_file" not in message and "secrets" not in message


def test_wrong_type_names_key_path_value_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "runtime:\n  batch_size: lots\n")
    config_error(path, "'runtime.batch_size'", "valid integer", "'lots'")


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("runtime:\n  batch_size: 0\n", "'runtime.batch_size'", "greater than or equal to 1"),
        ("runtime:\n  batch_size: 5000\n", "'runtime.batch_size'", "less than or equal to 4096"),
        ("runtime:\n  max_length: 4\n", "'runtime.max_length'", "greater than or equal to 8"),
        ("hub:\n  timeout_s: 0\n", "'hub.timeout_s'", "greater than 0"),
        ("runtime:\n  device: gpu\n", "'runtime.device'", "auto|cpu|mps|cuda"),
        ("runtime:\n  dtype: fp8\n", "'runtime.dtype'", "'bfloat16'"),
        ("runtime: 5\n", "'runtime'", "valid dictionary"),
        ("hub:\n  trust_remote_code: acme/model\n", "'hub.trust_remote_code'", "valid tuple"),
    ],
)
def test_out_of_range_and_invalid_values_name_key_and_expectation(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    config_error(write(tmp_path / "s.yaml", text), key, expected)


def test_several_problems_are_reported_in_one_error(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "runtime:\n  batch_size: 0\n  device: gpu\n")
    config_error(path, "'runtime.batch_size'", "'runtime.device'")


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "runtime:\n  batch_size: 8\n  device: [cpu\nhub: {}\n")
    config_error(path, "not valid YAML", "line 4")


def test_tab_indentation_is_invalid_yaml_with_line(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "runtime:\n\tbatch_size: 8\n")
    config_error(path, "not valid YAML", "line 2")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"runtime:\n  device: \xff\xfe\n")
    config_error(path, "cannot be read")


@pytest.mark.parametrize("text", ["- runtime\n- hub\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    config_error(write(tmp_path / "s.yaml", text), "expected a mapping")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("hub:\n  token: hf_abc\n", "'hub.token'"),
        ("hub:\n  hf_token: hf_abc\n", "'hub.hf_token'"),
        ("store:\n  password: hunter2\n", "'store.password'"),
        ("api_key: x\n", "'api_key'"),
        ("runtime:\n  nested:\n    Secret_Value: x\n", "'runtime.nested.Secret_Value'"),
    ],
)
def test_secret_looking_keys_are_rejected(tmp_path: Path, text: str, key: str) -> None:
    message = config_error(write(tmp_path / "s.yaml", text), key, "secret", "environment")
    assert "hf_abc" not in message and "hunter2" not in message


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    config_error(tmp_path / "nope.yaml", "not found", "--config", CONFIG_ENV)


def test_missing_file_named_by_env_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "gone.yaml"
    monkeypatch.setenv(CONFIG_ENV, str(missing))
    config_error(missing, "not found")


def test_directory_as_config_is_a_clear_error(tmp_path: Path) -> None:
    config_error(tmp_path, "not found")


def test_bad_env_value_is_a_config_error(
    no_packaged_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPERSEDE_RUNTIME__BATCH_SIZE", "lots")
    config_error(None, "'runtime.batch_size'", "'lots'")


def test_unknown_env_key_is_a_config_error(
    no_packaged_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPERSEDE_RUNTIME__BATCHSIZE", "8")
    config_error(None, "'runtime.batchsize'", "did you mean 'batch_size'?")


# --- secrets ------------------------------------------------------------------------------


def test_hf_token_is_read_from_env_and_never_serialised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "hf_SuperSecretValue123"
    monkeypatch.setenv("HF_TOKEN", token)
    loaded = load_settings(write(tmp_path / "s.yaml", "runtime:\n  batch_size: 4\n"))
    assert loaded.secrets.hf_token is not None
    assert loaded.secrets.hf_token.get_secret_value() == token
    dumped = loaded.model_dump()
    assert "secrets" not in dumped and "source_file" not in dumped
    assert token not in repr(dumped)
    assert token not in loaded.model_dump_json()
    assert token not in json.dumps(loaded.model_dump(mode="json"))
    assert token not in repr(loaded) and token not in str(loaded)


def test_no_token_without_hf_token(no_packaged_config: None) -> None:
    assert load_settings().secrets.hf_token is None


# --- regressions (bugs found and fixed) ------------------------------------------------


@pytest.mark.parametrize("text", ["1: 2\n", "null: 1\n", "true: x\n"])
def test_non_string_top_level_key_is_a_config_error(tmp_path: Path, text: str) -> None:
    config_error(write(tmp_path / "s.yaml", text), "unknown key")


def test_top_level_source_file_key_is_a_config_error(tmp_path: Path) -> None:
    config_error(write(tmp_path / "s.yaml", "source_file: /etc/passwd\n"), "'source_file'")


@pytest.mark.parametrize("text", ["hub: [a, b]\n", "hub: abc\n", "hub: 5\n"])
def test_hub_not_a_mapping_with_hf_endpoint_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror")
    config_error(write(tmp_path / "s.yaml", text), "'hub'")


def test_bad_env_value_names_the_variable_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "s.yaml", "runtime:\n  batch_size: 16\n")
    monkeypatch.setenv("SUPERSEDE_RUNTIME__BATCH_SIZE", "lots")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "SUPERSEDE_RUNTIME__BATCH_SIZE" in str(info.value)


# --- property ------------------------------------------------------------------------------

_KNOWN_NAMES = [
    "store",
    "hub",
    "runtime",
    "url",
    "endpoint",
    "cache_dir",
    "timeout_s",
    "trust_remote_code",
    "device",
    "dtype",
    "batch_size",
    "max_length",
]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["auto", "cpu", "cuda:0", "float16", "32", "-1"])
)
_keys = st.sampled_from(_KNOWN_NAMES) | st.text(max_size=10) | st.integers()
_junk = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=12,
)
_top_keys = (
    st.sampled_from([*_KNOWN_NAMES, "source_file", "secrets"])
    | st.text(max_size=10)
    | (st.integers())
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=st.dictionaries(_top_keys, _junk, max_size=4))
def test_junk_yaml_either_loads_or_raises_config_error(tmp_path: Path, document: dict) -> None:
    path = tmp_path / "junk.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    try:
        loaded = load_settings(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(loaded, Settings)


# --- fine-tunes, API candidates, verdict -----------------------------------------------------

FINETUNE = """
finetunes:
  - name: triage
    task: tasks/triage.yaml
{shape}
    economics: {{tuning_cost_usd: 100, monthly_upkeep_usd: 10, monthly_requests: 1000}}
"""


def test_finetune_with_adapter_and_relative_task(tmp_path: Path) -> None:
    path = write(
        tmp_path / "conf" / "s.yaml",
        FINETUNE.format(shape="    base: org/base\n    adapter: org/lora@v2"),
    )
    loaded = load_settings(path)
    (entry,) = loaded.finetunes
    assert (entry.model_ref, entry.adapter, entry.economics.monthly_requests) == (
        "org/base",
        "org/lora@v2",
        1000,
    )
    assert entry.prompt.chat_template == "off"  # a fine-tune keeps its own prompt format
    assert settings_module.task_path(loaded, entry.task) == tmp_path / "conf" / "tasks/triage.yaml"
    assert settings_module.finetune(loaded, "triage") is entry


@pytest.mark.parametrize(
    "shape",
    [
        "    base: org/base",  # adapter missing
        "    model: org/full\n    base: org/base\n    adapter: x",  # both shapes
        "",  # neither
    ],
)
def test_finetune_needs_exactly_one_shape(tmp_path: Path, shape: str) -> None:
    path = write(tmp_path / "s.yaml", FINETUNE.format(shape=shape))
    with pytest.raises(ConfigError, match=r"finetunes\.0"):
        load_settings(path)


def test_unknown_finetune_suggests_the_close_name(tmp_path: Path) -> None:
    loaded = load_settings(write(tmp_path / "s.yaml", FINETUNE.format(shape="    model: org/m")))
    with pytest.raises(ConfigError, match="did you mean 'triage'"):
        settings_module.finetune(loaded, "triag")


def test_api_key_env_is_allowed_but_a_key_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = write(
        tmp_path / "good.yaml",
        """
api_candidates:
  - {name: v, base_url: "https://api.example/v1", model: m, api_key_env: VENDOR_KEY}
""",
    )
    monkeypatch.setenv("VENDOR_KEY", "sk-123")
    (candidate,) = load_settings(good).api_candidates
    assert settings_module.api_key(candidate) == "sk-123"
    assert "sk-123" not in json.dumps(load_settings(good).model_dump(mode="json"))
    bad = write(
        tmp_path / "bad.yaml",
        """
api_candidates:
  - {name: v, base_url: "https://api.example/v1", model: m, api_key: sk-123}
""",
    )
    with pytest.raises(ConfigError, match="environment"):
        load_settings(bad)


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("verdict: {margin: -0.1}", "verdict.margin"),
        ("verdict: {confidence: 1.5}", "verdict.confidence"),
        ("verdict: {bootstrap_resamples: 500}", "verdict.bootstrap_resamples"),
        ("serving: {gpu_hour_usd: -1}", "serving.gpu_hour_usd"),
        ("candidates: {prompt: {chat_template: sometimes}}", "candidates.prompt.chat_template"),
    ],
)
def test_verdict_and_serving_values_are_checked(tmp_path: Path, yaml_text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(write(tmp_path / "s.yaml", yaml_text))
