"""Settings: environment, TOML file, sizes; and the README documents every one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatkeep.settings import (
    SECTIONS,
    Settings,
    flat_names,
    load_settings,
    parse_size,
    unknown_variables,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_sizes_read_units() -> None:
    assert parse_size("64MiB") == 64 * 1024**2
    assert parse_size("1.5 GB") == 1_500_000_000
    assert parse_size(1024) == 1024
    with pytest.raises(ValueError):
        parse_size("lots")


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "chatkeep.toml"
    config.write_text(
        'port = 9000\nworking_set_bytes = "8MiB"\n'
        '[models.llama]\nprovider = "ollama"\nurl = "http://127.0.0.1:11434"\n'
    )
    monkeypatch.setenv("CHATKEEP_PORT", "9100")
    settings = load_settings(config, default_model="llama")
    assert settings.port == 9100
    assert settings.working_set.bytes == 8 * 1024**2
    assert settings.models["llama"].provider == "ollama"


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nope.toml")


def test_every_setting_is_in_the_readme_table() -> None:
    documented = set(re.findall(r"CHATKEEP_[A-Z_]+", README.read_text()))
    # Rows like `CHATKEEP_MEMORY_TIER_WARN` / `_EVICT` name several settings at once.
    for row in re.findall(r"`(CHATKEEP_[A-Z_]+)`((?: / `_[A-Z_]+`)+)", README.read_text()):
        stem = row[0].rsplit("_", 1)[0]
        documented |= {stem + suffix for suffix in re.findall(r"`(_[A-Z_]+)`", row[1])}
    top_level = {name for name in Settings.model_fields if name not in SECTIONS}
    names = (top_level - {"config_file"}) | set(flat_names())
    fields = {f"CHATKEEP_{name.upper()}" for name in names}
    missing = sorted(fields - documented)
    assert not missing, f"settings missing from the README: {missing}"


def test_flat_names_land_in_their_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATKEEP_SQLITE_SYNCHRONOUS", "NORMAL")
    monkeypatch.setenv("CHATKEEP_SSE_PING_SECONDS", "3")
    monkeypatch.setenv("CHATKEEP_STREAM_BUFFER_BYTES", "2MiB")
    settings = Settings(max_page_size=7, memory_budget="1GiB")
    assert settings.sqlite.synchronous == "NORMAL"
    assert settings.streams.ping_seconds == 3
    assert settings.streams.buffer_bytes == 2 * 1024**2
    assert settings.limits.max_page_size == 7
    assert settings.memory.budget == 1024**3


def test_a_file_may_use_sections_and_the_environment_still_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "chatkeep.toml"
    config.write_text('[sqlite]\nreaders = 3\nsynchronous = "FULL"\n[streams]\nmax_retained = 5\n')
    monkeypatch.setenv("CHATKEEP_SQLITE_SYNCHRONOUS", "NORMAL")
    settings = load_settings(config)
    assert (settings.sqlite.readers, settings.sqlite.synchronous) == (3, "NORMAL")
    assert settings.streams.max_retained == 5


def test_a_misspelt_setting_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "chatkeep.toml"
    config.write_text("max_page_sise = 10\n")
    with pytest.raises(ValueError, match="max_page_sise"):
        load_settings(config)
    with pytest.raises(ValueError, match="readerz"):
        Settings(sqlite={"readerz": 2})


def test_every_flat_name_is_unique_and_reaches_its_field() -> None:
    names = flat_names()
    for flat, (section, field) in names.items():
        assert field in SECTIONS[section].model_fields
        assert flat not in Settings.model_fields, f"{flat} is also a top-level setting"


def test_unknown_variables_are_named() -> None:
    environ = {
        "CHATKEEP_MAX_PAGE_SISE": "10",
        "CHATKEEP_MAX_PAGE_SIZE": "10",
        "CHATKEEP_MODELS__LLAMA__URL": "http://127.0.0.1:11434",
        "CHATKEEP_SSE_PING_SECONDS": "5",
        "PATH": "/bin",
    }
    assert unknown_variables(environ) == ["CHATKEEP_MAX_PAGE_SISE"]


def test_a_flat_name_in_a_file_survives_the_environment_setting_another_of_its_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "chatkeep.toml"
    config.write_text('max_body_bytes = "10MiB"\n')
    monkeypatch.setenv("CHATKEEP_MAX_MESSAGE_CHARS", "200000")
    settings = load_settings(config)
    assert settings.limits.max_body_bytes == 10 * 1024**2
    assert settings.limits.max_message_chars == 200_000


def test_a_flat_keyword_wins_over_its_section_given_alongside() -> None:
    settings = Settings(limits={"max_page_size": 5, "max_title_chars": 9}, max_page_size=7)
    assert (settings.limits.max_page_size, settings.limits.max_title_chars) == (7, 9)


def test_a_section_that_is_not_a_table_is_a_validation_error(tmp_path: Path) -> None:
    config = tmp_path / "chatkeep.toml"
    config.write_text('limits = "x"\nmax_body_bytes = "2MiB"\n')
    with pytest.raises(ValueError, match="limits"):
        load_settings(config)
