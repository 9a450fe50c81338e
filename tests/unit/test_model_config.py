"""A model's configuration is refused at startup, plainly, when it could only fail later.

And a refusal never echoes an API key: pydantic's errors quote their input by default,
which for a model includes its keys.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from chatkeep.settings import POOL_OPTIONS, BackendConfig, ModelConfig, load_settings

SECRET = "sk-LEAK-7f3a"

#: Wrong models whose input holds a key, each with what its error says instead.
WRONG_WITH_KEYS: list[tuple[dict[str, Any], str]] = [
    (
        {
            "provider": "openai",
            "url": "http://h/v1",
            "api_key": SECRET,
            "backends": [{"url": "http://i/v1", "api_key": SECRET}],
        },
        "either",
    ),
    ({"provider": "openai", "backends": [{"api_key": SECRET}]}, "Field required"),
    (
        {
            "provider": "openai",
            "backends": [{"name": "a", "url": "http://i", "api_key": SECRET}] * 2,
        },
        "unique",
    ),
    ({"provider": "openai", "backends": [{"url": "http://a", "api_key": SECRET}] * 65}, "64"),
    (
        {"provider": "openai", "backends": [{"url": "http://a", "api_key": SECRET, "weight": 0}]},
        "greater than 0",
    ),
    ({"provider": "openai", "url": "http://h", "api_key": SECRET, "colour": 1}, "colour"),
]


@pytest.mark.parametrize(("fields", "says"), WRONG_WITH_KEYS)
def test_a_wrong_model_is_refused_without_quoting_its_keys(
    fields: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError, match=says) as refused:
        ModelConfig.model_validate(fields)
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize(("fields", "says"), WRONG_WITH_KEYS)
def test_settings_errors_do_not_quote_keys_from_the_environment(
    fields: dict[str, Any], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATKEEP_MODELS", orjson.dumps({"gpt": fields}).decode())
    with pytest.raises(ValidationError, match=says) as refused:
        load_settings(default_model="gpt")
    assert SECRET not in str(refused.value)


def test_settings_errors_do_not_quote_keys_from_a_file(tmp_path: Path) -> None:
    config = tmp_path / "chatkeep.toml"
    config.write_text(
        f'[models.gpt]\nprovider = "openai"\nurl = "http://h/v1"\napi_key = "{SECRET}"\n'
        f'[[models.gpt.backends]]\nurl = "http://i/v1"\napi_key = "{SECRET}"\n'
    )
    with pytest.raises(ValidationError, match="either") as refused:
        load_settings(config)
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize("misspelt", ["hedge_afer_ms", "balancng"])
def test_a_misspelt_model_setting_is_refused(misspelt: str, tmp_path: Path) -> None:
    config = tmp_path / "chatkeep.toml"
    config.write_text(
        f'[models.gpt]\nprovider = "openai"\n{misspelt} = 1\n'
        '[[models.gpt.backends]]\nurl = "http://i/v1"\n'
    )
    with pytest.raises(ValidationError, match=rf"models\.gpt\.{misspelt}"):
        load_settings(config)


@pytest.mark.parametrize("option", POOL_OPTIONS)
def test_a_pool_option_on_a_one_url_model_asks_for_backends(option: str) -> None:
    value = ModelConfig.model_fields[option].default
    fields = {"provider": "openai", "url": "http://h/v1", option: value}
    with pytest.raises(ValidationError, match=f"{option}: only a model given as backends"):
        ModelConfig.model_validate(fields)
    # Given backends, the same option is read.
    pool = ModelConfig.model_validate(
        {"provider": "openai", "backends": [{"url": "http://h/v1"}], option: value}
    )
    assert getattr(pool, option) == value


def test_the_refusal_names_every_pool_option_given() -> None:
    fields = {"provider": "ollama", "url": "http://h", "balancing": "latency", "attempts": 2}
    with pytest.raises(ValidationError, match=r"balancing, attempts: .* give backends"):
        ModelConfig.model_validate(fields)


def _float_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, field in model.model_fields.items() if "float" in str(field.annotation)]


@pytest.mark.parametrize("field", _float_fields(ModelConfig))
@pytest.mark.parametrize("value", [math.inf, "inf", "-inf", math.nan])
def test_every_model_time_and_rate_must_be_finite(field: str, value: object) -> None:
    fields = {"provider": "openai", "backends": [{"url": "http://h/v1"}], field: value}
    with pytest.raises(ValidationError, match=rf"{field}[\s\S]*finite number"):
        ModelConfig.model_validate(fields)


@pytest.mark.parametrize("field", _float_fields(BackendConfig))
@pytest.mark.parametrize("value", [math.inf, "inf"])
def test_every_backend_time_and_weight_must_be_finite(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=rf"{field}[\s\S]*finite number"):
        BackendConfig.model_validate({"url": "http://h/v1", field: value})


def test_an_infinite_timeout_in_toml_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "chatkeep.toml"
    config.write_text(
        '[models.gpt]\nprovider = "openai"\nurl = "http://h/v1"\ntimeout_seconds = inf\n'
    )
    with pytest.raises(ValidationError, match=r"models\.gpt\.timeout_seconds"):
        load_settings(config)


def test_there_are_float_settings_to_check() -> None:
    assert {"timeout_seconds", "hedge_after_ms", "breaker_cooldown_seconds"} <= set(
        _float_fields(ModelConfig)
    )
    assert "weight" in _float_fields(BackendConfig)


@pytest.mark.parametrize(
    "fields",
    [
        {"provider": "openai", "url": "http://alice:pw-9x@h/v1", "api_key": "k"},
        {
            "provider": "openai",
            "backends": [{"url": "https://alice:pw-9x@h/v1", "api_key": "k"}],
        },
    ],
)
def test_credentials_in_the_url_and_an_api_key_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"credentials \(user:password@\) and api_key") as e:
        ModelConfig.model_validate(fields)
    assert "pw-9x" not in str(e.value)


def test_credentials_in_the_url_alone_are_kept() -> None:
    model = ModelConfig(provider="ollama", url="http://alice:pw@h:11434")
    assert model.url == "http://alice:pw@h:11434"
    backend = BackendConfig(url="http://alice:pw@h:11434")
    assert backend.api_key is None


def test_an_empty_backends_list_says_so(tmp_path: Path) -> None:
    config = tmp_path / "chatkeep.toml"
    config.write_text('[models.gpt]\nprovider = "openai"\nbackends = []\n')
    with pytest.raises(ValidationError, match="backends: at least one backend"):
        load_settings(config)
