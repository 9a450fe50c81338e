"""Properties of input validation and storage, over generated input.

Whatever a client sends as metadata, title, system prompt or message, the server answers
2xx or 422, never 5xx; and whatever it accepted reads back and lists exactly as sent.
The input covers what broke the server before: deep nesting, integers past 64 bits,
numbers JSON cannot carry, and any code point, lone surrogates included. Bodies are
encoded by hand (``json.dumps`` escapes surrogates and writes big integers and NaN), since
a strict client encoder would refuse to send them.

One app serves all the examples of a test, so the listing is checked against a store that
keeps growing; examples are bounded and derandomized to keep the suite fast and stable.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.api.conftest import ClientFactory

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    # One client for all examples is the point: the listing accumulates what was accepted.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_valid_char = st.one_of(
    st.characters(), st.sampled_from(["\x00", "\u2028", "\ufeff", "\U0001f600", '"', "\\"])
)
#: Now and then a lone surrogate (hypothesis leaves them out by default); two in a row may
#: make a valid pair once JSON-escaped, which the server must then accept.
_any_char = st.one_of(_valid_char, st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
_valid_text = st.text(_valid_char, max_size=24)
texts = st.one_of(
    _valid_text, _valid_text, _valid_text, st.lists(_any_char, max_size=8).map("".join)
)

_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_numbers = st.one_of(
    _int64,
    _int64,
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(),  # past 64 bits, now and then
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**40, math.inf, -math.inf, math.nan]),
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, texts)
_json = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=12,
)


def _nested(leaf: Any, depth: int) -> Any:
    for level in range(depth):
        leaf = {"k": leaf} if level % 2 else [leaf]
    return leaf


#: Free-form objects, plus chains deep enough to pass every depth limit.
metadata_values = st.one_of(
    st.dictionaries(texts, _json, max_size=5),
    st.builds(
        lambda leaf, depth: {"deep": _nested(leaf, depth)},
        _scalars,
        st.integers(1, 40) | st.integers(1, 300),
    ),
)


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=True, allow_nan=True).encode()


def _as_received(value: Any) -> Any:
    """``value`` as the server decodes it: an escaped surrogate pair is one character."""
    return json.loads(json.dumps(value, ensure_ascii=True, allow_nan=True))


def _storable(value: Any) -> bool:
    """A loose oracle: values the server must refuse, whatever its limits."""
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return all(_storable(k) and _storable(v) for k, v in value.items())


async def _send(client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any]) -> Any:
    response = await client.request(
        method, path, content=_encode(body), headers={"content-type": "application/json"}
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_request", response.text
        event(f"{method} refused")
        return None
    event(f"{method} accepted")
    assert _storable(_as_received(body)), f"accepted what cannot be stored: {body!r}"
    return response.json()


async def _listed(client: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    response = await client.get("/api/conversations", params={"limit": 200})
    assert response.status_code == 200, response.text
    [item] = [c for c in response.json()["items"] if c["id"] == conversation_id]
    return dict(item)


@pytest.fixture(params=["sqlite", "memory"])
async def any_store(
    request: pytest.FixtureRequest, make_client: ClientFactory
) -> httpx.AsyncClient:
    # Room for every example's conversation in the first page of the listing.
    return await make_client(storage=request.param, max_page_size=200)


@EXAMPLES
@given(title=st.none() | texts, system_prompt=st.none() | texts, metadata=metadata_values)
async def test_created_conversations_read_back_and_list_as_sent(
    any_store: httpx.AsyncClient, title: str | None, system_prompt: str | None, metadata: Any
) -> None:
    body = {"title": title, "system_prompt": system_prompt, "metadata": metadata}
    created = await _send(any_store, "POST", "/api/conversations", body)
    if created is None:
        return
    sent = _as_received(body)
    got = (await any_store.get(f"/api/conversations/{created['id']}")).json()
    listed = await _listed(any_store, created["id"])
    for answer in (created, got, listed):
        assert {k: answer[k] for k in sent} == sent


@EXAMPLES
@given(title=texts, metadata=metadata_values)
async def test_updated_conversations_read_back_and_list_as_sent(
    any_store: httpx.AsyncClient, title: str, metadata: Any
) -> None:
    created = await _send(any_store, "POST", "/api/conversations", {"title": "before"})
    path = f"/api/conversations/{created['id']}"
    updated = await _send(any_store, "PATCH", path, {"title": title, "metadata": metadata})
    expected = {"title": "before", "metadata": {}}
    if updated is not None:
        expected = _as_received({"title": title, "metadata": metadata})
    got = (await any_store.get(path)).json()
    listed = await _listed(any_store, created["id"])
    for answer in (got, listed):
        assert {k: answer[k] for k in expected} == expected


@EXAMPLES
@given(content=texts, client_message_id=st.none() | texts)
async def test_sent_messages_read_back_as_sent(
    any_store: httpx.AsyncClient, content: str, client_message_id: str | None
) -> None:
    created = await _send(any_store, "POST", "/api/conversations", {})
    path = f"/api/conversations/{created['id']}/messages"
    body: dict[str, Any] = {"content": content}
    if client_message_id is not None:
        body["client_message_id"] = client_message_id
    answer = await _send(any_store, "POST", path, body)
    history = (await any_store.get(path)).json()["items"]
    if answer is None:
        assert history == []
        return
    user = history[0]
    sent = _as_received(body)
    assert user["role"] == "user" and user["content"] == sent["content"]
    assert user.get("client_message_id") == sent.get("client_message_id")
    assert answer["user_message"] == user
    assert (await _listed(any_store, created["id"]))["message_count"] == 2
