"""Small twisted.web helpers the console's resources share: answering
from a coroutine, JSON bodies, HTTP errors, and who the request is from."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server

log = Logger()

JSON_TYPE = b"application/json; charset=utf-8"
# Limits live in phaserlink/limits.py (one place per side); the names stay importable here.
from phaserlink.limits import (  # noqa: E402
    MAX_BODY,
)


class HTTPError(Exception):
    """Answer with *code* and a JSON (or page) body saying *message*."""

    def __init__(self, code: int, message: str, extra: dict[str, Any] | None = None,
                 headers: dict[bytes, bytes] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}


def client_host(request) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", "") or ""


def write_json(request, code: int, body: Any) -> None:
    data = json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", str(len(data)).encode())
    request.write(data)


def security_headers(request) -> None:
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"referrer-policy", b"same-origin")


def answer(request, handler: Callable[[], Awaitable[None]],
           on_error: Callable[[Any, HTTPError], None]) -> int:
    """Run *handler* (which writes the response) and finish the request;
    an HTTPError goes to *on_error*, anything else is a 500 and logged.
    A client that hangs up does not cut an operation short: what was
    asked is done (and on disk) whether or not anybody reads the answer."""
    finished = []
    request.notifyFinish().addBoth(lambda _: finished.append(True))
    security_headers(request)

    def done(_):
        if not finished:
            request.finish()

    def failed(failure):
        if finished:
            return
        if failure.check(HTTPError):
            on_error(request, failure.value)
        else:
            log.failure("console: {method} {uri} failed", failure,
                        method=request.method.decode(), uri=request.uri.decode(errors="replace"))
            on_error(request, HTTPError(500, "internal error (see the appliance's log)"))
        if not finished:
            request.finish()

    defer.ensureDeferred(handler()).addCallbacks(done, failed)
    return server.NOT_DONE_YET


def json_error(request, error: HTTPError) -> None:
    for name, value in error.headers.items():
        request.setHeader(name, value)
    write_json(request, error.code, {"error": error.message, **error.extra})
