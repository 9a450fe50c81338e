"""Logging whose volume is bounded by construction.

Three bounds, each enforced in one place:

* **Per line.** Message content is cut with :func:`truncate` wherever it enters a log line
  (``log_content_chars``); :class:`ContentTruncatingFilter` does the same for ``content`` and
  ``text`` fields passed as ``extra=``, and the formatters cap the message, every extra field
  and the traceback, so no single call can write megabytes.
* **Per failure.** :class:`RepeatLimitFilter` lets an identical warning or error through at
  most ``log_repeat_limit`` times per ``log_repeat_window_seconds`` and reports how many it
  dropped, so 10 000 failing requests cost a handful of lines, not 10 000.
* **Per filter.** The filter's key table holds at most ``max_keys`` entries of fixed size.

Convention for callers: the message says *what* happened and stays the same for the same
failure; values that differ per request (conversation ids, request ids) go into ``extra=``,
which is logged but not part of the repeat key.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import orjson

if TYPE_CHECKING:
    from chatkeep.settings import LogSettings

__all__ = [
    "CONTENT_FIELDS",
    "MAX_EXCEPTION_CHARS",
    "MAX_FIELD_CHARS",
    "MAX_MESSAGE_CHARS",
    "ContentTruncatingFilter",
    "JsonFormatter",
    "RepeatLimitFilter",
    "TextFormatter",
    "configure_logging",
    "truncate",
]

# Backstops for what call sites did not bound themselves. Generous enough for any message the
# server writes on purpose, small enough that one line can never be a flood by itself.
MAX_MESSAGE_CHARS = 4000
MAX_FIELD_CHARS = 1000
MAX_EXCEPTION_CHARS = 4000

CONTENT_FIELDS = frozenset({"content", "text"})

# DEBUG from these is per-request or per-operation chatter; it drowns our own records.
_NOISY_LOGGERS = ("aiosqlite", "asyncio", "hpack", "httpcore", "httpx", "matplotlib", "multipart")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
# uvicorn attaches an ANSI-coloured copy of each message; it is noise in a log file.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, saying how many were dropped.

    ``truncate("abcdef", 2) == "ab…[+4 chars]"``; ``limit=0`` leaves only the marker, so a
    line can say how long the content was without showing it. The marker is not counted in
    ``limit``; it is there so a reader never mistakes a cut text for a whole one.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[+{len(text) - limit} chars]"


def _keep_tail(text: str, limit: int) -> str:
    # For tracebacks the end (exception type and innermost frames) matters most.
    if len(text) <= limit:
        return text
    return f"[+{len(text) - limit} chars]…{text[len(text) - limit :]}"


class ContentTruncatingFilter(logging.Filter):
    """Cut ``content``/``text`` values given as ``extra=`` fields or as mapping ``args``.

    A safety net, not the main mechanism: positional ``%s`` args carry no name, so callers
    still wrap content in :func:`truncate`. This catches ``extra={"content": ...}``, the
    natural way to attach content and the easiest to forget to cut. Records are changed in
    place so every handler downstream sees the cut text.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        for name in CONTENT_FIELDS:
            value = record.__dict__.get(name)
            if isinstance(value, str):
                record.__dict__[name] = truncate(value, self.limit)
        if isinstance(record.args, Mapping) and CONTENT_FIELDS & record.args.keys():
            record.args = {
                key: truncate(value, self.limit)
                if key in CONTENT_FIELDS and isinstance(value, str)
                else value
                for key, value in record.args.items()
            }
        return True


class _Window:
    __slots__ = ("passed", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.passed = 0
        self.suppressed = 0


class RepeatLimitFilter(logging.Filter):
    """Let identical records through at most ``limit`` times per ``window_seconds``.

    **Key.** Two keys are checked per record, both digests of a fixed 16 bytes so a huge
    message costs no memory here:

    * *exact*: logger, level, message template, the formatted message and the exception's
      type and text. The formatted args are part of it because they usually say which failure
      this is (``"backend answered 500"`` vs ``"... 503"``); merging by template would hide a
      second, different failure behind the first.
    * *template*: logger, level, template and exception type, with the higher
      ``template_limit`` (default ``10 * limit``). This is the backstop for a message that
      embeds a per-request value: ``"commit failed for %s"`` with 10 000 different ids would
      otherwise pass 10 000 times, because every formatted message is new.

    A record passes when both keys have room. The first one through after others were
    dropped carries ``record.suppressed`` (the count); the formatters render it as
    ``(N similar messages suppressed)``. Drops under a key that never recurs, or is evicted,
    go unreported: that would need a timer, and a filter does no I/O of its own.

    **Levels.** Only ``min_level`` (WARNING) and above are limited: INFO and DEBUG are what an
    operator turns on to see everything; errors are what repeat per request when a backend is
    down.

    **Bound.** The key table is an LRU of at most ``max_keys`` entries; ``len(filter)`` is
    its current size. Thread-safe: handlers run filters outside their own lock.
    """

    def __init__(
        self,
        window_seconds: float,
        limit: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
        *,
        template_limit: int | None = None,
        min_level: int = logging.WARNING,
    ) -> None:
        super().__init__()
        if window_seconds <= 0 or limit < 1 or max_keys < 2:
            raise ValueError("need window_seconds > 0, limit >= 1 and max_keys >= 2")
        self.window_seconds = window_seconds
        self.limit = limit
        self.template_limit = 10 * limit if template_limit is None else template_limit
        self.max_keys = max_keys
        self.min_level = min_level
        self._clock = clock
        self._windows: OrderedDict[bytes, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._windows)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        exact_key, template_key = self._keys(record)
        with self._lock:
            now = self._clock()
            exact = self._window(b"e" + exact_key, now)
            template = self._window(b"t" + template_key, now)
            if exact.passed >= self.limit:
                exact.suppressed += 1
                return False
            if template.passed >= self.template_limit:
                template.suppressed += 1
                return False
            exact.passed += 1
            template.passed += 1
            suppressed = exact.suppressed + template.suppressed
            exact.suppressed = template.suppressed = 0
        if suppressed:
            record.suppressed = suppressed
        return True

    @staticmethod
    def _keys(record: logging.LogRecord) -> tuple[bytes, bytes]:
        exc_type, exc = record.exc_info[:2] if record.exc_info else (None, None)
        head = f"{record.name}\0{record.levelno}\0{record.msg}\0{exc_type and exc_type.__name__}"
        template = hashlib.blake2b(head.encode(errors="replace"), digest_size=16)
        exact = template.copy()
        try:
            message = record.getMessage()
        except Exception:
            # A bad call site ("%d" given a str) must fail in the handler, which reports it,
            # not here, where the exception would reach the caller.
            message = repr((record.msg, record.args))
        exact.update(f"\0{message}\0{exc}".encode(errors="replace"))
        return exact.digest(), template.digest()

    def _window(self, key: bytes, now: float) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(now)
            while len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(key)
            if now - window.start >= self.window_seconds:
                # Keep the dropped count: the next record through reports it.
                window.start, window.passed = now, 0
        return window


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(record: logging.LogRecord) -> str:
    message = truncate(record.getMessage(), MAX_MESSAGE_CHARS)
    suppressed = getattr(record, "suppressed", 0)
    if suppressed:
        message += f" ({suppressed} similar messages suppressed)"
    return message


def _field(value: Any) -> Any:
    if isinstance(value, str):
        return truncate(value, MAX_FIELD_CHARS)
    if value is None or isinstance(value, bool | int | float):
        return value
    try:
        encoded = orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return truncate(repr(value), MAX_FIELD_CHARS)
    return value if len(encoded) <= MAX_FIELD_CHARS else truncate(encoded, MAX_FIELD_CHARS)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: _field(value)
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRS and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        for key, value in _extras(record).items():
            line.setdefault(key, value)  # an extra never overwrites a core field
        if record.exc_info:
            line["exception"] = _keep_tail(
                self.formatException(record.exc_info), MAX_EXCEPTION_CHARS
            )
        if record.stack_info:
            line["stack"] = _keep_tail(record.stack_info, MAX_EXCEPTION_CHARS)
        # orjson escapes newlines inside strings, so the object stays on one line.
        return orjson.dumps(line).decode()


def _text_value(value: Any) -> str:
    # Quote only what would be ambiguous in a space-separated line.
    if isinstance(value, str):
        return value if value and not any(c.isspace() for c in value) else repr(value)
    return orjson.dumps(value).decode()  # _field() left only JSON-able values


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...`` with the traceback, if any, below."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, _message(record)]
        parts += [
            f"{key}={_text_value(value)}"
            for key, value in _extras(record).items()
            if key != "suppressed"  # already in the message
        ]
        line = " ".join(parts)
        if record.exc_info:
            exception = self.formatException(record.exc_info)
            line += "\n" + _keep_tail(exception, MAX_EXCEPTION_CHARS)
        return line


class _RootHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`configure_logging` owns; its type is how a second call finds it."""


def _level(name: str) -> int:
    text = name.strip().upper()
    levels = logging.getLevelNamesMapping()
    if text not in levels:
        raise ValueError(f"unknown log level {name!r} (use DEBUG, INFO, WARNING or ERROR)")
    return levels[text]


def configure_logging(
    settings: LogSettings,
    *,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> logging.Handler:
    """Send all records to ``stream`` (stderr) through the content and repeat filters.

    Idempotent: a second call replaces the handler the first one installed, so settings can
    be re-applied. Handlers installed by others (test capture, for example) are left alone.
    Returns the installed handler.
    """
    level = _level(settings.level)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _RootHandler)]:
        root.removeHandler(handler)
        handler.close()

    handler = _RootHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    # Content is cut first so the repeat key sees what would be written.
    handler.addFilter(ContentTruncatingFilter(settings.content_chars))
    handler.addFilter(
        RepeatLimitFilter(settings.repeat_window_seconds, settings.repeat_limit, clock)
    )
    root.addHandler(handler)
    root.setLevel(level)

    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # One INFO line per request is exactly the volume this module exists to prevent.
    access_level = logging.INFO if level <= logging.DEBUG else logging.WARNING
    logging.getLogger("uvicorn.access").setLevel(access_level)
    return handler
