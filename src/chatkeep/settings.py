"""One settings tree, read from ``CHATKEEP_*`` environment variables and an optional TOML file.

Precedence, highest first: keyword arguments, environment, the TOML file, defaults.
Nested values use ``__`` in environment names (``CHATKEEP_MODELS__LLAMA__URL``) or JSON
(``CHATKEEP_MODELS='{"llama": {"provider": "ollama", "url": "http://127.0.0.1:11434"}}'``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from chatkeep.domain.validation import MAX_JSON_DEPTH

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(value: int | str) -> int:
    """Read a byte size given as an integer or a string such as ``64MiB`` or ``1.5 GB``."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", value)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a byte size: {value!r} (use e.g. 1048576, 512MiB or 2GB)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


class ModelConfig(BaseModel):
    """How one model name reaches its backend."""

    provider: Literal["echo", "ollama", "openai"]
    url: str | None = Field(default=None, description="Backend base URL (ollama, openai).")
    api_key: str | None = Field(default=None, description="Bearer key sent to the backend.")
    upstream_model: str | None = Field(
        default=None, description="The backend's name for the model; defaults to the key."
    )
    context_tokens: int = Field(default=4096, ge=64, description="Context budget in tokens.")
    timeout_seconds: float = Field(default=120.0, gt=0, description="Whole-reply timeout.")
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=100, ge=1, description="Connection pool bound.")
    # Below the backend's own idle timeout, or a connection it just closed gets reused:
    # uvicorn (vLLM, most Python servers) closes idle ones after 5 s by default.
    keepalive_seconds: float = Field(
        default=4.0, gt=0, description="Idle backend connections are closed after this long."
    )
    tokenizer: Literal["auto", "heuristic"] = Field(
        default="auto", description="auto: a real tokenizer when one is installed."
    )


def _default_models() -> dict[str, ModelConfig]:
    return {"echo": ModelConfig(provider="echo")}


class Settings(BaseSettings):
    """Every setting chatkeep reads. See the configuration table in the README."""

    model_config = SettingsConfigDict(
        env_prefix="CHATKEEP_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8350, ge=0, le=65535)
    data_dir: Path = Path("data")
    storage: Literal["sqlite", "memory"] = "sqlite"
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    sqlite_readers: int = Field(default=2, ge=1, le=32)

    models: dict[str, ModelConfig] = Field(default_factory=_default_models)
    default_model: str = "echo"
    echo_delay_ms: float = Field(default=0.0, ge=0)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_message_chars: int = Field(default=100_000, ge=1)
    max_page_size: int = Field(default=200, ge=1)
    default_page_size: int = Field(default=50, ge=1)
    max_title_chars: int = Field(default=500, ge=1)
    max_metadata_bytes: int = Field(default=16 * 1024, ge=2)
    # Deeper metadata is refused (422); the ceiling keeps every answer serialisable.
    max_metadata_depth: int = Field(default=32, ge=1, le=MAX_JSON_DEPTH)
    idempotency_key_chars: int = Field(default=200, ge=8)

    default_owner: str = "default"

    max_inflight_generations: int = Field(default=64, ge=1)
    max_queued_generations: int = Field(default=256, ge=0)
    retry_after_seconds: float = Field(default=1.0, gt=0)

    max_messages_per_request: int = Field(default=1000, ge=1)

    # Reply streams: the buffer holds one reply's text; a longer reply ends incomplete.
    stream_buffer_bytes: int = Field(default=1024 * 1024, ge=1024)
    subscriber_queue_bytes: int = Field(default=256 * 1024, ge=1024)
    max_subscribers_per_stream: int = Field(default=16, ge=1)
    stream_retention_seconds: float = Field(default=60.0, ge=0)
    max_retained_streams: int = Field(default=256, ge=0)
    stream_idle_timeout_seconds: float = Field(default=60.0, gt=0)

    # Working set of recently used conversations (write-through, so eviction loses nothing).
    working_set_bytes: int = Field(default=64 * 1024**2, ge=0)
    working_set_recent_messages: int = Field(default=512, ge=1)

    # Summaries of older turns, made in the background.
    summary_threshold_tokens: int = Field(default=2048, ge=1)
    summary_queue_size: int = Field(default=64, ge=0)
    summary_concurrency: int = Field(default=2, ge=1)
    summary_priority: int = Field(default=5, ge=0, le=9)
    summary_job_timeout_seconds: float = Field(default=120.0, gt=0)
    summary_max_tokens: int = Field(default=512, ge=16)

    # Logging: message content is cut, repeated identical errors are rate-limited.
    log_content_chars: int = Field(default=200, ge=0)
    log_repeat_window_seconds: float = Field(default=60.0, gt=0)
    log_repeat_limit: int = Field(default=5, ge=1)
    log_format: Literal["json", "text"] = "json"

    # Garbage collector: allocations between young-generation collections. The default
    # of CPython (700) makes a busy server spend a tenth of its time collecting.
    gc_threshold: int = Field(default=10_000, ge=100)

    # Memory governor.
    memory_budget: int | None = None
    memory_sample_interval_seconds: float = Field(default=5.0, gt=0)
    memory_sample_every_requests: int = Field(default=100, ge=0)
    memory_window_samples: int = Field(default=1024, ge=16)
    memory_trend_warmup_requests: int = Field(default=1000, ge=0)
    memory_uss_every_samples: int = Field(default=12, ge=0)
    memory_tier_warn: float = Field(default=0.60, gt=0, lt=1)
    memory_tier_evict: float = Field(default=0.70, gt=0, lt=1)
    memory_tier_shed: float = Field(default=0.85, gt=0, lt=1)
    memory_tier_critical: float = Field(default=0.95, gt=0, le=1)
    memory_hysteresis: float = Field(default=0.05, ge=0, lt=0.5)
    memory_evict_share: float = Field(default=0.25, gt=0, le=1)
    memory_evict_interval_seconds: float = Field(default=2.0, ge=0)
    memory_gc_time_share: float = Field(default=0.02, gt=0, le=1)
    memory_malloc_trim: bool = True
    memory_retry_after_seconds: float = Field(default=5.0, gt=0)
    memory_profile_max_seconds: float = Field(default=60.0, gt=0)
    memory_profile_max_top: int = Field(default=100, ge=1)

    # Administration: /admin needs this bearer token; without one, only loopback reaches it.
    admin_token: str | None = None
    sse_ping_seconds: float = Field(default=15.0, gt=0)
    sse_send_timeout_seconds: float = Field(default=30.0, gt=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)

    log_level: str = "INFO"

    config_file: Path | None = Field(default=None, exclude=True)

    @field_validator(
        "max_body_bytes",
        "stream_buffer_bytes",
        "subscriber_queue_bytes",
        "max_metadata_bytes",
        "working_set_bytes",
        "memory_budget",
        mode="before",
    )
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, (int, str)) and value != "" else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from the environment, an optional TOML file and overrides."""
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        # The TOML path must be known while the sources are assembled, so it goes
        # into the class's config rather than into the instance.
        config = SettingsConfigDict(**{**Settings.model_config, "toml_file": config_file})
        settings_cls = type("FileSettings", (Settings,), {"model_config": config})
    settings = settings_cls(**overrides)
    settings.config_file = config_file
    return settings
