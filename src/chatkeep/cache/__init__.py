"""Byte-bounded caches.

`ByteLRU` is the building block: a mapping with ``maxsize``, ``currsize`` and
``getsizeof``, least recently used out first. `WorkingSet` keeps recently used
conversations for the send path on top of it. The sizes caches count
come from the estimates in `chatkeep.cache.sizing`.
"""

from chatkeep.cache.byte_lru import ByteLRU
from chatkeep.cache.sizing import (
    conversation_size,
    json_size,
    message_size,
    record_size,
    text_size,
)
from chatkeep.cache.working_set import (
    DEFAULT_RECENT_MESSAGES,
    DEFAULT_WORKING_SET_BYTES,
    WorkingEntry,
    WorkingSet,
    entry_size,
)

__all__ = [
    "DEFAULT_RECENT_MESSAGES",
    "DEFAULT_WORKING_SET_BYTES",
    "ByteLRU",
    "WorkingEntry",
    "WorkingSet",
    "conversation_size",
    "entry_size",
    "json_size",
    "message_size",
    "record_size",
    "text_size",
]
