"""The API document says what the auth and quota layers answer, on every guarded operation."""

from __future__ import annotations

import httpx

from chatkeep.api.middleware.auth import PUBLIC_PATHS


async def test_every_guarded_operation_takes_a_key_and_documents_its_refusals(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    guarded = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path in PUBLIC_PATHS:
                assert "security" not in operation, (method, path)
                continue
            guarded += 1
            assert operation["security"] == [{"bearer": []}, {"apiKey": []}], (method, path)
            for status in ("401", "403", "429"):
                answer = operation["responses"][status]["content"]["application/json"]
                assert answer["schema"]["$ref"].endswith("/ErrorAnswer"), (method, path, status)
    assert guarded >= 20
    assert "/healthz" in document["paths"]
