"""Estimates of how many bytes a value occupies, cheap enough to run on every insert.

``sys.getsizeof`` is shallow and a deep walk with ``gc.get_referents`` costs more than
the caching saves, so caches measure their values with these estimates instead. The leak
verdict is taken on RSS less what the caches report, so an estimate that errs either way
shows up there as a trend: these count what the allocator really holds, no more and no less.

* **Allocator blocks.** Every object is counted as the block it occupies: pymalloc serves
  requests up to 512 bytes from 16-byte size classes, and larger ones go to glibc malloc
  with an 8-byte header, also 16-byte aligned (`block`).
* **Exact shallow sizes.** ``sys.getsizeof`` is O(1) and exact for ``str`` (any kind:
  1, 2 or 4 bytes a character, plus a cached UTF-8 copy when one was made), ``dict``,
  ``list`` and ``tuple``, so it is used for those; records use their slot count.
* **What is shared is not counted.** Small integers (-5…256), ``None``, booleans and the
  empty tuple are singletons. Roles, statuses, model and owner names come from a small
  vocabulary; the copy ``sys.intern`` keeps for each is shared by every record that was
  built from it (literals in the code are interned), so that copy costs a record nothing but
  its slot, while a fresh copy (a database driver makes one per row) is counted in full
  (`vocabulary_size`).

Measured two ways, estimate / measured per working-set entry, before these rules → after.
``bench/sizing_calibration.py``: a real server in process (SQLite, ``echo``) creates
conversations and sends them messages, then the bytes ``tracemalloc`` saw freed when the
working set was emptied, in allocator blocks (its hash table is never given back by popping,
so its share of `CACHE_ENTRY` reads as excess there). ``tests/cache/test_sizing.py``: entries
built as the send path builds them, cache bookkeeping included::

    message chars   exchanges   calibration bench   unit test
               20           1        1.42 → 1.14   1.40 → 0.99
              250           1        1.26 → 1.05   1.30 → 1.00
              250           8           — → 1.01   1.20 → 1.00
             2000           1        1.07 → 1.02           —

Before, shared strings (role, status, model, owner, the cache key) were counted once per
record and small integers as objects; the residual RSS less accounted bytes then fell by
several hundred bytes per conversation created, which read as ``shrinking``.

`conversation_size` and `message_size` apply this to chatkeep's own records, for every
cache that holds them.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from chatkeep.domain.records import Conversation, Message, Usage

#: Machine word: each slot, list element or tuple element is one pointer.
POINTER = 8
#: Object header plus the garbage collector's header of a ``__slots__`` record.
RECORD_HEADER = 32
#: Header of a compact ASCII ``str`` (``sys.getsizeof("")``).
STR_HEADER = 49
#: A ``float`` (24 bytes, in a 32-byte block).
FLOAT = 32
#: An empty ``tuple``; each element adds a `POINTER`.
TUPLE_HEADER = 40
#: A key in an ``OrderedDict``-based cache: the cache's per-item record (64), the ordered
#: dict's link node (32) and its share of the hash table and node index, which grow by
#: doubling (about 64 on average). ``tests/cache/test_sizing.py`` checks it with tracemalloc.
CACHE_ENTRY = 160

#: pymalloc's largest small request, its size classes, and glibc malloc's chunk header.
_SMALL_REQUEST = 512
_ALIGNMENT = 16
_MALLOC_HEADER = 8
#: CPython keeps one shared object for each of these integers.
_SMALL_INTS = range(-5, 257)


def block(size: int) -> int:
    """Bytes the allocator really uses for a request of ``size`` bytes."""
    if size <= _SMALL_REQUEST:
        return -(-size // _ALIGNMENT) * _ALIGNMENT
    return -(-(size + _MALLOC_HEADER) // _ALIGNMENT) * _ALIGNMENT


def text_size(text: str) -> int:
    """Bytes of a ``str`` object of its own."""
    return block(sys.getsizeof(text))


def optional_text_size(text: str | None) -> int:
    """`text_size`, or 0 for ``None`` (a shared singleton costs nothing extra)."""
    return 0 if text is None else text_size(text)


def vocabulary_size(text: str | None) -> int:
    """Bytes of a value from a small vocabulary (a role, a status, a model or owner name).

    0 for the interned copy, which every record built from a literal or from the same
    settings shares; a copy of its own (one per database row) in full. Interning only ever
    adds the few distinct values of these fields to the interpreter's table.
    """
    if text is None:
        return 0
    if type(text) is str and sys.intern(text) is text:
        return 0
    return text_size(text)


def int_size(value: int) -> int:
    """Bytes of an ``int``: 0 for the shared small ones."""
    return 0 if value in _SMALL_INTS else block(sys.getsizeof(value))


@functools.cache
def record_size(cls: type) -> int:
    """Bytes of an instance of a ``__slots__`` class (such as a slots dataclass)."""
    return block(RECORD_HEADER + POINTER * _slot_count(cls))


def tuple_size(length: int) -> int:
    """Bytes of a tuple of ``length`` items (the empty tuple is shared)."""
    return 0 if length == 0 else block(TUPLE_HEADER + POINTER * length)


def json_size(value: Any) -> int:
    """Deep size of a JSON-like value (dicts, lists, strings, numbers, booleans, None).

    Walks iteratively, so deeply nested input cannot exhaust the stack. Anything that is
    not JSON-like is counted shallowly with ``sys.getsizeof``.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, bool):
            continue  # singletons, shared by everyone
        if isinstance(item, str):
            total += text_size(item)
        elif isinstance(item, int):
            total += int_size(item)
        elif isinstance(item, float):
            total += FLOAT
        elif isinstance(item, dict):
            total += block(sys.getsizeof(item))
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            # The empty tuple is a singleton; an empty list is an object of its own.
            total += 0 if item == () else block(sys.getsizeof(item))
            stack.extend(item)
        else:
            total += block(sys.getsizeof(item))
    return total


def conversation_size(conversation: Conversation) -> int:
    """Estimated bytes of one `Conversation` record and everything it refers to."""
    c = conversation
    return (
        record_size(Conversation)
        + text_size(c.id)
        + vocabulary_size(c.owner_id)
        + optional_text_size(c.title)
        + vocabulary_size(c.model)
        + optional_text_size(c.system_prompt)
        + json_size(c.metadata)
        + vocabulary_size(c.status)
        + _floats(c.created_at, c.updated_at, c.last_activity)
        + int_size(c.message_count)
        + int_size(c.summary_through_seq)
        + _usage_size(c.usage)
        + optional_text_size(c.open_reply_to)
        + optional_text_size(c.summary)
    )


def message_size(message: Message) -> int:
    """Estimated bytes of one `Message` record and everything it refers to (cached on it)."""
    m = message
    if m.cached_size >= 0:
        return m.cached_size
    size = (
        record_size(Message)
        + text_size(m.id)
        + text_size(m.conversation_id)
        + int_size(m.seq)
        + vocabulary_size(m.role)
        + text_size(m.content)
        + vocabulary_size(m.status)
        + FLOAT  # created_at
        + optional_text_size(m.client_message_id)
        + optional_text_size(m.reply_to)
        + optional_text_size(m.reason)
        + _usage_size(m.usage)
        # The derived token count, once computed (about a token per four characters).
        + int_size(m.cached_tokens if m.cached_tokens >= 0 else len(m.content) // 4)
    )
    # The cached size is itself an int object the message holds.
    m.cached_size = size + int_size(size)
    return m.cached_size


def _floats(*values: float) -> int:
    """Floats held by one record, each distinct object once (copied times share one)."""
    return FLOAT * len({id(v) for v in values})


def _usage_size(usage: Usage | None) -> int:
    if usage is None:
        return 0
    return record_size(Usage) + int_size(usage.prompt_tokens) + int_size(usage.completion_tokens)


def _slot_count(cls: type) -> int:
    count = 0
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        count += 1 if isinstance(slots, str) else len(slots)
    return count
