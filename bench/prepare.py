"""What a run needs on the server before it is measured: conversations, and a warm process."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import orjson

from load import Conversations

_JSON = {"Content-Type": "application/json"}


async def _create(base_url: str, count: int, model: str, parallel: int) -> list[str]:
    ids: list[str] = []
    numbers = iter(range(count))
    body = orjson.dumps({"model": model, "title": "benchmark"})

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in numbers:
            async with session.post(
                f"{base_url}/api/conversations", data=body, headers=_JSON
            ) as response:
                response.raise_for_status()
                ids.append((await response.json(loads=orjson.loads))["id"])

    timeout = aiohttp.ClientTimeout(total=30.0)
    async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.TaskGroup() as group:
        for _ in range(parallel):
            group.create_task(worker(session))
    return ids


def create_conversations(
    base_url: str, path: Path, *, count: int, model: str, per_conversation: int
) -> Conversations:
    """Open ``count`` conversations on ``model`` and list their ids in ``path``."""
    ids = asyncio.run(_create(base_url, count, model, parallel=8))
    path.write_text("\n".join(ids) + "\n")
    return Conversations(path=path, count=len(ids), per_conversation=per_conversation, model=model)


async def _warm_up(base_url: str, model: str, requests: int) -> None:
    completion = {"model": model, "messages": [{"role": "user", "content": "warm up"}]}
    timeout = aiohttp.ClientTimeout(total=30.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(
            f"{base_url}/api/conversations", data=orjson.dumps({"model": model}), headers=_JSON
        ) as response:
            response.raise_for_status()
            conversation = (await response.json(loads=orjson.loads))["id"]
        for number in range(requests):
            stream = number % 2 == 1
            message = {"content": f"warm up {number}", "stream": stream}
            for url, body in (
                (f"{base_url}/v1/chat/completions", {**completion, "stream": stream}),
                (f"{base_url}/api/conversations/{conversation}/messages", message),
            ):
                # A kind of answer that is broken is reported by `check_replies`, not here.
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.post(url, data=orjson.dumps(body), headers=_JSON) as answer:
                        await answer.read()


async def _problem(
    session: aiohttp.ClientSession, url: str, body: dict[str, object], stream: bool
) -> str | None:
    """What is wrong with one answer, judged by its complete body; ``None`` when it is fine."""
    try:
        async with session.post(url, data=orjson.dumps(body), headers=_JSON) as response:
            declared = response.headers.get("Content-Length")
            data = await response.read()
    except aiohttp.ClientError as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.status != 200:
        return f"status {response.status}: {data[:200]!r}"
    if stream:
        if b"data: [DONE]" not in data and b"event: done" not in data:
            where = f" (Content-Length: {declared})" if declared is not None else ""
            return f"the stream has no end marker{where}: {data[:120]!r}"
        return None
    payload = orjson.loads(data)
    if not isinstance(payload, dict) or not (
        "choices" in payload or "assistant_message" in payload
    ):
        return f"not a reply: {data[:200]!r}"
    return None


async def _check(direct_url: str, chatkeep_url: str, model: str) -> dict[str, str | None]:
    completion = {"model": model, "messages": [{"role": "user", "content": "check"}]}
    timeout = aiohttp.ClientTimeout(total=30.0)
    found: dict[str, str | None] = {}
    # A fresh connection for each answer: a broken one must not spoil the next check.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        async with session.post(
            f"{chatkeep_url}/api/conversations", data=orjson.dumps({"model": model}), headers=_JSON
        ) as response:
            response.raise_for_status()
            conversation = (await response.json(loads=orjson.loads))["id"]
        messages = f"{chatkeep_url}/api/conversations/{conversation}/messages"
        for stream in (False, True):
            kind = "stream" if stream else "json"
            for target, base in (("direct", direct_url), ("chatkeep", chatkeep_url)):
                found[f"passthrough-{kind}-{target}"] = await _problem(
                    session, f"{base}/v1/chat/completions", {**completion, "stream": stream}, stream
                )
            found[f"durable-{kind}"] = await _problem(
                session, messages, {"content": "check", "stream": stream}, stream
            )
    return found


def check_replies(direct_url: str, chatkeep_url: str, *, model: str) -> dict[str, str | None]:
    """Read one whole answer of every kind measured, so that no case times fast failures.

    A load generator counts a ``200`` whose body is cut or empty as a success; this reads
    each kind of answer to its end and says what is wrong with it, keyed
    ``passthrough-{json|stream}-{direct|chatkeep}`` and ``durable-{json|stream}``.
    """
    return asyncio.run(_check(direct_url, chatkeep_url, model))


def warm_up(base_url: str, *, model: str, requests: int = 10) -> None:
    """A few requests of every kind measured (passthrough and durable, streamed and not).

    Only against chatkeep: the fake backend has no conversations to warm.
    """
    asyncio.run(_warm_up(base_url, model, requests))
