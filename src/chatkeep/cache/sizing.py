"""Estimates of how many bytes a value occupies, cheap enough to run on every insert.

``sys.getsizeof`` is shallow and a deep walk with ``gc.get_referents`` costs more than
the caching saves, so caches measure their values with these estimates instead: the
text a value holds plus a fixed, documented overhead per Python object. The constants
are what 64-bit CPython 3.11 reports through ``sys.getsizeof``; tests compare the
estimates with a deep ``sys.getsizeof`` walk and with ``tracemalloc`` and require them
to agree within a factor of two.

Text is counted as its UTF-8 length. For ASCII (the common case, and an O(1) check) that
is exactly what CPython stores; for other text CPython stores 1, 2 or 4 bytes a
character where UTF-8 needs 2 to 4, so the count stays within a factor of two.

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
#: Header of a compact ``str`` (ASCII); other strings have a slightly larger one.
STR_HEADER = 49
#: ``float`` and small ``int`` objects.
NUMBER = 28
#: An empty ``list``; each element adds a `POINTER`.
LIST_HEADER = 56
#: An empty ``tuple``; each element adds a `POINTER`.
TUPLE_HEADER = 40
#: An empty ``dict``, and what each entry adds to its tables (hash, key and value slots
#: with the spare room a dict keeps).
DICT_HEADER = 64
DICT_ENTRY = 32
#: A key in an ``OrderedDict``-based cache: its table slot, its link node and the
#: cache's own per-item record.
CACHE_ENTRY = 160


def text_size(text: str) -> int:
    """Bytes of a ``str``: header plus its UTF-8 length."""
    if text.isascii():
        return STR_HEADER + len(text)
    return STR_HEADER + len(text.encode("utf-8", "surrogatepass"))


def optional_text_size(text: str | None) -> int:
    """`text_size`, or 0 for ``None`` (a shared singleton costs nothing extra)."""
    return 0 if text is None else text_size(text)


@functools.cache
def record_size(cls: type) -> int:
    """The shallow size of an instance of a ``__slots__`` class (such as a slots dataclass)."""
    return RECORD_HEADER + POINTER * _slot_count(cls)


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
        elif isinstance(item, int | float):
            total += NUMBER
        elif isinstance(item, dict):
            total += DICT_HEADER + DICT_ENTRY * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            total += LIST_HEADER + POINTER * len(item)
            stack.extend(item)
        elif isinstance(item, tuple):
            total += TUPLE_HEADER + POINTER * len(item)
            stack.extend(item)
        else:
            total += sys.getsizeof(item)
    return total


def conversation_size(conversation: Conversation) -> int:
    """Estimated bytes of one `Conversation` record and everything it refers to."""
    c = conversation
    return (
        record_size(Conversation)
        + text_size(c.id)
        + text_size(c.owner_id)
        + optional_text_size(c.title)
        + text_size(c.model)
        + optional_text_size(c.system_prompt)
        + json_size(c.metadata)
        + text_size(c.status)
        + 5 * NUMBER  # created_at, updated_at, last_activity, message_count, summary seq
        + _usage_size(c.usage)
        + optional_text_size(c.open_reply_to)
        + optional_text_size(c.summary)
    )


def message_size(message: Message) -> int:
    """Estimated bytes of one `Message` record and everything it refers to (cached on it)."""
    m = message
    if m.cached_size >= 0:
        return m.cached_size
    m.cached_size = (
        record_size(Message)
        + text_size(m.id)
        + text_size(m.conversation_id)
        + text_size(m.role)
        + text_size(m.content)
        + text_size(m.status)
        + 2 * NUMBER  # seq, created_at
        + optional_text_size(m.client_message_id)
        + optional_text_size(m.reply_to)
        + optional_text_size(m.reason)
        + _usage_size(m.usage)
        + 2 * NUMBER  # the cached derived values themselves
    )
    return m.cached_size


def _usage_size(usage: Usage | None) -> int:
    return 0 if usage is None else record_size(Usage) + 2 * NUMBER


def _slot_count(cls: type) -> int:
    count = 0
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        count += 1 if isinstance(slots, str) else len(slots)
    return count
