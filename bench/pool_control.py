"""What the pool benchmarks read and set beside the load: fake backends' counters, models,
and chatkeep's own view of its pools.

The fake backend counts what reached it (``/_fake/stats``, never counting itself), so the
extra requests a hedging pool made are the backends' chat requests minus the client's.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

#: The name every fake backend knows its model by.
UPSTREAM_MODEL = "fake"


def _call(url: str, *, method: str = "GET", body: Mapping[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def fake_stats(url: str) -> dict[str, Any]:
    """A fake backend's counters (``GET /_fake/stats``)."""
    stats: dict[str, Any] = _call(f"{url}/_fake/stats")
    return stats


def reset_fake_stats(urls: Iterable[str]) -> None:
    """Zero the counters of every backend in ``urls``."""
    for url in urls:
        _call(f"{url}/_fake/stats/reset", method="POST")


def configure_fake(url: str, **changes: Any) -> None:
    """Change a running fake backend (``POST /_fake/config``)."""
    _call(f"{url}/_fake/config", method="POST", body=changes)


def admin_providers(chatkeep_url: str) -> list[dict[str, Any]]:
    """``GET /admin/providers`` (a loopback client needs no admin token when none is set)."""
    models: list[dict[str, Any]] = _call(f"{chatkeep_url}/admin/providers")["models"]
    return models


def pool_model(urls: Iterable[str], *, provider: str = "openai", **settings: Any) -> dict[str, Any]:
    """A ``CHATKEEP_MODELS`` entry: a pool of one backend per URL, with pool ``settings``."""
    return {
        "provider": provider,
        "upstream_model": UPSTREAM_MODEL,
        "backends": [{"url": url} for url in urls],
        **settings,
    }


def chatkeep_settings(models: Mapping[str, Any], default: str) -> dict[str, str]:
    """The ``CHATKEEP_*`` variables that give a benchmarked server exactly ``models``."""
    return {"CHATKEEP_MODELS": json.dumps(models), "CHATKEEP_DEFAULT_MODEL": default}
