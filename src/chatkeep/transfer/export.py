"""Export: a document written piece by piece, as JSON or YAML, in bounded memory.

The document is an async iterator of byte chunks. Conversations are listed a page at a
time and their messages read a page (`EXPORT_PAGE`) at a time with the store's ordinary
reads; each message is encoded on its own and the bytes handed on in chunks of about
`CHUNK_BYTES`. What an export holds at once is one page of messages and one chunk,
whether the conversation has ten messages or a million; a consumer that reads slowly
(an HTTP client) pauses the reads, since the next chunk is made only when asked for.

Each conversation is the record as read when its turn came, with exactly its
``message_count`` messages: a reply committed meanwhile is left out, so the document is
always consistent. A conversation deleted before its turn is left out; one deleted while
its messages are being read ends the export with `NotFound`, never with a document that
silently lacks messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import yaml

from chatkeep.domain.records import Conversation, Message
from chatkeep.errors import NotFound
from chatkeep.storage.base import Store
from chatkeep.transfer.documents import Kind
from chatkeep.transfer.format import FORMAT, VERSION, conversation_entry, message_entry

#: Messages read from the store at once. A message may hold `max_message_chars`, so a page
#: bounds memory too: 100 is few enough to stay small, many enough that reads are cheap.
EXPORT_PAGE = 100
#: Bytes collected before a chunk is handed on (fewer, larger writes to a socket or file).
CHUNK_BYTES = 64 * 1024

MEDIA_TYPES: dict[Kind, str] = {"json": "application/json", "yaml": "application/yaml"}

# libyaml's emitter when PyYAML was built with it: several times faster.
_SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass(slots=True)
class ExportCounts:
    """How much an export has written so far (a progress report for the CLI)."""

    conversations: int = 0
    messages: int = 0


class _Writer(Protocol):
    def head(self, exported_at: float) -> bytes: ...
    def conversation(self, entry: dict[str, Any], first: bool, has_messages: bool) -> bytes: ...
    def message(self, entry: dict[str, Any], first: bool) -> bytes: ...
    def conversation_end(self, has_messages: bool) -> bytes: ...
    def end(self, empty: bool) -> bytes: ...


def _head(exported_at: float) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "exported_at": exported_at}


class _JsonWriter:
    """One JSON object; a message per line, so line tools can look inside."""

    def head(self, exported_at: float) -> bytes:
        return orjson.dumps(_head(exported_at))[:-1] + b',"conversations":['

    def conversation(self, entry: dict[str, Any], first: bool, has_messages: bool) -> bytes:
        # The fields, with the object left open for its messages, which come last.
        return (b"\n" if first else b",\n") + orjson.dumps(entry)[:-1] + b',"messages":['

    def message(self, entry: dict[str, Any], first: bool) -> bytes:
        return (b"\n" if first else b",\n") + orjson.dumps(entry)

    def conversation_end(self, has_messages: bool) -> bytes:
        return b"]}"

    def end(self, empty: bool) -> bytes:
        return b"]}\n"


class _YamlWriter:
    """One YAML document; each part dumped by PyYAML's safe dumper, then indented.

    Indenting a part as a whole keeps its meaning: YAML is read relative to the parent's
    indentation, and the continuation lines of a quoted string drop their leading spaces.
    """

    def head(self, exported_at: float) -> bytes:
        return _yaml(_head(exported_at))

    def conversation(self, entry: dict[str, Any], first: bool, has_messages: bool) -> bytes:
        opening = b"conversations:\n" if first else b""
        messages = b"    messages:\n" if has_messages else b"    messages: []\n"
        return opening + _indent(_yaml([entry]), 2) + messages

    def message(self, entry: dict[str, Any], first: bool) -> bytes:
        return _indent(_yaml([entry]), 4)

    def conversation_end(self, has_messages: bool) -> bytes:
        return b""

    def end(self, empty: bool) -> bytes:
        return b"conversations: []\n" if empty else b""


def _yaml(value: Any) -> bytes:
    text: str = yaml.dump(
        value,
        Dumper=_SafeDumper,
        allow_unicode=True,
        sort_keys=False,
        default_flow_style=False,
        # Long strings stay on one line: no folding to undo when reading.
        width=1 << 30,
    )
    return text.encode("utf-8")


def _indent(text: bytes, spaces: int) -> bytes:
    pad = b" " * spaces
    # An empty line (inside a quoted string) means the same at any indentation.
    return b"".join(
        line if line == b"\n" else pad + line for line in text.splitlines(keepends=True)
    )


_WRITERS: dict[Kind, _Writer] = {"json": _JsonWriter(), "yaml": _YamlWriter()}


async def export_conversation(
    store: Store,
    owner_id: str,
    conversation: Conversation,
    kind: Kind,
    *,
    exported_at: float,
    counts: ExportCounts | None = None,
) -> AsyncIterator[bytes]:
    """A document holding ``conversation`` (as read by the caller) and its messages."""

    async def one() -> AsyncIterator[Conversation]:
        yield conversation

    async for chunk in _document(
        store, owner_id, one(), kind, exported_at, counts, skip_missing=False
    ):
        yield chunk


async def export_owner(
    store: Store,
    owner_id: str,
    kind: Kind,
    *,
    exported_at: float,
    counts: ExportCounts | None = None,
) -> AsyncIterator[bytes]:
    """A document holding every conversation of ``owner_id``, newest first."""
    async for chunk in _document(
        store, owner_id, _listing(store, owner_id), kind, exported_at, counts, skip_missing=True
    ):
        yield chunk


async def _listing(store: Store, owner_id: str) -> AsyncIterator[Conversation]:
    cursor: str | None = None
    while True:
        page = await store.list_conversations(
            owner_id, status=None, limit=EXPORT_PAGE, cursor=cursor
        )
        for conversation in page.items:
            yield conversation
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def _document(
    store: Store,
    owner_id: str,
    conversations: AsyncIterator[Conversation],
    kind: Kind,
    exported_at: float,
    counts: ExportCounts | None,
    *,
    skip_missing: bool,
) -> AsyncIterator[bytes]:
    writer = _WRITERS[kind]
    counts = counts if counts is not None else ExportCounts()
    buffer = bytearray(writer.head(exported_at))
    first = True
    async for conversation in conversations:
        total = conversation.message_count
        after = 0
        try:  # the first page before any byte of the conversation: it may be gone
            page = await _page(store, owner_id, conversation, after)
        except NotFound:
            if skip_missing:
                continue
            raise
        buffer += writer.conversation(conversation_entry(conversation), first, total > 0)
        first = False
        while page:
            for message in page:
                # Messages are numbered from 1: seq 1 opens the conversation's list.
                buffer += writer.message(message_entry(message), message.seq == 1)
                if len(buffer) >= CHUNK_BYTES:
                    yield bytes(buffer)
                    buffer.clear()
            after = page[-1].seq
            counts.messages += len(page)
            page = await _page(store, owner_id, conversation, after) if after < total else []
        if after != total:
            raise NotFound(f"conversation {conversation.id} was deleted while being exported")
        buffer += writer.conversation_end(total > 0)
        counts.conversations += 1
    buffer += writer.end(first)
    yield bytes(buffer)


async def _page(
    store: Store, owner_id: str, conversation: Conversation, after: int
) -> list[Message]:
    """The next messages past ``after``, never past the record's ``message_count``."""
    wanted = min(EXPORT_PAGE, conversation.message_count - after)
    if wanted <= 0:
        return []
    page = await store.list_messages(owner_id, conversation.id, limit=wanted, after=after)
    return page.items
