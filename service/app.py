"""``create_app(settings)``: the store, the routers, the middleware and the one error mapping.

Every error leaves as ``{"reason": ..., "path": ...}`` (Weave's client shows ``reason``):
engine errors by the class -> status table below; a body that cannot be read (malformed,
too deep, not UTF-8, bad gzip) or that fails validation as 422, FastAPI's (and so Weave's)
code for malformed JSON, with every error named; HTTP errors with their status; anything
else as a bare 500 whose traceback stays in the server log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.errors import (
    AnswerTooLargeError,
    InputDataError,
    InvalidRequestError,
    NotFoundError,
    QueryParseError,
    QueryTooComplexError,
    TraceUsageError,
    UnsupportedQueryError,
)
from service import metrics as metrics_routes
from service.auth import KeyStore
from service.deps import document_bodies
from service.metrics import Metrics
from service.middleware import AccessMiddleware, BodyLimitMiddleware, ContentTypeMiddleware
from service.routes import calls, costs, health, ingest, objects, otel, pages, usage
from service.routes.usage import AnswerCache
from service.settings import Settings
from service.store_errors import StoreError, StoreFullError, StoreOpenError, StoreUnavailableError

if TYPE_CHECKING:
    from service.store import CallStore

STATUS: dict[type[TraceUsageError], int] = {
    QueryParseError: 400,
    UnsupportedQueryError: 400,
    QueryTooComplexError: 400,
    InvalidRequestError: 400,
    InputDataError: 422,
    NotFoundError: 404,
    AnswerTooLargeError: 413,  # Weave's RequestTooLarge: never a partial answer
}
# a store that cannot serve: 503, so that an orchestrator restarts it; a full disk: 507
STORE_STATUS: dict[type[StoreError], int] = {
    StoreFullError: 507,
    StoreOpenError: 503,
    StoreUnavailableError: 503,
}
GZIP_MIN_BYTES = 1024
# bodies other than JSON that some routes read (ContentTypeMiddleware answers 415 to others)
OTHER_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "/files/create": ("multipart/form-data",),
    "/otel/": ("application/x-protobuf",),
}
LISTED_ERRORS = 50  # validation errors named in one 422
FASTAPI_PARSE_ERROR = "There was an error parsing the body"


class ErrorRes(BaseModel):
    """Every error answer: why, and where in the request when that is known."""

    reason: str
    path: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorRes, "description": text}
    for code, text in (
        (400, "Invalid query or request value"),
        (401, "Missing or invalid credentials"),
        (403, "Key not granted the project"),
        (413, "Request body too large"),
        (415, "Body not JSON, or an unsupported Content-Encoding"),
        (422, "Malformed JSON or invalid body"),
        (503, "Store unusable (reopening, or its file damaged)"),
        (507, "Disk full: the write was not stored"),
    )
}


def status_of(exc: TraceUsageError) -> int:
    """The HTTP status of an engine error: its nearest class in :data:`STATUS`, else 400."""
    return next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 400)


def _error(
    status: int, reason: str, path: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    # ASCII JSON: a reason that quotes request text always encodes, lone surrogates too
    body = json.dumps({"reason": reason, "path": path}).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def _on_engine_error(request: Request, exc: TraceUsageError) -> Response:
    return _error(status_of(exc), exc.reason, exc.path)


def _unreadable(cause: BaseException | None) -> str:
    """Why FastAPI could not parse a body (it hides the cause behind one 400 message)."""
    if isinstance(cause, RecursionError):
        return "malformed JSON body: nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return f"malformed JSON body: not valid UTF-8 ({cause.reason} at byte {cause.start})"
    return f"malformed JSON body: {cause}" if cause else "malformed JSON body"


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 400 and exc.detail == FASTAPI_PARSE_ERROR:
        return _error(422, _unreadable(exc.__cause__))
    return _error(exc.status_code, str(exc.detail), headers=exc.headers)


def _where(error: Any) -> str | None:
    return ".".join(str(p) for p in error["loc"] if p != "body") or None


async def _on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = list(exc.errors()) or [{"loc": (), "msg": "invalid request"}]
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "invalid JSON")
        char = first["loc"][-1] if first["loc"] else None
        at = f" at char {char}" if isinstance(char, int) else ""
        return _error(422, f"malformed JSON body: {detail}{at}")
    if len(errors) == 1:
        return _error(422, first["msg"], _where(first))
    named = "; ".join(f"{_where(e) or 'body'}: {e['msg']}" for e in errors[:LISTED_ERRORS])
    more = f"; and {len(errors) - LISTED_ERRORS} more" if len(errors) > LISTED_ERRORS else ""
    return _error(422, f"{len(errors)} errors: {named}{more}", _where(first))


async def _on_store_error(request: Request, exc: StoreError) -> Response:
    status = next((STORE_STATUS[c] for c in type(exc).__mro__ if c in STORE_STATUS), 503)
    return _error(status, exc.reason)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after this answer, so the server logs the traceback once
    return _error(500, "internal server error")


def create_app(settings: Settings | None = None, *, store: CallStore | None = None) -> FastAPI:
    """The service. Opens ``<data_dir>/trace_usage.duckdb`` unless a ``store`` is given.

    The store is closed when the app shuts down.
    """
    settings = settings or Settings()
    if store is None:
        from service.store import CallStore

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = CallStore(settings.db_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="trace-usage",
        summary="Weave's /trace/usage and /calls/usage over an embedded store.",
        lifespan=lifespan,
        docs_url=None,  # served offline by service.routes.pages
        redoc_url=None,
    )
    app.openapi = document_bodies(app)  # type: ignore[method-assign]
    app.state.settings = settings
    app.state.store = store
    app.state.keys = KeyStore(settings.keys_path)
    app.state.metrics = Metrics(store.stats)
    app.state.usage_cache = AnswerCache(settings.cache_size)
    # one answer per CPU at a time: more would share the cores (and the GIL) and all be late
    app.state.compute_slots = anyio.CapacityLimiter(settings.compute_threads)
    app.include_router(health.router)
    for module in (usage, calls, ingest, otel, costs, objects, metrics_routes):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    pages.install(app)
    handlers: dict[Any, Any] = {
        TraceUsageError: _on_engine_error,
        StoreError: _on_store_error,
        StarletteHTTPException: _on_http_error,
        RequestValidationError: _on_validation_error,
        Exception: _on_unexpected,
    }
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)
    # outermost last: log every request, refuse a wrong media type before reading the body,
    # then read (and gunzip) it within the limit
    # level 1: a 100,000-call answer (~50 MB) compresses ~7x faster than at Starlette's 9
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES, compresslevel=1)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ContentTypeMiddleware, accepted=OTHER_MEDIA_TYPES)
    app.add_middleware(AccessMiddleware, metrics=app.state.metrics)
    return app
