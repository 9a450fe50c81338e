"""schemathesis against the app in process: what ``/openapi.json`` promises, the app keeps.

Every operation of the document is called with generated requests, valid and invalid
(the stateless phase): no answer may be a server error, and every answer must be one the
document lists for the route, in the documented content type and schema. The stateful
phase follows the document's links (create → send → read …) to reach real conversations.

The app runs with its lifespan in a thread of its own (an anyio blocking portal), so the
generated tests, which are synchronous, can call it; examples are bounded and derandomized
to keep the suite fast and stable.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.schemas import OpenApiSchema

from chatkeep.api.schemas import SSE_EVENT_SCHEMA
from chatkeep.app import create_app
from chatkeep.settings import Settings

BASE_URL = "http://chatkeep.test"

#: The checks that judge an answer by itself (others re-send requests, or need auth).
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]

EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


class InProcessApp:
    """The app with its lifespan running in a portal thread, called synchronously."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    def request(self, **kwargs: Any) -> httpx.Response:
        """Send one request (httpx keyword arguments) and read the whole answer."""
        return self._portal.call(functools.partial(self._client.request, **kwargs))

    def call(self, case: Case) -> httpx.Response:
        """Send a generated case."""
        kwargs = case.as_transport_kwargs(base_url=BASE_URL)
        kwargs.pop("cookies", None)
        if "data" in kwargs:  # requests' name for a raw body
            kwargs["content"] = kwargs.pop("data")
        return self.request(**kwargs)

    def schema(self) -> OpenApiSchema:
        document = self.request(method="GET", url="/openapi.json").json()
        schema = schemathesis.openapi.from_dict(document)
        # The app runs with CHATKEEP_AUTH=none: made-up credentials would only spend the
        # examples (keys mode has its own tests: the BOLA matrix, the auth layer's).
        schema.config.generation.update(with_security_parameters=False)
        return schema


@contextmanager
def running_app(data_dir: Path) -> Iterator[InProcessApp]:
    # The profiler traces for as long as asked: generated requests may ask for a minute.
    app = create_app(Settings(data_dir=data_dir, memory_profile_max_seconds=0.01))
    with start_blocking_portal() as portal:
        lifespan = app.router.lifespan_context(app)
        portal.call(lifespan.__aenter__)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
        try:
            yield InProcessApp(portal, client)
        finally:
            portal.call(client.aclose)
            portal.call(lifespan.__aexit__, None, None, None)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[InProcessApp]:
    with running_app(tmp_path / "data") as running:
        yield running


def _label(case: Case) -> str:
    return f"{case.operation.method.upper()} {case.operation.path}"


def test_stateless_phase_finds_no_failure(app: InProcessApp) -> None:
    schema = app.schema()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the document lists no operation"
    failures: dict[str, set[str]] = {}

    for operation in operations:

        @EXAMPLES
        @given(
            case=st.one_of(
                operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            )
        )
        def exercise(case: Case) -> None:
            response = app.call(case)
            try:
                case.validate_response(response, checks=CHECKS)
            except FailureGroup as exc:
                # Collected, so one run names every failing operation, not only the first.
                failures.setdefault(_label(case), set()).add(
                    f"{response.status_code}: {str(exc).splitlines()[0]}"
                )

        exercise()

    assert not failures, "\n".join(f"{op}: {sorted(found)}" for op, found in failures.items())


def test_every_error_answer_is_documented_in_the_real_shape(app: InProcessApp) -> None:
    document = app.request(method="GET", url="/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if not status.startswith(("4", "5")):
                    continue
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorAnswer"}, (
                    f"{method.upper()} {path} documents {status} as {schema}"
                )


def test_event_streams_are_documented_event_by_event(app: InProcessApp) -> None:
    document = app.request(method="GET", url="/openapi.json").json()
    streaming = {
        f"{method.upper()} {path}": operation["responses"]["200"]["content"]
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "text/event-stream" in operation["responses"].get("200", {}).get("content", {})
    }
    assert {
        "POST /api/conversations/{conversation_id}/messages",
        "GET /api/conversations/{conversation_id}/stream",
        "POST /v1/chat/completions",
    } <= set(streaming)
    for label, content in streaming.items():
        assert content["text/event-stream"]["schema"] == SSE_EVENT_SCHEMA, label


def test_stateful_phase_follows_links_without_failure(app: InProcessApp, tmp_path: Path) -> None:
    schema = app.schema()
    calls: list[tuple[str, int]] = []
    scenarios = iter(range(1_000_000))

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        """Chains operations along the document's links (create → send → read …).

        Each scenario gets a fresh app: hypothesis replays scenarios while it shrinks, and
        one app's state carried from one to the next would answer differently.
        """

        def setup(self) -> None:
            self._stack = ExitStack()
            self._app = self._stack.enter_context(running_app(tmp_path / f"s{next(scenarios)}"))

        def teardown(self) -> None:
            self._stack.close()

        def call(self, case: Case, **kwargs: Any) -> Response:
            response = self._app.call(case)
            calls.append((_label(case), response.status_code))
            return Response.from_any(response)

        def validate_response(
            self, response: Response, case: Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(response, checks=CHECKS)

    Workflow.run(
        settings=settings(
            max_examples=25,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # The links were followed: messages were sent to, and read from, created conversations.
    answered = {call for call in calls if call[1] < 300}
    assert ("POST /api/conversations", 201) in answered
    assert ("POST /api/conversations/{conversation_id}/messages", 200) in answered
    assert ("GET /api/conversations/{conversation_id}/messages", 200) in answered
