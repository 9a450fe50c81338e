"""Every error leaves as JSON ``{"error": {"code", "message"}}``, never as a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from chatkeep.errors import ChatkeepError, Overloaded
from chatkeep.logs import truncate

logger = logging.getLogger("chatkeep.api")

#: Error messages may quote a backend's answer; a log line keeps this much of one.
LOGGED_MESSAGE_CHARS = 300

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """The one shape of an error answer."""
    return JSONResponse({"error": {"code": code, "message": message}, **extra}, status)


def chatkeep_error_response(exc: ChatkeepError, **extra: Any) -> JSONResponse:
    response = error_response(exc.status_code, exc.code, exc.message, **extra)
    if isinstance(exc, Overloaded):
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


def describe_validation_errors(errors: Any) -> str:
    """One readable sentence per problem: ``body.content: Field required``."""
    parts = []
    for error in errors:
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def on_chatkeep_error(request: Request, exc: Exception) -> Response:
    """A `ChatkeepError` as its JSON answer; server-side ones are logged (rate-limited)."""
    assert isinstance(exc, ChatkeepError)
    if exc.status_code >= 500:
        # Same failure, same message: the repeat filter folds a flood into a few lines.
        logger.warning(
            "%s: %s",
            exc.code,
            truncate(exc.message, LOGGED_MESSAGE_CHARS),
            extra={"path": request.url.path, "status": exc.status_code},
        )
    return chatkeep_error_response(exc)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    """A body that failed validation: ``422`` naming each problem."""
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", describe_validation_errors(exc.errors()))


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's HTTP errors (unknown route, wrong method, body too large) as JSON."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        # FastAPI's answer to a JSON body nested past its parser's stack.
        return error_response(422, "invalid_request", "body: JSON nested too deep to read")
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI's answer to a JSON body that is not UTF-8.
        return error_response(422, "invalid_request", f"body: not UTF-8 ({exc.__cause__.reason})")
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        # Python's JSON reader refuses, e.g., an integer of thousands of digits.
        reason = str(exc.__cause__).split(";")[0]
        return error_response(422, "invalid_request", f"body: cannot be read ({reason})")
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    return error_response(exc.status_code, code, message)


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback, answered without one."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Map chatkeep, validation, HTTP and unexpected errors to JSON answers."""
    app.add_exception_handler(ChatkeepError, on_chatkeep_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
