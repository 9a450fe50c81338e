"""Reading an export document from bytes, JSON or YAML, without trusting it.

A document that cannot be read at all — not UTF-8, not JSON or YAML, not a mapping,
another format, another version, a key given twice — is `InvalidDocument` (422). What it
holds is then read conversation by conversation
(`chatkeep.transfer.format.read_conversation`), so one bad conversation is rejected on its
own.

Both syntaxes refuse a **key given twice in one mapping** (``{"title": "a", "title":
"b"}``): a parser would silently keep the last, and the document would not mean what it
shows.

**JSON** is read with the standard library's parser, not orjson: orjson reads an integer
past 64 bits as a float (``2**70`` → ``1.1805916207174113e+21``), which then passes every
check and is stored as another number. The standard parser keeps integers exact, so the
checks refuse what cannot be stored, as they do for YAML and for the API. ``NaN`` and
``Infinity`` are refused: they are not JSON. The price is parsing time: a 10 MB export
(26 200 messages) parses in about 110 ms instead of 58 ms (medians of 15 interleaved
rounds), beside about 0.5 s to check and store it in memory and 0.7 to 0.9 s in SQLite, so a
whole import takes under a tenth longer; its peak allocation is no higher.

**YAML** is read with PyYAML's safe loader (plain data only, no Python objects), after one
pass over its events that refuses what the loader would turn into unbounded work:

* **aliases** (``*name``): each one repeats a whole subtree, so a few hundred bytes can
  expand into billions of nodes (the "billion laughs" document). An export never writes
  one.
* **nesting** past `document_depth`: the loader builds nested values recursively, in C,
  where a deep enough document would exhaust the stack instead of raising.

The loader itself refuses repeated keys and **merge keys** (``<<: {…}``), whose keys the
mapping's own silently override: the same hidden choice. An export never writes one (it
quotes a key ``<<``). Checking keys costs about 5% of YAML's loading time.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import yaml
from pydantic import ValidationError

from chatkeep.errors import InvalidRequest
from chatkeep.settings import LimitSettings
from chatkeep.transfer.format import FORMAT, VERSION, DocumentHead
from chatkeep.transfer.problems import describe_errors, shown_part

Kind = Literal["json", "yaml"]

#: How much of a parser's complaint an answer quotes.
_SHOWN_CHARS = 300
_MERGE_TAG = "tag:yaml.org,2002:merge"

# libyaml's bindings when PyYAML was built with them: several times faster.
if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidDocument(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if kind == "json":
        return _parse_json(text)
    try:
        _check_events(text, max_depth)
        return yaml.load(text, Loader=_StrictLoader)
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


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_not_a_number)
    except json.JSONDecodeError as exc:
        raise InvalidDocument(f"not JSON: {_shown(str(exc))}") from None
    except ValueError:
        # The only other ValueError the parser raises: an integer too long to convert.
        raise InvalidDocument(
            f"not JSON chatkeep reads: a number of more than {sys.get_int_max_str_digits()} digits"
        ) from None
    except RecursionError:
        raise InvalidDocument("not JSON chatkeep reads: nested too deeply") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's dict, refusing a key it names twice."""
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                _refuse_repeated(key, "object")
            seen.add(key)
    return found


def _not_a_number(constant: str) -> NoReturn:
    raise InvalidDocument(f"not JSON: {constant} is not a number JSON can hold")


def _refuse_repeated(key: Hashable, where: str) -> NoReturn:
    raise InvalidDocument(
        f'the key "{shown_part(str(key))}" is given twice in one {where}; give each key once'
    )


class _StrictLoader(_SafeLoader):
    """The safe loader, refusing a key repeated in one mapping, and merge keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, yaml.MappingNode):  # else the base class refuses the node
            seen: set[Hashable] = set()
            for key_node, _ in node.value:
                line = key_node.start_mark.line + 1
                if key_node.tag == _MERGE_TAG:
                    raise InvalidDocument(
                        f"YAML merge keys (<<) are not accepted (line {line}); write it out"
                    )
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # not hashable: the loader refuses it itself
                key = self.construct_object(key_node)
                if key in seen:
                    _refuse_repeated(key, f"mapping (line {line})")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


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
