"""The working set: recently used conversations, kept for the send path, bounded in bytes.

An entry holds a conversation's record and its most recent messages (never more than
``max_recent_messages``, and optionally never more than ``max_recent_tokens``), which is
all a context window needs. Entries live in a `ByteLRU`, so the whole set stays within
``maxsize`` bytes however many conversations the store holds.

Storage is write-through: every message is committed before the working set hears of it,
so evicting an entry never loses anything, and a miss simply reloads from the store.
After a commit the send path calls `WorkingSet.record_messages` so the cached entry
follows the store without another read.

Rules the cache keeps:

* An entry is only cached when it agrees with its record: the newest message's ``seq`` is
  the conversation's ``message_count``. A load that raced a commit, or an update that
  skipped a message, is served once but not cached, so a stale entry never lingers.
* Concurrent misses for one conversation share one load (single flight). The table of
  loads in flight is bounded; past the bound a miss loads on its own and is not cached.
* An entry of one owner is never returned to another; the store answers the other owner
  exactly as it would without the cache (`NotFound`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from chatkeep.cache.byte_lru import ByteLRU
from chatkeep.cache.sizing import (
    CACHE_ENTRY,
    conversation_size,
    message_size,
    record_size,
    text_size,
    tuple_size,
)
from chatkeep.domain.records import Conversation, Message
from chatkeep.domain.tokens import (
    MESSAGE_OVERHEAD_TOKENS,
    TokenEstimator,
    content_tokens,
    estimate_tokens,
)
from chatkeep.storage.base import Store

#: ``CHATKEEP_WORKING_SET_BYTES`` when unset.
DEFAULT_WORKING_SET_BYTES = 64 * 1024 * 1024
#: ``CHATKEEP_WORKING_SET_RECENT_MESSAGES`` when unset: one store page of context.
DEFAULT_RECENT_MESSAGES = 64
#: Loads in flight that concurrent misses can join.
DEFAULT_MAX_PENDING_LOADS = 1024


@dataclass(frozen=True, slots=True)
class WorkingEntry:
    """A cached conversation: its record and its most recent messages, newest last.

    Entries are shared by every reader; treat them, and the records in them, as read-only.
    """

    conversation: Conversation
    messages: tuple[Message, ...]

    @property
    def has_older(self) -> bool:
        """True when the store holds messages older than the first one here."""
        first = self.messages[0].seq if self.messages else self.conversation.message_count + 1
        return first > 1

    @property
    def last_seq(self) -> int:
        """``seq`` of the newest message here (0 when there is none)."""
        return self.messages[-1].seq if self.messages else 0


def entry_size(entry: WorkingEntry) -> int:
    """Estimated bytes of ``entry`` in the cache, bookkeeping included.

    The cache key is the conversation record's own id string, so it is counted once, with
    the record, and so is a message's ``conversation_id`` when it is that same string (the
    send path shares it; a load from the store gives each row a copy of its own). The rules
    behind each part are in `chatkeep.cache.sizing`.
    """
    conversation = entry.conversation
    shared_ids = sum(
        text_size(m.conversation_id) for m in entry.messages if m.conversation_id is conversation.id
    )
    return (
        CACHE_ENTRY
        + record_size(WorkingEntry)
        + tuple_size(len(entry.messages))
        + conversation_size(conversation)
        + sum(message_size(message) for message in entry.messages)
        - shared_ids
    )


@dataclass(slots=True)
class _Load:
    """One load in flight. ``stale`` is set when the conversation changed meanwhile."""

    owner_id: str
    stale: bool = False
    task: asyncio.Task[WorkingEntry] | None = field(default=None, repr=False)


class WorkingSet:
    """Recently used conversations for the send path, bounded in bytes overall."""

    def __init__(
        self,
        store: Store,
        *,
        maxsize: int = DEFAULT_WORKING_SET_BYTES,
        max_recent_messages: int = DEFAULT_RECENT_MESSAGES,
        max_recent_tokens: int | None = None,
        estimate: TokenEstimator = estimate_tokens,
        ttl: float | None = None,
        timer: Callable[[], float] = time.monotonic,
        max_pending_loads: int = DEFAULT_MAX_PENDING_LOADS,
        name: str = "working_set",
    ) -> None:
        if max_recent_messages < 1:
            raise ValueError("max_recent_messages must be at least 1")
        if max_recent_tokens is not None and max_recent_tokens < 1:
            raise ValueError("max_recent_tokens must be at least 1 (or None for no cap)")
        if max_pending_loads < 0:
            raise ValueError("max_pending_loads must not be negative")
        self.store = store
        self.max_recent_messages = max_recent_messages
        self.max_recent_tokens = max_recent_tokens
        self.max_pending_loads = max_pending_loads
        self._estimate = estimate
        self._cache: ByteLRU[str, WorkingEntry] = ByteLRU(
            maxsize, getsizeof=entry_size, ttl=ttl, timer=timer, name=name
        )
        self._loads: dict[str, _Load] = {}
        #: Store reads made on misses; misses that joined a load already running.
        self.loads = 0
        self.shared_loads = 0
        #: Loads served but not cached (raced a change, or no single-flight slot was free).
        self.uncached_loads = 0
        #: Entries bigger than the whole working set, served but never cached.
        self.too_large = 0

    # -- bound and Reclaimable ------------------------------------------------------

    @property
    def name(self) -> str:
        """The name the memory governor and ``/admin`` know this cache by."""
        return self._cache.name

    @property
    def maxsize(self) -> int:
        """The bound in bytes."""
        return self._cache.maxsize

    @property
    def currsize(self) -> int:
        """Estimated bytes held now."""
        return self._cache.currsize

    def getsizeof(self, entry: WorkingEntry) -> int:
        """How many bytes ``entry`` counts for (see `entry_size`)."""
        return entry_size(entry)

    def __len__(self) -> int:
        return len(self._cache)

    def nbytes(self) -> int:
        """Bytes held now (the memory governor's measure)."""
        return self._cache.nbytes()

    def reclaim(self, fraction: float) -> int:
        """Drop expired entries, then least recently used ones, until ``fraction`` is freed."""
        return self._cache.reclaim(fraction)

    def stats(self) -> dict[str, int]:
        """Sizes and counters for ``/admin`` and ``/metrics``."""
        return {
            **self._cache.stats(),
            "max_recent_messages": self.max_recent_messages,
            "loads": self.loads,
            "shared_loads": self.shared_loads,
            "pending_loads": len(self._loads),
            "uncached_loads": self.uncached_loads,
            "too_large": self.too_large,
        }

    # -- reading ---------------------------------------------------------------------

    def peek(self, conversation_id: str) -> WorkingEntry | None:
        """The cached entry, if any, without touching recency, counters or the store."""
        return self._cache.peek(conversation_id)

    async def get(self, owner_id: str, conversation_id: str) -> WorkingEntry:
        """The entry for the conversation, loading it from the store on a miss.

        Raises whatever the store raises (`NotFound` for a conversation that does not
        exist or belongs to another owner).
        """
        cached = self._cache.get(conversation_id)
        if cached is not None and cached.conversation.owner_id == owner_id:
            return cached
        pending = self._loads.get(conversation_id)
        if pending is not None and pending.owner_id == owner_id and pending.task is not None:
            self.shared_loads += 1
            # Shielded: one waiter giving up must not cancel the load the others wait for.
            return await asyncio.shield(pending.task)
        if pending is not None or len(self._loads) >= self.max_pending_loads:
            # No slot to share: serve this miss, but leave the cache to tracked loads,
            # since only those learn when the conversation changes under them.
            return await self._fetch(owner_id, conversation_id, None)
        load = _Load(owner_id)
        task = asyncio.create_task(
            self._fetch(owner_id, conversation_id, load),
            name=f"working-set-load-{conversation_id}",
        )
        load.task = task
        self._loads[conversation_id] = load
        task.add_done_callback(partial(self._load_done, conversation_id, load))
        return await asyncio.shield(task)

    async def _fetch(self, owner_id: str, conversation_id: str, load: _Load | None) -> WorkingEntry:
        self.loads += 1
        conversation = await self.store.get_conversation(owner_id, conversation_id)
        newest_first = await self.store.recent_messages(
            owner_id, conversation_id, limit=self.max_recent_messages
        )
        entry = WorkingEntry(conversation, self._trim(newest_first[::-1]))
        # The two reads are not one transaction: a commit in between shows up as a record
        # and messages that disagree, and such an entry is served but not kept.
        if load is None or load.stale or not _consistent(entry):
            self.uncached_loads += 1
        else:
            self._put(entry)
        return entry

    def _load_done(
        self, conversation_id: str, load: _Load, task: asyncio.Task[WorkingEntry]
    ) -> None:
        if self._loads.get(conversation_id) is load:
            del self._loads[conversation_id]
        if not task.cancelled():
            # Every waiter may have given up; fetching the exception here keeps asyncio
            # from reporting it as never retrieved.
            task.exception()

    # -- writing ---------------------------------------------------------------------

    def record_messages(
        self,
        owner_id: str,
        conversation_id: str,
        conversation: Conversation,
        *messages: Message,
    ) -> None:
        """Follow a commit: replace the record, append ``messages`` and trim.

        Call it after the store call returned, with the conversation record as it is
        now. Messages already cached are ignored, so recording twice is harmless. When
        the cached messages and the new ones do not line up with the record (a message
        in between was never recorded), the entry is dropped and the next `get` reloads.
        With nothing cached, an entry is created only when ``messages`` are the whole
        recent window (a new conversation, or at least ``max_recent_messages``).
        """
        if conversation.id != conversation_id or conversation.owner_id != owner_id:
            raise ValueError("the conversation record does not match owner_id/conversation_id")
        if any(m.conversation_id != conversation_id for m in messages):
            raise ValueError("a message belongs to another conversation")
        self._mark_stale(conversation_id)
        cached = self._cache.peek(conversation_id)
        if cached is not None and cached.conversation.owner_id != owner_id:
            self._cache.pop(conversation_id, None)
            cached = None
        known = cached.messages if cached is not None else ()
        last = known[-1].seq if known else 0
        new = sorted((m for m in messages if m.seq > last), key=lambda m: m.seq)
        if cached is None and not (
            new and (new[0].seq == 1 or len(new) >= self.max_recent_messages)
        ):
            return
        # Once something is cached the new messages must follow it directly; an empty
        # cached entry means the conversation had none, so they must start at 1.
        first = last + 1 if cached is not None else new[0].seq
        entry = WorkingEntry(conversation, self._trim((*known, *new)))
        if _contiguous(first, new) and _consistent(entry):
            self._put(entry)
        else:
            self._cache.pop(conversation_id, None)

    def invalidate(self, conversation_id: str) -> None:
        """Forget the conversation (after a rename, archive or delete); loads in flight
        for it are served but not cached."""
        self._mark_stale(conversation_id)
        self._cache.pop(conversation_id, None)

    def clear(self) -> None:
        """Forget every conversation."""
        for load in self._loads.values():
            load.stale = True
        self._cache.clear()

    async def close(self) -> None:
        """Cancel loads in flight and forget everything. Safe to call twice."""
        tasks = [load.task for load in self._loads.values() if load.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.clear()

    # -- internals -------------------------------------------------------------------

    def _put(self, entry: WorkingEntry) -> None:
        try:
            self._cache[entry.conversation.id] = entry
        except ValueError:
            # Bigger than the whole working set: the send path reads it from the store.
            self.too_large += 1

    def _mark_stale(self, conversation_id: str) -> None:
        load = self._loads.get(conversation_id)
        if load is not None:
            load.stale = True

    def _trim(self, oldest_first: Sequence[Message]) -> tuple[Message, ...]:
        """The newest messages within the message cap and, if set, the token cap.

        The newest message is always kept, even alone over the token cap, so an entry
        always shows the latest turn.
        """
        window = oldest_first[-self.max_recent_messages :]
        if self.max_recent_tokens is None:
            return tuple(window)
        kept = tokens = 0
        for message in reversed(window):
            cost = content_tokens(message, self._estimate) + MESSAGE_OVERHEAD_TOKENS
            if kept and tokens + cost > self.max_recent_tokens:
                break
            tokens += cost
            kept += 1
        return tuple(window[len(window) - kept :])


def _consistent(entry: WorkingEntry) -> bool:
    """The record and the messages describe the same moment of the conversation."""
    return entry.last_seq == entry.conversation.message_count


def _contiguous(first: int, new: Sequence[Message]) -> bool:
    """``new`` holds ``seq`` ``first``, ``first + 1``, … with no gap."""
    expected = first
    for message in new:
        if message.seq != expected:
            return False
        expected += 1
    return True
