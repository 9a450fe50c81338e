"""The export format: a lossless round trip in JSON and YAML, its schema, and what an import
refuses (and why), document by document and conversation by conversation."""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatkeep.domain.records import Conversation, Message, Usage
from chatkeep.errors import NotFound
from chatkeep.settings import LimitSettings
from chatkeep.storage.base import RECOVERED_REASON, Store
from chatkeep.storage.memory import MemoryStore
from chatkeep.transfer.documents import InvalidDocument, Kind, parse, read_head
from chatkeep.transfer.export import (
    EXPORT_PAGE,
    export_conversation,
    export_owner,
)
from chatkeep.transfer.format import (
    MAX_TIMESTAMP,
    conversation_entry,
    message_entry,
)
from chatkeep.transfer.importer import ALREADY_EXISTS, DUPLICATE, ImportReport, import_document

OWNER = "alice"
KINDS: list[Kind] = ["json", "yaml"]
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "export-format.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
LIMITS = LimitSettings()


# -- helpers -------------------------------------------------------------------------


async def _export(store: Store, kind: Kind, owner: str = OWNER) -> bytes:
    return b"".join([chunk async for chunk in export_owner(store, owner, kind, exported_at=1.5)])


async def _import(store: Store, document: Any, owner: str = OWNER) -> ImportReport:
    return await import_document(store, owner, document, LIMITS)


def _decode(data: bytes, kind: Kind) -> Any:
    return parse(data, kind, max_depth=64)


async def _everything(store: Store, owner: str = OWNER) -> dict[str, tuple[Any, list[Any]]]:
    """Every conversation of ``owner`` with its messages, field by stored field."""
    found = {}
    page = await store.list_conversations(owner, status=None, limit=1000, cursor=None)
    for conversation in page.items:
        messages = (await store.list_messages(owner, conversation.id, limit=10_000)).items
        found[conversation.id] = (_fields(conversation), [_fields(m) for m in messages])
    return found


def _fields(record: Conversation | Message) -> dict[str, Any]:
    # Every field the record compares by: all of them but caches derived on first use.
    return {f.name: getattr(record, f.name) for f in fields(record) if f.compare}


async def _varied_store() -> MemoryStore:
    """Conversations made the way the server makes them, plus one with odd values."""
    store = MemoryStore()
    plain = await store.create_conversation(
        OWNER,
        model="echo",
        title="Grüße, 你好, 🙂",
        system_prompt="answer in one line\nplease",
        metadata={"tags": ["a", "b"], "nested": {"n": -(2**63), "x": 0.1, "ok": True, "no": None}},
    )
    for n, (status, code) in enumerate([("complete", None), ("incomplete", "provider_timeout")]):
        start = await store.begin_reply(
            OWNER, plain.id, content=f"question {n} — ✓\n\ttabbed", client_message_id=f"cm-{n}"
        )
        await store.finish_reply(
            OWNER,
            plain.id,
            reply_to=start.user_message.id,
            content="partial answer" if code else "full answer",
            status=status,  # type: ignore[arg-type]
            reason="the backend did not answer in time" if code else None,
            reason_code=code,
            usage=Usage(11 + n, 7 + n),
        )
    await store.set_summary(OWNER, plain.id, summary="they asked twice", through_seq=2)
    archived = await store.create_conversation(OWNER, model="other-model")
    await store.update_conversation(OWNER, archived.id, status="archived")
    odd = Conversation(
        id="conv-imported_1",
        owner_id=OWNER,
        title=None,
        model="m",
        system_prompt=None,
        metadata={},
        status="active",
        created_at=0.0,
        updated_at=1700000000.123456789,
        last_activity=MAX_TIMESTAMP,
        message_count=1,
        usage=Usage(0, 2**62),
    )
    system = Message(
        id="m-1",
        conversation_id=odd.id,
        seq=1,
        role="system",
        content="--- not a document\n...\n# not a comment\n  key: value\n'quoted' \"too\"",
        status="complete",
        created_at=0.1 + 0.2,
    )
    assert await store.import_conversation(OWNER, odd, [system])
    return store


# -- round trip ----------------------------------------------------------------------


def test_every_stored_field_is_in_the_document() -> None:
    conversation = Conversation("c", OWNER, None, "m", None, {}, "active", 1.0, 1.0, 1.0)
    message = Message("m", "c", 1, "user", "hi", "complete", 1.0)
    # The owner is the importer's, an open reply is never imported, the conversation of a
    # message is the one it is listed in: everything else must be written.
    assert set(conversation_entry(conversation)) | {"owner_id", "open_reply_to"} == set(
        _fields(conversation)
    )
    assert set(message_entry(message)) | {"conversation_id"} == set(_fields(message))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_round_trip_keeps_every_field(kind: Kind) -> None:
    source = await _varied_store()
    data = await _export(source, kind)
    target = MemoryStore()
    report = await _import(target, _decode(data, kind))
    assert len(report.created) == 3 and not report.skipped and not report.rejected
    assert await _everything(target) == await _everything(source)


@pytest.mark.parametrize("kind", KINDS)
async def test_importing_the_same_document_twice_stores_nothing_twice(kind: Kind) -> None:
    source = await _varied_store()
    document = _decode(await _export(source, kind), kind)
    target = MemoryStore()
    first = await _import(target, document)
    second = await _import(target, document)
    assert second.created == [] and second.rejected == []
    assert [s.id for s in second.skipped] == first.created
    assert {s.reason for s in second.skipped} == {ALREADY_EXISTS}
    assert await _everything(target) == await _everything(source)


_texts = st.text(max_size=60)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=8,
)
_times = st.floats(min_value=0, max_value=MAX_TIMESTAMP)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    title=st.none() | _texts,
    contents=st.lists(_texts, min_size=1, max_size=3),
    metadata=st.dictionaries(_texts, _json_values, max_size=4),
    times=st.lists(_times, min_size=4, max_size=4),
    kind=st.sampled_from(KINDS),
)
def test_any_text_and_any_json_come_back_unchanged(
    title: str | None, contents: list[str], metadata: dict[str, Any], times: list[float], kind: Kind
) -> None:
    conversation = Conversation(
        "conv_h", OWNER, title, "m", title, metadata, "active", *times[:3], len(contents)
    )
    # Any text as a reason too: an incomplete message has one, a complete one none.
    messages = [
        Message(
            f"m{n}",
            "conv_h",
            n + 1,
            "assistant",
            text,
            "incomplete" if text else "complete",
            times[3],
            reason=text or None,
        )
        for n, text in enumerate(contents)
    ]

    async def round_trip() -> None:
        source, target = MemoryStore(), MemoryStore()
        assert await source.import_conversation(OWNER, conversation, messages)
        report = await _import(target, _decode(await _export(source, kind), kind))
        assert report.created == ["conv_h"], report.rejected
        assert await _everything(target) == await _everything(source)

    asyncio.run(round_trip())


# -- the schema ----------------------------------------------------------------------


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert jsonschema_rs.meta.is_valid(SCHEMA)


@pytest.mark.parametrize("kind", KINDS)
async def test_every_export_is_valid_by_the_schema(kind: Kind) -> None:
    document = _decode(await _export(await _varied_store(), kind), kind)
    validator = jsonschema_rs.Draft202012Validator(SCHEMA)
    assert [str(e) for e in validator.iter_errors(document)] == []
    assert not validator.is_valid({**document, "version": 2})
    broken = copy.deepcopy(document)
    broken["conversations"][0]["messages"] = [{"id": "x", "seq": "1"}]
    assert not validator.is_valid(broken)


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        ({"status": "incomplete", "reason": "cut", "reason_code": "stream_cut"}, True),
        ({"status": "incomplete", "reason": "stopped"}, True),
        ({"status": "incomplete"}, False),
        ({"status": "incomplete", "reason": None, "reason_code": "stream_cut"}, False),
        ({"status": "complete", "reason": None, "reason_code": None}, True),
        ({"status": "complete", "reason": "why"}, False),
        ({"status": "complete", "reason_code": "stream_cut"}, False),
    ],
)
async def test_the_schema_and_the_import_agree_on_reasons(
    changes: dict[str, Any], valid: bool
) -> None:
    document = _document(_with_message(1, **changes))
    assert jsonschema_rs.Draft202012Validator(SCHEMA).is_valid(document) is valid
    report = await _import(MemoryStore(), document)
    assert bool(report.created) is valid, report.rejected


async def test_the_documented_example_is_valid_and_imports() -> None:
    text = (SCHEMA_PATH.parent / "export-format.md").read_text()
    example = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    assert jsonschema_rs.Draft202012Validator(SCHEMA).is_valid(example)
    report = await _import(MemoryStore(), example)
    assert len(report.created) == 1, report.rejected


# -- what an export holds ------------------------------------------------------------


async def test_an_export_holds_the_conversation_as_read_and_pages_its_messages() -> None:
    store = MemoryStore()
    conversation = Conversation("conv_a", OWNER, None, "m", None, {}, "active", 1.0, 1.0, 1.0, 250)
    messages = [
        Message(f"m{seq}", "conv_a", seq, "user", "x" * 100, "complete", 1.0)
        for seq in range(1, 251)
    ]
    assert await store.import_conversation(OWNER, conversation, messages)
    reads: list[int] = []
    listing = store.list_messages

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs["limit"])
        return await listing(*args, **kwargs)

    store.list_messages = counted  # type: ignore[method-assign]
    # A record read before two more messages were committed: the export stops at its count.
    snapshot = replace(conversation, message_count=248)
    chunks = [c async for c in export_conversation(store, OWNER, snapshot, "json", exported_at=1.0)]
    document = orjson.loads(b"".join(chunks))
    (exported,) = document["conversations"]
    assert exported["message_count"] == 248
    assert [m["seq"] for m in exported["messages"]] == list(range(1, 249))
    assert max(reads) <= EXPORT_PAGE and sum(reads) == 248


async def test_a_conversation_deleted_before_its_turn_is_left_out() -> None:
    store = MemoryStore()
    for n in range(2):
        conversation = Conversation(f"c{n}", OWNER, None, "m", None, {}, "active", n, n, n, 1)
        message = Message(f"m{n}", f"c{n}", 1, "user", "hi", "complete", 1.0)
        assert await store.import_conversation(OWNER, conversation, [message])
    listing = store.list_messages

    async def deleting_c0(owner: str, cid: str, **kwargs: Any) -> Any:
        if cid == "c1":  # c1, the newest, comes first; c0 is listed but not read yet
            await store.delete_conversation(OWNER, "c0")
        return await listing(owner, cid, **kwargs)

    store.list_messages = deleting_c0  # type: ignore[method-assign]
    document = orjson.loads(await _export(store, "json"))
    assert [c["id"] for c in document["conversations"]] == ["c1"]


async def test_a_conversation_deleted_while_exported_ends_the_export() -> None:
    store = MemoryStore()
    conversation = Conversation("c", OWNER, None, "m", None, {}, "active", 1.0, 1.0, 1.0, 300)
    messages = [Message(f"m{s}", "c", s, "user", "y" * 500, "complete", 1.0) for s in range(1, 301)]
    assert await store.import_conversation(OWNER, conversation, messages)
    chunks = export_conversation(store, OWNER, conversation, "json", exported_at=1.0)
    await anext(chunks)  # a chunk is out: the first page was read
    await store.delete_conversation(OWNER, "c")
    with pytest.raises(NotFound):
        async for _ in chunks:
            pass


@pytest.mark.parametrize("kind", KINDS)
async def test_an_owner_without_conversations_exports_an_empty_list(kind: Kind) -> None:
    document = _decode(await _export(MemoryStore(), kind), kind)
    assert document == {
        "format": "chatkeep.export",
        "version": 1,
        "exported_at": 1.5,
        "conversations": [],
    }


# -- documents an import refuses whole -------------------------------------------------


@pytest.mark.parametrize(
    ("document", "said"),
    [
        ([], "not a chatkeep export"),
        ({"format": "other", "version": 1}, 'must be "chatkeep.export"'),
        ({"format": "chatkeep.export", "version": 2}, "newer chatkeep"),
        ({"format": "chatkeep.export", "version": True}, '"version" must be 1'),
        ({"format": "chatkeep.export", "version": "1"}, '"version" must be 1'),
        ({"format": "chatkeep.export", "version": 1, "exported_at": 1}, "conversations"),
        (
            {"format": "chatkeep.export", "version": 1, "exported_at": 1, "conversations": {}},
            "conversations",
        ),
        (
            {
                "format": "chatkeep.export",
                "version": 1,
                "exported_at": 1,
                "conversations": [],
                "extra": 1,
            },
            "extra: not a field of the format",
        ),
    ],
)
def test_a_document_that_is_not_one_is_refused_whole(document: Any, said: str) -> None:
    with pytest.raises(InvalidDocument) as refused:
        read_head(document)
    assert said in refused.value.message


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (b'{"format": ', "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"a: &x [1, 2]\nb: *x\n", "aliases are not accepted"),
        (b"a: " + b"[" * 100 + b"]" * 100, "nested more than"),
        (b"a: !!python/object:os.system ls\n", "not YAML"),
        (b"a: 1\n---\nb: 2\n", "not YAML"),
        (b'{"a": NaN}', "not JSON: NaN is not a number"),
        (b'{"a": -Infinity}', "not JSON: -Infinity is not a number"),
        (b'{"a": ' + b"9" * 5000 + b"}", "a number of more than"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b"a:\n  <<: {b: 1}\n  c: 2\n", "merge keys (<<) are not accepted (line 2)"),
    ],
)
def test_unreadable_or_unsafe_bytes_are_refused(text: bytes, said: str) -> None:
    kind: Kind = "json" if text.startswith((b"{", b"[")) else "yaml"
    with pytest.raises(InvalidDocument) as refused:
        parse(text, kind, max_depth=40)
    assert said in refused.value.message


# -- conversations an import rejects, one by one ---------------------------------------


def _document(*conversations: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "chatkeep.export",
        "version": 1,
        "exported_at": 1.0,
        "conversations": list(conversations),
    }


def _entry(cid: str = "conv_a", count: int = 2, **changes: Any) -> dict[str, Any]:
    messages = [
        {
            "id": f"{cid}_m{seq}",
            "seq": seq,
            "role": "user" if seq % 2 else "assistant",
            "content": "hi",
            "status": "complete",
            "created_at": 5.0,
            **({"reply_to": f"{cid}_m{seq - 1}"} if seq % 2 == 0 else {}),
        }
        for seq in range(1, count + 1)
    ]
    entry = {
        "id": cid,
        "model": "echo",
        "status": "active",
        "created_at": 1,
        "updated_at": 2,
        "last_activity": 5,
        "message_count": count,
        "messages": messages,
    }
    entry.update(changes)
    return entry


def _with_message(index: int, **changes: Any) -> dict[str, Any]:
    entry = _entry(count=3)
    entry["messages"][index].update(changes)
    return entry


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        (_entry(id="conv a"), "id: must be an id: 1 to 128 of A-Z a-z 0-9 _ -"),
        (_entry(id="conv_a\n"), "id: must be an id"),
        (_entry(status="deleted"), "status: must be 'active' or 'archived'"),
        (_entry(created_at="1"), "created_at: must be a number"),
        (_entry(created_at=MAX_TIMESTAMP + 1), "created_at: not a time chatkeep keeps"),
        (_entry(created_at=-1), "created_at: not a time chatkeep keeps: seconds since 1970"),
        (_entry(created_at=float("nan")), "created_at: not a finite number"),
        (_entry(updated_at=float("inf")), "updated_at: not a finite number"),
        (_entry(surprise=1), "surprise: not a field of the format"),
        (_entry(status=None), "status: must be 'active' or 'archived'"),
        (_entry(messages=None), "messages: must be a list"),
        (_entry(usage=[1, 2]), "usage: must be a mapping"),
        (_entry(model="m" * 201), "model: longer than 200 characters"),
        (_entry(model=""), "model: must not be empty"),
        (_entry(title=7), "title: must be a string"),
        (_entry(summary_through_seq=-1), "summary_through_seq: must be at least 0"),
        (_entry(message_count=3), "message_count: is 3 but 2 messages follow"),
        (_entry(title="t" * (LIMITS.max_title_chars + 1)), "title: 501 characters"),
        (_entry(metadata={"a": {"b": 1}}, summary_through_seq=9), "summary_through_seq"),
        (_entry(metadata={"k": "v" * LIMITS.max_metadata_bytes}), "metadata: over the limit"),
        (_with_message(0, seq=2), "messages.0.seq: is 2"),
        (_with_message(1, role="robot"), "messages.1.role"),
        (_with_message(2, id="conv_a_m1"), "messages.2.id: conv_a_m1 appears twice"),
        (_with_message(1, reply_to="conv_a_m3"), "messages.1.reply_to: conv_a_m3 is no earlier"),
        (_with_message(0, content="x" * (LIMITS.max_message_chars + 1)), "messages.0.content"),
        (_with_message(0, content="\ud800"), "messages.0.content: not valid Unicode"),
        (_with_message(0, usage={"prompt_tokens": -1, "completion_tokens": 0}), "usage"),
        (_with_message(0, seq=1.0), "messages.0.seq: must be an integer"),
        (_with_message(0, seq=2**63), "messages.0.seq: must be at most 9223372036854775807"),
        (_with_message(0, reason_code="Not A Code"), "messages.0.reason_code: must be an error"),
        (
            _with_message(0, client_message_id=""),
            "messages.0.client_message_id: must not be empty: null when there is none",
        ),
        (_with_message(1, status="incomplete"), "messages.1.reason: required on an incomplete"),
        (
            _with_message(1, status="incomplete", reason_code="stream_cut"),
            "messages.1.reason: required on an incomplete message",
        ),
        (_with_message(1, reason="why"), "messages.1.reason: only an incomplete message has one"),
        (
            _with_message(1, reason_code="stream_cut"),
            "messages.1.reason_code: only an incomplete message has one",
        ),
        (_with_message(1, content=None), "messages.1.content: must be a string"),
        (_with_message(1, role=None), "messages.1.role: must be 'system', 'user' or 'assistant'"),
    ],
)
async def test_an_invalid_conversation_is_rejected_alone_with_its_reason(
    entry: dict[str, Any], said: str
) -> None:
    store = MemoryStore()
    report = await _import(store, _document(_entry("conv_ok"), entry))
    assert report.created == ["conv_ok"]
    (rejected,) = report.rejected
    assert said in rejected.reason, rejected.reason
    assert rejected.index == 1
    with pytest.raises(NotFound):
        await store.get_conversation(OWNER, "conv_a")
    # The format's words, never pydantic's about Python values.
    for python_words in ("Input should", "Value should", "item", "String should", "Field"):
        assert python_words not in rejected.reason, rejected.reason


async def test_an_incomplete_message_needs_a_reason_and_only_it_has_one() -> None:
    # As the store writes them: a reply that stopped says why (a code when its cause had
    # one; none when recovery closed it at a start), a complete message has neither.
    cut, recovered = _entry("conv_a"), _entry("conv_b")
    cut["messages"][1].update(status="incomplete", reason="cut", reason_code="stream_cut")
    recovered["messages"][1].update(status="incomplete", reason=RECOVERED_REASON)
    report = await _import(MemoryStore(), _document(cut, recovered))
    assert report.created == ["conv_a", "conv_b"], report.rejected


@pytest.mark.parametrize("number", [2**63, 2**64, 2**70, 10**40, -(2**63) - 1, -(2**64)])
async def test_json_refuses_integers_past_64_bits_like_yaml_does(number: int) -> None:
    for kind in KINDS:
        # orjson writes no integer past 64 bits: the literal is put in by hand.
        text = orjson.dumps(_document(_entry(metadata={"x": "X"})))
        if kind == "yaml":
            text = yaml.safe_dump(_decode(text, "json")).encode()
        text = text.replace(b'"X"', str(number).encode()).replace(b"x: X", f"x: {number}".encode())
        report = await _import(MemoryStore(), _decode(text, kind))
        assert report.created == [], kind
        (rejected,) = report.rejected
        assert "metadata: integer at x is outside the 64-bit signed range" in rejected.reason


@pytest.mark.parametrize("number", [2**63 - 1, -(2**63), 2**53 + 1])
async def test_json_keeps_every_64_bit_integer_exact(number: int) -> None:
    text = orjson.dumps(_document(_entry(metadata={"x": number, "f": 1e21})))
    store = MemoryStore()
    assert (await _import(store, _decode(text, "json"))).created == ["conv_a"]
    metadata = (await store.get_conversation(OWNER, "conv_a")).metadata
    assert metadata == {"x": number, "f": 1e21}
    assert type(metadata["x"]) is int and type(metadata["f"]) is float


def test_metadata_deeper_than_the_limit_is_rejected() -> None:
    deep: dict[str, Any] = {}
    for _ in range(LIMITS.max_metadata_depth):
        deep = {"d": deep}
    report = asyncio.run(_import(MemoryStore(), _document(_entry(metadata=deep))))
    assert "metadata: nested more than" in report.rejected[0].reason


async def test_an_id_named_twice_in_a_document_is_imported_once() -> None:
    store = MemoryStore()
    report = await _import(store, _document(_entry(), _entry(count=4)))
    assert report.created == ["conv_a"]
    assert [(r.id, r.reason) for r in report.rejected] == [("conv_a", DUPLICATE)]
    assert (await store.get_conversation(OWNER, "conv_a")).message_count == 2


async def test_another_owners_id_is_rejected_without_saying_whose() -> None:
    store = MemoryStore()
    assert (await _import(store, _document(_entry()), owner="bob")).created == ["conv_a"]
    report = await _import(store, _document(_entry(), _entry("conv_b")))
    assert report.created == ["conv_b"]
    (rejected,) = report.rejected
    assert rejected.id == "conv_a" and "not available" in rejected.reason
    assert "bob" not in rejected.reason
    assert report.as_dict()["rejected"] == [{"id": "conv_a", "index": 0, "reason": rejected.reason}]


async def test_a_rejection_never_echoes_an_invalid_id() -> None:
    report = await _import(MemoryStore(), _document(_entry(id="\ud800" * 3), {"no": "id"}))
    assert [r.id for r in report.rejected] == [None, None]
    orjson.dumps(report.as_dict())  # the answer can always be written


def test_yaml_written_by_hand_imports_too() -> None:
    text = yaml.safe_dump(_document(_entry(count=2))).encode()
    report = asyncio.run(_import(MemoryStore(), parse(text, "yaml", max_depth=40)))
    assert report.created == ["conv_a"]


@pytest.mark.parametrize(
    ("text", "kind", "said"),
    [
        (b'{"format": "chatkeep.export", "format": "x"}', "json", '"format" is given twice'),
        (b'{"a": {"k": 1, "b": 2, "k": 1}}', "json", '"k" is given twice in one object'),
        (b"title: a\ntitle: b\n", "yaml", '"title" is given twice in one mapping (line 2)'),
        (b"a:\n  - k: 1\n    k: 1\n", "yaml", '"k" is given twice in one mapping (line 3)'),
        (b"a: {1: x, 1.0: y}\n", "yaml", '"1.0" is given twice'),
        (b'{"\\ud800": 1, "\\ud800": 2}', "json", '"\\ud800" is given twice'),
    ],
)
def test_a_key_given_twice_refuses_the_document(text: bytes, kind: Kind, said: str) -> None:
    # A parser would keep the last value: the document would not mean what it shows.
    with pytest.raises(InvalidDocument) as refused:
        parse(text, kind, max_depth=40)
    assert said in refused.value.message
    orjson.dumps(refused.value.message)  # the answer can always be written


@pytest.mark.parametrize("kind", KINDS)
def test_a_document_with_a_field_given_twice_is_refused(kind: Kind) -> None:
    entry = _entry(title="a")
    if kind == "json":
        text = orjson.dumps(_document(entry)).replace(b'"title":"a"', b'"title":"a","title":"b"')
    else:
        text = yaml.safe_dump(_document(entry)).encode()
        text = text.replace(b"  title: a\n", b"  title: a\n  title: b\n")
    with pytest.raises(InvalidDocument, match='"title" is given twice'):
        _decode(text, kind)
