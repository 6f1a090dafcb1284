"""Pure ASGI middleware: body media types, the body limit and gzip, the access log / metrics.

Pure ASGI rather than ``BaseHTTPMiddleware`` so that bodies are never buffered twice and an
oversize body is refused while it streams in, before it has been read whole.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import anyio
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.models import UnknownFields, collect_unknown_fields
from service.metrics import Metrics

ACCESS_LOGGER = "trace_usage.access"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON_MEDIA = "application/json"
WARNED_FIELDS = 20  # unknown fields named in a Warning header; the log line has all


async def send_error(
    send: Send, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A JSON error response in the service's one error shape."""
    body = orjson.dumps({"reason": reason, "path": None})
    head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope["headers"] if k == name), None)


def media_type(content_type: bytes) -> str:
    """``type/subtype`` of a Content-Type value, lower case, without parameters.

    Examples
    --------
    >>> media_type(b"Application/JSON; charset=utf-8")
    'application/json'
    """
    return content_type.split(b";", 1)[0].strip().decode("latin-1").lower()


def is_json(media: str) -> bool:
    """JSON, or a structured ``+json`` type (RFC 6839)."""
    return media == JSON_MEDIA or (media.startswith("application/") and media.endswith("+json"))


class ContentTypeMiddleware:
    """415 for request bodies that are not JSON, unless their route takes that type.

    Bodies with no Content-Type (Weave's client sends none) are read as JSON. A form or
    ``text/plain`` body is refused rather than read as JSON: those are the types a
    cross-origin page may post with the browser's stored credentials without asking first.
    ``accepted`` maps a path (or a prefix ending in ``/``) to the other media types its
    routes read, e.g. multipart for ``/files/create``, protobuf under ``/otel/``.
    """

    def __init__(self, app: ASGIApp, accepted: Mapping[str, tuple[str, ...]]) -> None:
        self.app = app
        self.accepted = accepted

    def _allowed(self, path: str) -> tuple[str, ...]:
        return next(
            (
                types
                for where, types in self.accepted.items()
                if path == where or (where.endswith("/") and path.startswith(where))
            ),
            (),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            kind = _header(scope, b"content-type")
            media = media_type(kind) if kind else ""
            if media and not is_json(media) and media not in self._allowed(scope["path"]):
                others = "".join(f", {t}" for t in self._allowed(scope["path"]))
                reason = (
                    f"unsupported Content-Type {media!r}: send {JSON_MEDIA}{others}, "
                    "or no Content-Type"
                )
                await send_error(send, 415, reason)
                return
            if not media:  # FastAPI reads only bodies labelled JSON as JSON
                headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope["headers"] = [*headers, (b"content-type", JSON_MEDIA.encode())]
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``: by ``Content-Length``, else while counting chunks.

    A ``Content-Encoding: gzip`` body is decompressed here (on a worker thread), and its
    decompressed size counts against the same limit, so a gzip bomb is a 413 too.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body larger than {self.max_bytes} bytes"
        encoding = (_header(scope, b"content-encoding") or b"identity").strip().lower()
        if encoding not in (b"identity", b"gzip", b"x-gzip"):
            reason = f"unsupported Content-Encoding {encoding.decode('latin-1')!r}: use gzip"
            await send_error(send, 415, reason, [(b"accept-encoding", b"gzip")])
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await send_error(send, 400, "invalid Content-Length header")
                return
            if int(declared) > self.max_bytes:
                await send_error(send, 413, too_large)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if encoding != b"identity":
            try:
                body = await anyio.to_thread.run_sync(gunzip, body, self.max_bytes)
            except ValueError as err:
                await send_error(send, 413 if isinstance(err, BodyTooLarge) else 422, str(err))
                return
            headers = [
                (k, v)
                for k, v in scope["headers"]
                if k not in (b"content-encoding", b"content-length")
            ]
            scope["headers"] = [*headers, (b"content-length", b"%d" % len(body))]
        replay = _replay(body, receive)
        del body, chunks  # the route holds the body once it has read it: no second copy here
        await self.app(scope, replay, send)


class BodyTooLarge(ValueError):
    """A compressed body that decompresses past the limit."""


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """``data`` gunzipped (several members allowed); never more than ``max_bytes`` out.

    Examples
    --------
    >>> import gzip
    >>> gunzip(gzip.compress(b"ab") + gzip.compress(b"c"), 3)
    b'abc'
    >>> gunzip(gzip.compress(b"abcd"), 3)
    Traceback (most recent call last):
    ...
    service.middleware.BodyTooLarge: gzip request body decompresses to more than 3 bytes
    """
    out: list[bytes] = []
    size = 0
    while data:
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = inflate.decompress(data, max_bytes + 1 - size)
        except zlib.error as err:
            raise ValueError(f"request body is not valid gzip: {err}") from None
        size += len(part)
        if size > max_bytes:
            raise BodyTooLarge(f"gzip request body decompresses to more than {max_bytes} bytes")
        if not inflate.eof:
            raise ValueError("request body is not valid gzip: it ends in the middle of a stream")
        out.append(part)
        data = inflate.unused_data
    return b"".join(out)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then defers to the server."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def warning_header(paths: list[str]) -> bytes:
    """RFC 7234 ``Warning`` values (code 299, "miscellaneous persistent warning") naming
    ignored fields; names are JSON-escaped, so any text fits a header.

    Examples
    --------
    >>> warning_header(["filter.trace_id", 'a"b'])
    b'299 - "unknown field filter.trace_id ignored", 299 - "unknown field a\\\\"b ignored"'
    """
    shown = [f'299 - "unknown field {json.dumps(p)[1:-1]} ignored"' for p in paths[:WARNED_FIELDS]]
    if len(paths) > WARNED_FIELDS:
        shown.append(f'299 - "{len(paths) - WARNED_FIELDS} more unknown fields ignored"')
    return ", ".join(shown).encode("ascii")


def log_text(line: dict[str, Any]) -> str:
    """One JSON log line; text that UTF-8 cannot hold (lone surrogates) is escaped, not lost."""
    try:
        return orjson.dumps(line).decode()
    except orjson.JSONEncodeError:
        return json.dumps(line)


class AccessMiddleware:
    """One JSON log line and one metrics observation per HTTP request.

    Routes add context through ``request.state``: ``project_id`` (set by
    ``Principal.check``), ``user`` and ``calls_selected``. Unknown request fields (ignored,
    as by Weave) are named in a ``Warning`` header and in the line. Bodies, headers and
    keys are never logged.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500
        with collect_unknown_fields() as unknown:

            async def observed(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    if unknown.paths and status != 422:  # a 422's list may be partial
                        warning = (b"warning", warning_header(unknown.paths))
                        message = {**message, "headers": [*message.get("headers", []), warning]}
                await send(message)

            try:
                await self.app(scope, receive, observed)
            finally:
                self._record(scope, state, status, time.perf_counter() - start, unknown)

    def _record(
        self,
        scope: Scope,
        state: dict[str, Any],
        status: int,
        seconds: float,
        unknown: UnknownFields,
    ) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        calls = state.get("calls_selected")
        self.metrics.observe(scope["method"], route, status, seconds, calls)
        line = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": "request",
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "project": state.get("project_id"),
            "user": state.get("user"),
            "calls_selected": calls,
            "unknown_fields": unknown.paths or None,
        }
        self.log.info(log_text(line))
