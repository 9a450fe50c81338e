"""Every TOML example in the README and the providers guide is a configuration that loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatkeep.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [
    (path.name, number, block)
    for path in (ROOT / "README.md", ROOT / "docs" / "providers.md")
    for number, block in enumerate(re.findall(r"```toml\n(.*?)```", path.read_text(), re.S))
]


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize(("document", "number", "block"), EXAMPLES)
def test_toml_example_loads(document: str, number: int, block: str, tmp_path: Path) -> None:
    config = tmp_path / "chatkeep.toml"
    config.write_text(block)
    settings = load_settings(config)
    assert settings.models, f"{document} example {number} configures no model"
