"""Input the server cannot store faithfully is refused at the edge with a 422.

Each case here once answered 500 (or 503 with a codec's text), or was accepted and then
broke every listing. Bodies are written as raw JSON text, because a lone surrogate or an
integer past 64 bits is exactly what a client's JSON encoder would refuse to produce.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.api.conftest import ClientFactory

STORAGES = ["sqlite", "memory"]


def _nested(depth: int) -> str:
    """A JSON object nested ``depth`` objects deep: ``{"a":{"a":…1…}}``."""
    return '{"a":' * (depth - 1) + '{"a":1' + "}" * depth


async def _raw(client: httpx.AsyncClient, method: str, path: str, body: str) -> httpx.Response:
    return await client.request(
        method, path, content=body.encode(), headers={"content-type": "application/json"}
    )


def _assert_invalid(response: httpx.Response, *words: str) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    for word in words:
        assert word in error["message"], error["message"]
    message: str = error["message"]
    return message


async def _listing_works(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/api/conversations")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.fixture(params=STORAGES)
async def any_store(
    request: pytest.FixtureRequest, make_client: ClientFactory
) -> httpx.AsyncClient:
    return await make_client(storage=request.param)


@pytest.mark.parametrize("depth", [33, 128, 129, 253, 254, 256, 300, 900])
async def test_metadata_nested_too_deep_is_422_and_listing_keeps_working(
    any_store: httpx.AsyncClient, depth: int
) -> None:
    response = await _raw(
        any_store, "POST", "/api/conversations", f'{{"metadata":{_nested(depth)}}}'
    )
    # The configured limit (32 by default) or, past every limit a setting may take, 128.
    _assert_invalid(response, "metadata", "levels deep at a.a.a")
    assert await _listing_works(any_store) == []


async def test_metadata_depth_error_names_the_configured_limit(
    any_store: httpx.AsyncClient,
) -> None:
    response = await _raw(any_store, "POST", "/api/conversations", f'{{"metadata":{_nested(33)}}}')
    _assert_invalid(response, "metadata: nested more than 32 levels deep")
    assert await _listing_works(any_store) == []


async def test_metadata_depth_limit_is_a_setting(make_client: ClientFactory) -> None:
    client = await make_client(max_metadata_depth=3)
    accepted = await _raw(client, "POST", "/api/conversations", f'{{"metadata":{_nested(3)}}}')
    assert accepted.status_code == 201, accepted.text
    refused = await _raw(client, "POST", "/api/conversations", f'{{"metadata":{_nested(4)}}}')
    _assert_invalid(refused, "metadata", "3")
    [listed] = await _listing_works(client)
    assert listed["metadata"] == {"a": {"a": {"a": 1}}}


async def test_metadata_at_the_depth_limit_reads_back_and_lists(
    any_store: httpx.AsyncClient,
) -> None:
    created = await _raw(any_store, "POST", "/api/conversations", f'{{"metadata":{_nested(32)}}}')
    assert created.status_code == 201, created.text
    sent = created.json()["metadata"]
    got = await any_store.get(f"/api/conversations/{created.json()['id']}")
    assert got.json()["metadata"] == sent
    [listed] = await _listing_works(any_store)
    assert listed["metadata"] == sent


@pytest.mark.parametrize(
    "number", [str(2**63), str(-(2**63) - 1), str(2**64), "1" + "0" * 40, "-" + "9" * 30]
)
async def test_integers_outside_64_bits_are_422(any_store: httpx.AsyncClient, number: str) -> None:
    response = await _raw(
        any_store, "POST", "/api/conversations", f'{{"metadata":{{"n":[1,{{"x":{number}}}]}}}}'
    )
    message = _assert_invalid(response, "metadata", "64-bit")
    assert "n.1.x" in message  # where the number is
    assert await _listing_works(any_store) == []


async def test_integers_at_the_64_bit_bounds_read_back_exactly(
    any_store: httpx.AsyncClient,
) -> None:
    metadata = {"max": 2**63 - 1, "min": -(2**63)}
    created = await any_store.post("/api/conversations", json={"metadata": metadata})
    assert created.status_code == 201, created.text
    got = await any_store.get(f"/api/conversations/{created.json()['id']}")
    assert got.json()["metadata"] == metadata
    [listed] = await _listing_works(any_store)
    assert listed["metadata"] == metadata


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity"])
async def test_numbers_json_cannot_carry_are_422(any_store: httpx.AsyncClient, number: str) -> None:
    # Accepted before, they came back as null: not what was sent.
    response = await _raw(
        any_store, "POST", "/api/conversations", f'{{"metadata":{{"f":{number}}}}}'
    )
    _assert_invalid(response, "metadata", "finite")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"metadata":{"a":"\\ud800"}}', "metadata"),
        ('{"metadata":{"a":["ok","x\\udfffy"]}}', "metadata"),
        ('{"metadata":{"\\ud800":1}}', "metadata"),
        ('{"title":"\\ud800"}', "title"),
        ('{"title":"ab\\udc00"}', "title"),
        ('{"system_prompt":"\\udfff"}', "system_prompt"),
    ],
)
async def test_lone_surrogates_on_create_are_422(
    any_store: httpx.AsyncClient, body: str, where: str
) -> None:
    response = await _raw(any_store, "POST", "/api/conversations", body)
    _assert_invalid(response, where, "surrogate")
    assert await _listing_works(any_store) == []


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"title":"\\ud800"}', "title"),
        ('{"metadata":{"k":"\\ud800"}}', "metadata"),
        ('{"metadata":{"k":99999999999999999999}}', "64-bit"),
        ('{"metadata":' + _nested(40) + "}", "deep"),
        ('{"metadata":{"f":1e999}}', "finite"),
    ],
)
async def test_bad_patch_bodies_are_422_and_change_nothing(
    any_store: httpx.AsyncClient, body: str, where: str
) -> None:
    created = (await any_store.post("/api/conversations", json={"title": "t"})).json()
    path = f"/api/conversations/{created['id']}"
    _assert_invalid(await _raw(any_store, "PATCH", path, body), where)
    got = (await any_store.get(path)).json()
    assert (got["title"], got["metadata"]) == ("t", {})
    assert len(await _listing_works(any_store)) == 1


@pytest.mark.parametrize(
    "body",
    ['{"content":"\\ud800"}', '{"content":"hi","client_message_id":"\\udfff"}'],
)
async def test_lone_surrogates_in_a_send_are_422(any_store: httpx.AsyncClient, body: str) -> None:
    created = (await any_store.post("/api/conversations", json={})).json()
    path = f"/api/conversations/{created['id']}/messages"
    response = await _raw(any_store, "POST", path, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    history = await any_store.get(path)
    assert history.status_code == 200 and history.json()["items"] == []


@pytest.mark.parametrize("query", ["after=9223372036854775808", "before=9223372036854775808"])
async def test_history_positions_past_64_bits_are_422(
    any_store: httpx.AsyncClient, query: str
) -> None:
    created = (await any_store.post("/api/conversations", json={})).json()
    response = await any_store.get(f"/api/conversations/{created['id']}/messages?{query}")
    _assert_invalid(response, query.split("=")[0])


async def test_history_positions_at_the_64_bit_bound_are_fine(
    any_store: httpx.AsyncClient,
) -> None:
    created = (await any_store.post("/api/conversations", json={})).json()
    path = f"/api/conversations/{created['id']}/messages"
    response = await any_store.get(f"{path}?after={2**63 - 1}")
    assert response.status_code == 200 and response.json()["items"] == []
    response = await any_store.get(f"{path}?before={2**63 - 1}")
    assert response.status_code == 200


@pytest.mark.parametrize("limit", ["0", "-1", str(2**63), "99999999999999999999999"])
async def test_page_sizes_out_of_range_are_422(any_store: httpx.AsyncClient, limit: str) -> None:
    response = await any_store.get(f"/api/conversations?limit={limit}")
    _assert_invalid(response, "limit")


@pytest.mark.parametrize(
    ("messages", "where"),
    [
        ('[{"role":"user","content":{"a":1}}]', "content"),
        ('[{"role":"user","content":1}]', "content"),
        ('[{"role":"user","content":"\\ud800"}]', "JSON"),
    ],
)
async def test_chat_completion_with_bad_content_is_422(
    client: httpx.AsyncClient, messages: str, where: str
) -> None:
    body = f'{{"model":"echo","messages":{messages}}}'
    response = await _raw(client, "POST", "/v1/chat/completions", body)
    _assert_invalid(response, where)


async def test_chat_completion_with_bad_stream_options_is_422(client: httpx.AsyncClient) -> None:
    body = (
        '{"model":"echo","stream":true,"stream_options":1,'
        '"messages":[{"role":"user","content":"x"}]}'
    )
    response = await _raw(client, "POST", "/v1/chat/completions", body)
    _assert_invalid(response, "stream_options")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"title": "\xff"}', ("body", "UTF-8")),
        (b'{"metadata":' + b'{"a":' * 5000 + b"1" + b"}" * 5001, ("body", "deep")),
    ],
)
async def test_bodies_that_cannot_be_decoded_are_422(
    client: httpx.AsyncClient, body: bytes, words: tuple[str, ...]
) -> None:
    # Invalid JSON like any other, not a vague 400.
    response = await client.post(
        "/api/conversations", content=body, headers={"content-type": "application/json"}
    )
    _assert_invalid(response, *words)


@pytest.mark.parametrize(
    "parts",
    ['[{"a":1},"x"]', "[null,null]", '["a",[1]]', '[18446744073709551615,"x"]', "[1,2]", "[1]"],
)
async def test_forged_cursors_are_422(any_store: httpx.AsyncClient, parts: str) -> None:
    for _ in range(2):
        await any_store.post("/api/conversations", json={})
    cursor = base64.urlsafe_b64encode(parts.encode()).decode().rstrip("=")
    response = await any_store.get("/api/conversations", params={"cursor": cursor, "limit": 1})
    _assert_invalid(response, "cursor")


@pytest.mark.parametrize("path", ["/api/conversations", "/v1/chat/completions"])
async def test_an_integer_of_thousands_of_digits_is_422(
    client: httpx.AsyncClient, path: str
) -> None:
    body = '{"metadata": {"n": ' + "9" * 5000 + "}}"
    if path.startswith("/v1"):
        body = '{"model": "echo", "messages": [], "n": ' + "9" * 5000 + "}"
    response = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
