"""Log lines are bounded in size, and repeated failures in number."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from chatkeep.logs import (
    MAX_EXCEPTION_CHARS,
    MAX_FIELD_CHARS,
    ContentTruncatingFilter,
    JsonFormatter,
    RepeatLimitFilter,
    configure_logging,
    truncate,
)
from chatkeep.settings import Settings

LOGGER = "chatkeep.tests.logs"
_TOUCHED = ("", "uvicorn.access", "httpx", "aiosqlite", LOGGER)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put back the handlers and levels a test changed, so tests cannot leak into each other."""
    saved = {
        name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
        for name in _TOUCHED
    }
    yield
    for name, (level, handlers) in saved.items():
        log = logging.getLogger(name)
        for handler in log.handlers:
            if handler not in handlers:
                log.removeHandler(handler)
                handler.close()
        log.setLevel(level)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def configured(
    clock: FakeClock, log_format: str = "json", **overrides: Any
) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    settings = Settings(storage="memory", log_format=log_format, **overrides)
    configure_logging(settings.logging, stream=stream, clock=clock)
    return logging.getLogger(LOGGER), stream


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def warning_record(msg: str, *args: object, name: str = LOGGER) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


# truncate


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("", 0, ""),
        ("", 5, ""),
        ("abc", 3, "abc"),
        ("abc", 10, "abc"),
        ("abcdef", 2, "ab…[+4 chars]"),
        ("abcdef", 0, "…[+6 chars]"),
        ("héllo wörld", 5, "héllo…[+6 chars]"),
    ],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected


def test_truncate_rejects_a_negative_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        truncate("abc", -1)


# ContentTruncatingFilter


def test_content_filter_cuts_content_and_text_extras_only() -> None:
    extras = {"content": "x" * 50, "text": "y" * 50, "model": "m" * 50}
    record = logging.makeLogRecord({"msg": "reply failed", **extras})
    assert ContentTruncatingFilter(10).filter(record)
    assert vars(record)["content"] == "x" * 10 + "…[+40 chars]"
    assert vars(record)["text"] == "y" * 10 + "…[+40 chars]"
    assert vars(record)["model"] == "m" * 50


def test_content_filter_cuts_named_args_and_leaves_positional_args() -> None:
    named = logging.LogRecord(
        LOGGER, logging.INFO, __file__, 1, "%(content)s", ({"content": "z" * 30, "n": 1},), None
    )
    ContentTruncatingFilter(4).filter(named)
    assert named.getMessage() == "zzzz…[+26 chars]"
    positional = warning_record("%s", "z" * 30)
    ContentTruncatingFilter(4).filter(positional)
    assert positional.getMessage() == "z" * 30


# configure_logging and the formatters


def test_json_lines_parse_and_carry_extras(clock: FakeClock) -> None:
    log, stream = configured(clock)

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    log.info(
        "reply %s\ncommitted",
        "r1",
        extra={
            "conversation_id": "c1",
            "tokens": 12,
            "ratio": 0.5,
            "tags": ["a", "b"],
            "obj": Opaque(),
            "huge": "h" * 5000,
            "level": "not-a-level",
        },
    )
    (line,) = json_lines(stream)
    assert line["message"] == "reply r1\ncommitted"
    assert line["logger"] == LOGGER
    assert line["level"] == "INFO"  # an extra never replaces a core field
    assert line["time"].endswith("Z")
    assert datetime.fromisoformat(line["time"]).utcoffset() is not None
    assert line["conversation_id"] == "c1"
    assert line["tokens"] == 12
    assert line["ratio"] == 0.5
    assert line["tags"] == ["a", "b"]
    assert line["obj"] == "<opaque>"
    assert line["huge"] == truncate("h" * 5000, MAX_FIELD_CHARS)


def test_exception_is_one_bounded_field(clock: FakeClock) -> None:
    log, stream = configured(clock)
    try:
        raise RuntimeError("boom " + "q" * 20_000)
    except RuntimeError:
        log.exception("reply generation failed")
    (line,) = json_lines(stream)
    assert line["level"] == "ERROR"
    assert isinstance(line["exception"], str)
    assert len(line["exception"]) < MAX_EXCEPTION_CHARS + 50
    # The end of a traceback says what went wrong, so that is the part kept.
    assert line["exception"].endswith("q" * 100)
    assert line["exception"].startswith("[+")


def test_json_output_without_filters_is_one_object_per_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger(LOGGER)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.info("a\nb", extra={"nested": {"k": [1, 2]}})
    log.warning("c")
    assert [line["message"] for line in json_lines(stream)] == ["a\nb", "c"]


def test_text_format_is_a_plain_line(clock: FakeClock) -> None:
    log, stream = configured(clock, log_format="text")
    log.warning("backend down: %s", "timeout", extra={"conversation_id": "c1", "note": "a b"})
    (line,) = stream.getvalue().splitlines()
    assert "WARNING chatkeep.tests.logs backend down: timeout" in line
    assert "conversation_id=c1" in line
    assert "note='a b'" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_configure_is_idempotent_and_leaves_other_handlers(clock: FakeClock) -> None:
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    before = len(logging.getLogger().handlers)
    configured(clock)
    log, stream = configured(clock)
    assert len(logging.getLogger().handlers) == before + 1
    assert other in logging.getLogger().handlers
    log.warning("once")
    assert len(stream.getvalue().splitlines()) == 1


def test_levels_and_noisy_libraries(clock: FakeClock) -> None:
    configured(clock, log_level="info")
    assert logging.getLogger().level == logging.INFO
    assert logging.getLogger("uvicorn.access").level == logging.WARNING
    assert logging.getLogger("httpx").level == logging.WARNING
    configured(clock, log_level="DEBUG")
    assert logging.getLogger("uvicorn.access").level == logging.INFO
    assert logging.getLogger("aiosqlite").level == logging.WARNING


def test_unknown_level_is_a_clear_error(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configured(clock, log_level="LOUD")


# RepeatLimitFilter


def passes(limiter: RepeatLimitFilter, record: logging.LogRecord) -> bool:
    return bool(limiter.filter(record))


def test_repeats_pass_limit_times_per_window(clock: FakeClock) -> None:
    limiter = RepeatLimitFilter(60, 3, clock)
    assert [passes(limiter, warning_record("down: %s", "500")) for _ in range(10)] == [True] * 3 + [
        False
    ] * 7
    clock.advance(59.9)
    assert not passes(limiter, warning_record("down: %s", "500"))


def test_suppressed_count_rides_on_the_next_record_after_rollover(clock: FakeClock) -> None:
    limiter = RepeatLimitFilter(60, 2, clock)
    for _ in range(10):
        limiter.filter(warning_record("down"))
    clock.advance(60)
    first = warning_record("down")
    assert passes(limiter, first)
    assert vars(first)["suppressed"] == 8
    second = warning_record("down")
    assert passes(limiter, second)
    assert not hasattr(second, "suppressed")


def test_suppressed_count_reaches_the_output(clock: FakeClock) -> None:
    log, stream = configured(clock, log_repeat_limit=1)
    for _ in range(4):
        log.error("backend answered %d", 500)
    clock.advance(61)
    log.error("backend answered %d", 500)
    lines = json_lines(stream)
    assert len(lines) == 2
    assert lines[1]["message"] == "backend answered 500 (3 similar messages suppressed)"
    assert lines[1]["suppressed"] == 3


def test_different_messages_are_not_merged(clock: FakeClock) -> None:
    limiter = RepeatLimitFilter(60, 1, clock)
    assert passes(limiter, warning_record("down: %s", "500"))
    assert passes(limiter, warning_record("down: %s", "503"))
    assert passes(limiter, warning_record("down: %s", "500", name="chatkeep.other"))
    error = warning_record("down: %s", "500")
    error.levelno, error.levelname = logging.ERROR, "ERROR"
    assert passes(limiter, error)
    assert not passes(limiter, warning_record("down: %s", "500"))


def test_exceptions_of_different_types_or_texts_are_not_merged(clock: FakeClock) -> None:
    limiter = RepeatLimitFilter(60, 1, clock)

    def failed(exc: Exception) -> logging.LogRecord:
        record = warning_record("reply failed")
        record.exc_info = (type(exc), exc, None)
        return record

    assert passes(limiter, failed(ValueError("x")))
    assert passes(limiter, failed(KeyError("x")))
    assert passes(limiter, failed(ValueError("y")))
    assert not passes(limiter, failed(ValueError("x")))


def test_info_and_debug_pass_untouched(clock: FakeClock) -> None:
    limiter = RepeatLimitFilter(60, 1, clock)
    for level in (logging.DEBUG, logging.INFO):
        records = [logging.LogRecord(LOGGER, level, __file__, 1, "tick", (), None)] * 50
        assert all(passes(limiter, record) for record in records)
    assert len(limiter) == 0


def test_key_table_is_bounded(clock: FakeClock) -> None:
    limiter = RepeatLimitFilter(60, 1, clock, max_keys=16, template_limit=10_000)
    for i in range(1000):
        assert passes(limiter, warning_record("failure %d", i))
        assert len(limiter) <= 16
    # The oldest keys were evicted, so their repeat counts start again.
    assert passes(limiter, warning_record("failure %d", 0))
    assert not passes(limiter, warning_record("failure %d", 999))


def test_one_template_with_varying_args_is_capped(clock: FakeClock) -> None:
    limiter = RepeatLimitFilter(60, 5, clock)
    passed = sum(
        passes(limiter, warning_record("commit failed for %s", f"c{i}")) for i in range(1000)
    )
    assert passed == limiter.template_limit == 50
    clock.advance(60)
    record = warning_record("commit failed for %s", "c-new")
    assert passes(limiter, record)
    assert vars(record)["suppressed"] == 950


def test_a_bad_format_call_does_not_raise_from_the_filter(clock: FakeClock) -> None:
    limiter = RepeatLimitFilter(60, 1, clock)
    assert passes(limiter, warning_record("%d items", "many"))
    assert not passes(limiter, warning_record("%d items", "many"))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError):
        RepeatLimitFilter(0, 1)
    with pytest.raises(ValueError):
        RepeatLimitFilter(60, 0)


# Volume: the promise this module exists for


CONTENT = "lorem ipsum " * 171  # about 2 KB of user text per request


def test_ten_thousand_identical_failures_stay_under_20_kb(clock: FakeClock) -> None:
    log, stream = configured(clock)
    for _ in range(10_000):
        log.warning(
            "reply failed: %s (content %s)",
            "backend answered 500",
            truncate(CONTENT, 200),
            extra={"content": CONTENT},  # cut by the handler's content filter
        )
        clock.advance(0.001)
    clock.advance(60)
    log.warning("reply failed: %s (content %s)", "backend answered 500", truncate(CONTENT, 200))

    written = len(stream.getvalue().encode())
    lines = json_lines(stream)
    assert written < 20_000
    assert len(lines) == 6
    assert lines[-1]["suppressed"] == 9995
    assert all(len(line["content"]) < 250 for line in lines[:5])

    unfiltered = io.StringIO()
    handler = logging.StreamHandler(unfiltered)
    handler.setFormatter(JsonFormatter())
    for _ in range(10_000):
        record = warning_record("reply failed: %s (content %s)", "backend answered 500", CONTENT)
        handler.handle(record)
    assert len(unfiltered.getvalue().encode()) > 20_000_000 > 1000 * written


def test_distinct_failures_in_a_flood_are_all_logged(clock: FakeClock) -> None:
    log, stream = configured(clock)
    backends = [f"backend-{i}" for i in range(40)]
    for i in range(10_000):
        log.warning("reply failed: %s", "backend answered 500")
        # 40 distinct failures: under the per-template ceiling of 10 * log_repeat_limit.
        if i % 250 == 0:
            log.error("%s unreachable", backends[i // 250])
        clock.advance(0.001)
    messages = [line["message"] for line in json_lines(stream)]
    assert [m for m in messages if m.endswith("unreachable")] == [
        f"{b} unreachable" for b in backends
    ]
    assert messages.count("reply failed: backend answered 500") == 5
