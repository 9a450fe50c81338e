"""The auth layer on its own: what each credential gets on each kind of route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Scope

from chatkeep.api.middleware import ADMIN_SCOPE_KEY, KEY_SCOPE_KEY, OWNER_SCOPE_KEY
from chatkeep.api.middleware.auth import AuthMiddleware
from chatkeep.domain.keys import ApiKey, KeyLimits

ADMIN = "admin-token-" + "a" * 20
METRICS = "metrics-token-" + "m" * 20
ALICE = "ck_alice_secret"
REVOKED = "ck_revoked_secret"


def _key(owner: str) -> ApiKey:
    limits = KeyLimits(rate=10, burst=10, max_streams=2, priority=0)
    return ApiKey(f"key_{owner}", owner, None, limits, created_at=0.0, created_by="admin")


class Lookups:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, secret: str) -> ApiKey | None:
        self.asked.append(secret)
        return _key("alice") if secret == ALICE else None


class Attempts:
    """Blocks an address after ``limit`` failures."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failures: dict[str, int] = {}

    def retry_after(self, address: str) -> float | None:
        return 7.0 if self.failures.get(address, 0) >= self.limit else None

    def record(self, address: str) -> None:
        self.failures[address] = self.failures.get(address, 0) + 1


async def _echo_scope(request: Request) -> JSONResponse:
    scope: Scope = request.scope
    key = scope.get(KEY_SCOPE_KEY)
    return JSONResponse(
        {
            "owner": scope.get(OWNER_SCOPE_KEY),
            "key": key.id if key else None,
            "admin": scope.get(ADMIN_SCOPE_KEY),
        }
    )


PATHS = ["/api/conversations", "/v1/models", "/admin/stats", "/metrics", "/healthz", "/docs"]


def _client(
    *,
    mode: str = "keys",
    loopback: bool = False,
    attempts: Attempts | None = None,
    known: tuple[str, ...] = (),
    **kw: Any,
) -> tuple[httpx.AsyncClient, Lookups]:
    lookups = Lookups()
    inner = Starlette(routes=[Route(path, _echo_scope) for path in PATHS])
    app = AuthMiddleware(
        inner,
        mode=mode,
        default_owner="default",
        admin_token=kw.get("admin_token", ADMIN),
        metrics_token=kw.get("metrics_token", METRICS),
        lookup=lookups,
        known=lambda secret: _key("alice") if secret in known else None,
        attempts=attempts,
        is_direct_loopback=lambda scope: loopback,
    )
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://test"), lookups


async def test_a_key_in_either_header_acts_for_its_owner() -> None:
    client, _ = _client()
    async with client:
        for headers in ({"authorization": f"Bearer {ALICE}"}, {"x-api-key": ALICE}):
            answer = await client.get("/api/conversations", headers=headers)
            assert answer.status_code == 200
            assert answer.json() == {"owner": "alice", "key": "key_alice", "admin": False}


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "needs an API key"),
        ({"authorization": "Bearer ck_nobody"}, "not valid"),
        ({"x-api-key": REVOKED}, "not valid"),
        ({"authorization": f"Basic {ALICE}"}, "Bearer"),
        ({"authorization": "Bearer "}, "Bearer"),
        ({"authorization": f"Bearer {ALICE}", "x-api-key": "ck_other"}, "two different"),
    ],
)
async def test_no_valid_key_is_401_in_the_json_error_shape(
    headers: dict[str, str], says: str
) -> None:
    client, _ = _client()
    async with client:
        answer = await client.get("/v1/models", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    error = answer.json()["error"]
    assert error["code"] == "unauthorized"
    assert says in error["message"]


async def test_the_same_key_in_both_headers_is_one_credential() -> None:
    client, _ = _client()
    async with client:
        headers = {"authorization": f"Bearer {ALICE}", "x-api-key": ALICE}
        assert (await client.get("/v1/models", headers=headers)).status_code == 200
        headers = {"authorization": f"Bearer {ALICE}", "x-api-key": " "}
        assert (await client.get("/v1/models", headers=headers)).status_code == 200


async def test_admin_routes_want_the_admin_token_and_refuse_a_user_key() -> None:
    client, _ = _client()
    async with client:
        user = await client.get("/admin/stats", headers={"x-api-key": ALICE})
        admin = await client.get("/admin/stats", headers={"x-api-key": ADMIN})
        nothing = await client.get("/admin/stats")
        metrics_token = await client.get("/admin/stats", headers={"x-api-key": METRICS})
    assert user.status_code == 403
    assert user.json()["error"]["code"] == "forbidden"
    assert admin.status_code == 200 and admin.json()["admin"] is True
    assert nothing.status_code == 401
    assert metrics_token.status_code == 401


async def test_the_admin_token_is_not_an_api_key() -> None:
    client, _ = _client()
    async with client:
        answer = await client.get("/api/conversations", headers={"x-api-key": ADMIN})
    assert answer.status_code == 403
    assert "chatkeep keys create" in answer.json()["error"]["message"]


async def test_metrics_take_the_metrics_or_the_admin_token_only() -> None:
    client, _ = _client()
    async with client:
        statuses = {
            name: (await client.get("/metrics", headers=headers)).status_code
            for name, headers in {
                "metrics": {"authorization": f"Bearer {METRICS}"},
                "admin": {"authorization": f"Bearer {ADMIN}"},
                "user": {"authorization": f"Bearer {ALICE}"},
                "none": {},
            }.items()
        }
    assert statuses == {"metrics": 200, "admin": 200, "user": 403, "none": 401}


async def test_without_tokens_admin_and_metrics_stay_with_direct_loopback() -> None:
    for loopback, expected in ((True, 200), (False, 401)):
        client, _ = _client(loopback=loopback, admin_token=None, metrics_token=None)
        async with client:
            assert (await client.get("/admin/stats")).status_code == expected
            assert (await client.get("/metrics")).status_code == expected


async def test_probes_and_docs_need_no_key() -> None:
    client, lookups = _client()
    async with client:
        for path in ("/healthz", "/docs"):
            assert (await client.get(path)).status_code == 200
    assert lookups.asked == []


async def test_failed_attempts_from_an_address_end_in_429_before_any_lookup() -> None:
    attempts = Attempts(limit=3)
    client, lookups = _client(attempts=attempts)
    async with client:
        wrong = [
            (await client.get("/v1/models", headers={"x-api-key": f"ck_guess{n}"})).status_code
            for n in range(3)
        ]
        blocked = await client.get("/v1/models", headers={"x-api-key": ALICE})
    assert wrong == [401, 401, 401]
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == "7"
    assert attempts.failures == {"203.0.113.9": 3}
    assert ALICE not in lookups.asked


async def test_a_huge_credential_is_refused_without_being_looked_up() -> None:
    client, lookups = _client()
    async with client:
        answer = await client.get("/v1/models", headers={"x-api-key": "ck_" + "x" * 10_000})
    assert answer.status_code == 401
    assert lookups.asked == []


async def test_in_none_mode_everyone_is_the_default_owner_and_scope_is_never_trusted() -> None:
    client, lookups = _client(mode="none")
    async with client:
        answer = await client.get("/api/conversations", headers={"x-api-key": ALICE})
        admin = await client.get("/admin/stats", headers={"authorization": f"Bearer {ADMIN}"})
    assert answer.json() == {"owner": "default", "key": None, "admin": False}
    assert admin.json()["admin"] is True
    assert lookups.asked == []


def test_keys_mode_without_a_lookup_is_a_wiring_error() -> None:
    with pytest.raises(ValueError, match="lookup"):
        AuthMiddleware(lambda *a: None, mode="keys", default_owner="d", admin_token=None)  # type: ignore[arg-type]


async def test_a_blocked_address_still_lets_in_a_key_known_good_and_the_tokens() -> None:
    attempts = Attempts(limit=1)
    client, lookups = _client(attempts=attempts, known=(ALICE,))
    async with client:
        assert (await client.get("/v1/models", headers={"x-api-key": "ck_x"})).status_code == 401
        known = await client.get("/v1/models", headers={"x-api-key": ALICE})
        guess = await client.get("/v1/models", headers={"x-api-key": "ck_guess"})
        admin = await client.get("/admin/stats", headers={"x-api-key": ADMIN})
        user_on_admin = await client.get("/admin/stats", headers={"x-api-key": ALICE})
    assert known.status_code == 200 and known.json()["owner"] == "alice"
    assert guess.status_code == 429
    assert admin.status_code == 200
    assert user_on_admin.status_code == 429
    assert lookups.asked == ["ck_x"]
