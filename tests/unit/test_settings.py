"""Settings: environment, TOML file, sizes; and the README documents every one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatkeep.settings import Settings, load_settings, parse_size

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
    assert settings.working_set_bytes == 8 * 1024**2
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
    fields = {f"CHATKEEP_{name.upper()}" for name in Settings.model_fields if name != "config_file"}
    missing = sorted(fields - documented)
    assert not missing, f"settings missing from the README: {missing}"
