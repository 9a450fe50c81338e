"""Reading an export document from bytes, JSON or YAML, without trusting it.

A document that cannot be read at all — not JSON or YAML, not a mapping, another format,
another version — is `InvalidDocument` (422). What it holds is then read conversation by
conversation (`chatkeep.transfer.format.read_conversation`), so one bad conversation is
rejected on its own.

YAML is read with PyYAML's safe loader (plain data only, no Python objects), after one
pass over its events that refuses what the loader would turn into unbounded work:

* **aliases** (``*name``): each one repeats a whole subtree, so a few hundred bytes can
  expand into billions of nodes (the "billion laughs" document). An export never writes
  one.
* **nesting** past `document_depth`: the loader builds nested values recursively, in C,
  where a deep enough document would exhaust the stack instead of raising.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
import yaml
from pydantic import ValidationError

from chatkeep.errors import InvalidRequest
from chatkeep.settings import LimitSettings
from chatkeep.transfer.format import FORMAT, VERSION, DocumentHead, describe_errors

Kind = Literal["json", "yaml"]

#: How much of a parser's complaint an answer quotes.
_SHOWN_CHARS = 300

# libyaml's bindings when PyYAML was built with them: several times faster.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class InvalidDocument(InvalidRequest):
    """A document that cannot be read at all; nothing of it was imported."""


def document_depth(limits: LimitSettings) -> int:
    """How deep a document may nest: the document, its list, a conversation, then metadata
    (a message and its usage reach six levels)."""
    return max(3 + limits.max_metadata_depth, 6)


def kind_of_media(content_type: str | None) -> Kind:
    """YAML for ``application/yaml`` (``x-yaml``, ``text/yaml``); JSON for anything else."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return "yaml" if media.endswith("yaml") else "json"


def kind_of_file(name: str, data: bytes) -> Kind:
    """YAML for ``*.yaml`` / ``*.yml``, JSON for ``*.json``; else JSON if it starts with ``{``."""
    lowered = name.lower()
    if lowered.endswith((".yaml", ".yml")):
        return "yaml"
    if lowered.endswith(".json"):
        return "json"
    return "json" if data.lstrip()[:1] == b"{" else "yaml"


def parse(data: bytes, kind: Kind, *, max_depth: int) -> Any:
    """The decoded document, or `InvalidDocument` saying why it cannot be read."""
    if kind == "json":
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidDocument(f"not JSON: {_shown(str(exc))}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidDocument(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        _check_events(text, max_depth)
        return yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as exc:
        raise InvalidDocument(f"not YAML: {_shown(str(exc))}") from None


def read_head(document: Any) -> DocumentHead:
    """The document's own fields, checked; its conversations are still unread."""
    if not isinstance(document, dict):
        raise InvalidDocument(
            f'not a chatkeep export: expected a mapping with "format": "{FORMAT}"'
        )
    if document.get("format") != FORMAT:
        raise InvalidDocument(f'not a chatkeep export: "format" must be "{FORMAT}"')
    version = document.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise InvalidDocument(
            f"export format version {version} was written by a newer chatkeep; "
            f"this one reads version {VERSION}: upgrade chatkeep to import it"
        )
    if version != VERSION or isinstance(version, bool):
        raise InvalidDocument(f'"version" must be {VERSION}')
    try:
        return DocumentHead.model_validate(document)
    except ValidationError as exc:
        raise InvalidDocument(describe_errors(exc)) from None


def _check_events(text: str, max_depth: int) -> None:
    """Refuse aliases and nesting deeper than ``max_depth`` (see the module docstring)."""
    depth = 0
    for event in yaml.parse(text, Loader=_SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise InvalidDocument(
                f"YAML aliases are not accepted (*{_shown(str(event.anchor))}); write the value out"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > max_depth:
                raise InvalidDocument(f"nested more than {max_depth} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"
