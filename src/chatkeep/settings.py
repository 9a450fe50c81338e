"""One settings tree in sections, read from ``CHATKEEP_*`` variables and an optional TOML file.

Precedence, highest first: keyword arguments, environment, the TOML file, defaults.

Each section is handed whole to the component it configures (`SQLiteSettings` to the
store, `MemorySettings` to the governor…), so a component reads only its own section.
Every setting has one flat name, the one the README lists: mostly the section's prefix and
the field's name (``CHATKEEP_SQLITE_SYNCHRONOUS`` is ``sqlite.synchronous``,
``CHATKEEP_MAX_BODY_BYTES`` is ``limits.max_body_bytes``). The flat name works in the
environment, as a keyword argument and at the top of a TOML file; a TOML file may also use
the sections (``[sqlite] synchronous = "NORMAL"``). Models are a table of their own:
``CHATKEEP_MODELS='{"llama": {"provider": "ollama", "url": "http://127.0.0.1:11434"}}'``,
or ``CHATKEEP_MODELS__LLAMA__URL=…``, or ``[models.llama]`` in TOML.

Sizes are `pydantic.ByteSize`: an integer, or a string such as ``64MiB`` or ``1.5GB``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, TypeAdapter, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from chatkeep.domain.validation import MAX_JSON_DEPTH
from chatkeep.model_settings import (
    MAX_BACKENDS,
    POOL_OPTIONS,
    BackendConfig,
    ModelConfig,
    default_models,
)

__all__ = [
    "MAX_BACKENDS",
    "POOL_OPTIONS",
    "BackendConfig",
    "ModelConfig",
    "Settings",
    "load_settings",
]

ENV_PREFIX = "CHATKEEP_"


class Section(BaseModel):
    """A group of settings; ``flat_prefix`` + a field's name is its flat name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: What the flat names of this section's fields start with (after ``CHATKEEP_``).
    flat_prefix: ClassVar[str] = ""
    #: Fields whose flat name is not the prefix and the field's name (kept from before
    #: the settings had sections, so that existing configurations keep working).
    flat_renames: ClassVar[dict[str, str]] = {}


class SQLiteSettings(Section):
    """The SQLite store."""

    flat_prefix: ClassVar[str] = "sqlite_"

    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    busy_timeout_ms: int = Field(default=5000, ge=0)
    readers: int = Field(default=2, ge=1, le=32)


class LimitSettings(Section):
    """What one request may carry and one page may hold."""

    max_body_bytes: ByteSize = Field(default=ByteSize(1024 * 1024), ge=1024)
    # The request line and headers together; more is 431 before the app sees them.
    max_header_bytes: ByteSize = Field(default=ByteSize(64 * 1024), ge=1024)
    max_message_chars: int = Field(default=100_000, ge=1)
    max_page_size: int = Field(default=200, ge=1)
    default_page_size: int = Field(default=50, ge=1)
    max_title_chars: int = Field(default=500, ge=1)
    max_metadata_bytes: ByteSize = Field(default=ByteSize(16 * 1024), ge=2)
    # Deeper metadata is refused (422); the ceiling keeps every answer serialisable.
    max_metadata_depth: int = Field(default=32, ge=1, le=MAX_JSON_DEPTH)
    idempotency_key_chars: int = Field(default=200, ge=8)
    max_messages_per_request: int = Field(default=1000, ge=1)


class AdmissionSettings(Section):
    """The bounded queue of generations."""

    max_inflight_generations: int = Field(default=64, ge=1)
    max_queued_generations: int = Field(default=256, ge=0)
    # One owner's share of the queue: a flood from one key waits behind this many of its
    # own, not in front of everyone else's.
    max_queued_per_owner: int = Field(default=64, ge=1)
    retry_after_seconds: float = Field(default=1.0, gt=0)


class StreamSettings(Section):
    """Reply streams and their readers: the buffer holds one reply's text."""

    flat_prefix: ClassVar[str] = "stream_"
    flat_renames: ClassVar[dict[str, str]] = {
        "subscriber_queue_bytes": "subscriber_queue_bytes",
        "max_subscribers": "max_subscribers_per_stream",
        "max_retained": "max_retained_streams",
        "ping_seconds": "sse_ping_seconds",
        "send_timeout_seconds": "sse_send_timeout_seconds",
    }

    buffer_bytes: ByteSize = Field(default=ByteSize(1024 * 1024), ge=1024)
    subscriber_queue_bytes: ByteSize = Field(default=ByteSize(256 * 1024), ge=1024)
    max_subscribers: int = Field(default=16, ge=1)
    retention_seconds: float = Field(default=60.0, ge=0)
    max_retained: int = Field(default=256, ge=0)
    idle_timeout_seconds: float = Field(default=60.0, gt=0)
    ping_seconds: float = Field(default=15.0, gt=0)
    send_timeout_seconds: float = Field(default=30.0, gt=0)


class WorkingSetSettings(Section):
    """Recently used conversations (write-through, so eviction loses nothing)."""

    flat_prefix: ClassVar[str] = "working_set_"

    bytes: ByteSize = Field(default=ByteSize(64 * 1024**2), ge=0)
    recent_messages: int = Field(default=512, ge=1)


class SummarySettings(Section):
    """Summaries of older turns, made in the background."""

    flat_prefix: ClassVar[str] = "summary_"

    threshold_tokens: int = Field(default=2048, ge=1)
    queue_size: int = Field(default=64, ge=0)
    concurrency: int = Field(default=2, ge=1)
    priority: int = Field(default=5, ge=0, le=9)
    job_timeout_seconds: float = Field(default=120.0, gt=0)
    max_tokens: int = Field(default=512, ge=16)


class LogSettings(Section):
    """Logging: message content is cut, repeated identical errors are rate-limited."""

    flat_prefix: ClassVar[str] = "log_"

    level: str = "INFO"
    format: Literal["json", "text"] = "json"
    content_chars: int = Field(default=200, ge=0)
    repeat_window_seconds: float = Field(default=60.0, gt=0)
    repeat_limit: int = Field(default=5, ge=1)


class MemorySettings(Section):
    """The memory governor: budget, sampling, tiers, reactions and the profiler."""

    flat_prefix: ClassVar[str] = "memory_"

    budget: ByteSize | None = None
    sample_interval_seconds: float = Field(default=5.0, gt=0)
    sample_every_requests: int = Field(default=100, ge=0)
    window_samples: int = Field(default=1024, ge=16)
    trend_warmup_requests: int = Field(default=1000, ge=0)
    uss_every_samples: int = Field(default=12, ge=0)
    tier_warn: float = Field(default=0.60, gt=0, lt=1)
    tier_evict: float = Field(default=0.70, gt=0, lt=1)
    tier_shed: float = Field(default=0.85, gt=0, lt=1)
    tier_critical: float = Field(default=0.95, gt=0, le=1)
    hysteresis: float = Field(default=0.05, ge=0, lt=0.5)
    evict_share: float = Field(default=0.25, gt=0, le=1)
    evict_interval_seconds: float = Field(default=2.0, ge=0)
    gc_time_share: float = Field(default=0.02, gt=0, le=1)
    malloc_trim: bool = True
    retry_after_seconds: float = Field(default=5.0, gt=0)
    profile_max_seconds: float = Field(default=60.0, gt=0)
    profile_max_top: int = Field(default=100, ge=1)


class AccessSettings(Section):
    """Who may call: ``none`` (one owner, loopback only) or API ``keys``; and the keys' limits."""

    flat_prefix: ClassVar[str] = "auth_"
    flat_renames: ClassVar[dict[str, str]] = {
        "mode": "auth",
        "metrics_token": "metrics_token",
        "rate": "key_rate",
        "burst": "key_burst",
        "max_streams": "key_max_streams",
        "priority": "key_priority",
    }

    mode: Literal["none", "keys"] = "none"
    # /metrics takes this bearer token as well as the admin token.
    metrics_token: str | None = None
    # Keys looked up recently, by the hash of their secret; an entry is read again after
    # cache_seconds, so a revoked key stops working within that time.
    cache_size: int = Field(default=10_000, ge=1)
    cache_seconds: float = Field(default=1.0, gt=0, le=60)
    # Failed attempts (a missing or wrong key) one client address may make a minute,
    # counted over at most max_tracked_clients addresses.
    failed_per_minute: int = Field(default=30, ge=1)
    max_tracked_clients: int = Field(default=10_000, ge=1)
    # Unrevoked keys one owner may hold (a key can make keys: this bounds how many).
    max_keys_per_owner: int = Field(default=1000, ge=1)
    # The limits of a key created without its own (`chatkeep keys create`).
    rate: float = Field(default=20.0, gt=0)
    burst: int = Field(default=40, ge=1)
    max_streams: int = Field(default=8, ge=1)
    priority: int = Field(default=0, ge=0, le=9)


class RetentionSettings(Section):
    """An optional policy: archive, then delete, conversations idle for so many days."""

    flat_prefix: ClassVar[str] = "retention_"

    archive_after_days: float | None = Field(default=None, gt=0)
    delete_after_days: float | None = Field(default=None, gt=0)
    interval_seconds: float = Field(default=3600.0, gt=0)
    batch_size: int = Field(default=500, ge=1, le=10_000)


#: The sections of `Settings`, by field name.
SECTIONS: dict[str, type[Section]] = {
    "sqlite": SQLiteSettings,
    "limits": LimitSettings,
    "admission": AdmissionSettings,
    "streams": StreamSettings,
    "working_set": WorkingSetSettings,
    "summaries": SummarySettings,
    "logging": LogSettings,
    "memory": MemorySettings,
    "access": AccessSettings,
    "retention": RetentionSettings,
}


def flat_names() -> dict[str, tuple[str, str]]:
    """Every section field's flat name (lower case, no prefix) → (section, field)."""
    names: dict[str, tuple[str, str]] = {}
    for section, model in SECTIONS.items():
        for field in model.model_fields:
            flat = model.flat_renames.get(field, model.flat_prefix + field)
            names[flat] = (section, field)
    return names


class Settings(BaseSettings):
    """Every setting chatkeep reads. See the configuration table in the README."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        # A misspelt setting in a file or an argument is an error, not silently ignored.
        extra="forbid",
        # An error names the setting and the reason, never the value: models hold API keys.
        hide_input_in_errors=True,
        frozen=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8350, ge=0, le=65535)
    data_dir: Path = Path("data")
    storage: Literal["sqlite", "memory"] = "sqlite"
    models: dict[str, ModelConfig] = Field(default_factory=default_models)
    default_model: str = "echo"
    echo_delay_ms: float = Field(default=0.0, ge=0)
    default_owner: str = "default"
    # /admin needs this bearer token; without one, only loopback reaches it.
    admin_token: str | None = None
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # Allocations between young-generation collections. CPython's default (700) makes a
    # busy server spend a tenth of its time collecting.
    gc_threshold: int = Field(default=10_000, ge=100)

    sqlite: SQLiteSettings = SQLiteSettings()
    limits: LimitSettings = LimitSettings()
    admission: AdmissionSettings = AdmissionSettings()
    streams: StreamSettings = StreamSettings()
    working_set: WorkingSetSettings = WorkingSetSettings()
    summaries: SummarySettings = SummarySettings()
    logging: LogSettings = LogSettings()
    memory: MemorySettings = MemorySettings()
    access: AccessSettings = AccessSettings()
    retention: RetentionSettings = RetentionSettings()

    config_file: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_names(cls, data: Any) -> Any:
        """Move settings given by their flat names (keyword arguments) into their sections."""
        return nest_flat_names(data) if isinstance(data, dict) else data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            FlatEnvironment(settings_cls),
            env_settings,
        ]
        if settings_cls.model_config.get("toml_file"):
            sources.append(SectionedToml(settings_cls))
        return tuple(sources)


def nest_flat_names(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with every flat name moved into its section, over what the section says.

    One source at a time (keyword arguments, a TOML file), so that precedence between
    sources stays pydantic-settings' own: within one source a flat name wins.
    """
    names = flat_names()
    nested: dict[str, Any] = {}
    flat: list[tuple[str, str, Any]] = []
    for key, value in data.items():
        where = names.get(key.lower())
        if where is None:
            nested[key] = value
        else:
            flat.append((*where, value))
    for section, field, value in flat:
        given: Any = nested.get(section)
        if isinstance(given, Section):
            given = given.model_dump()
        if given is not None and not isinstance(given, dict):
            continue  # not a table: validation says so, naming the section
        nested[section] = {**(given or {}), field: value}
    return nested


class SectionedToml(TomlConfigSettingsSource):
    """A TOML file whose top level may use flat names too (``max_body_bytes = "2MiB"``)."""

    def __call__(self) -> dict[str, Any]:
        return nest_flat_names(super().__call__())


class FlatEnvironment(PydanticBaseSettingsSource):
    """The section fields' flat ``CHATKEEP_*`` names in the environment, nested."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read at once in __call__

    def __call__(self) -> dict[str, Any]:
        found: dict[str, dict[str, str]] = {}
        for flat, (section, field) in flat_names().items():
            value = os.environ.get(ENV_PREFIX + flat.upper())
            if value is not None:
                found.setdefault(section, {})[field] = value
        return found


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
    return settings_cls(**overrides, config_file=config_file)


def parse_size(value: int | str) -> int:
    """A byte size given as an integer or a string such as ``64MiB`` or ``1.5 GB``."""
    return int(_BYTE_SIZE.validate_python(value))


_BYTE_SIZE: TypeAdapter[ByteSize] = TypeAdapter(ByteSize)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``CHATKEEP_*`` variables that name no setting (a typo is otherwise silently ignored)."""
    known = set(flat_names()) | set(Settings.model_fields)
    unknown = []
    for name in environ:
        if not name.startswith(ENV_PREFIX):
            continue
        setting = name[len(ENV_PREFIX) :].lower()
        if setting.split("__", 1)[0] not in known:
            unknown.append(name)
    return sorted(unknown)
