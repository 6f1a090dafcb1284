"""FastAPI dependencies shared by every router: the store, the settings, the caller, a body.

Routes declare what they need with the ``Annotated`` aliases (``store: StoreDep``) and call
``principal.check(project_id)`` before touching a project. Routes that take big bodies read
them with :func:`json_body`, which validates off the event loop.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, TypeAdapter, ValidationError

from service.auth import ApiKey, KeyStore
from service.settings import Settings

if TYPE_CHECKING:
    from service.store import CallStore

M = TypeVar("M", bound=BaseModel)
REALM = "trace-usage"
CHUNK_ITEMS = 256  # list items of a body validated per pydantic call
_basic = HTTPBasic(auto_error=False, realm=REALM, description="Username and API key.")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller; ``check`` guards each project a request names."""

    user: str
    key: ApiKey
    state: Any = None

    def check(self, project_id: str) -> None:
        """Raise 403 unless the caller's key is granted ``project_id``."""
        if self.state is not None:
            self.state.project_id = project_id
        if not self.key.grants(project_id):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"key {self.key.id} of user {self.user!r} is not granted project {project_id!r}",
            )


def get_store(request: Request) -> CallStore:
    """The app's store (opened by ``create_app``)."""
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_keys(request: Request) -> KeyStore:
    """The app's API key file."""
    return request.app.state.keys


def get_principal(
    request: Request,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    keys: Annotated[KeyStore, Depends(get_keys)],
) -> Principal:
    """The caller named by HTTP Basic credentials (username, API key), or 401."""
    key = None
    if credentials is not None:
        key = keys.authenticate(credentials.username, credentials.password)
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid credentials: use HTTP Basic auth with your user and API key",
            headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
        )
    request.state.user = key.user
    return Principal(user=key.user, key=key, state=request.state)


StoreDep = Annotated["CallStore", Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _surrogate_at(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where the first string (key or value) holding a lone surrogate is, if any."""
    if isinstance(value, str):
        return None if _encodes(value) else path
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and not _encodes(key):
            return (*path, key)
        found = _surrogate_at(item, (*path, key))
        if found is not None:
            return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _malformed(raw: bytes, err: json.JSONDecodeError) -> RequestValidationError:
    """The 422 of an unreadable body; a lone surrogate, which the parser refuses without
    saying where, is looked for again (only then) to name its field."""
    try:
        path = _surrogate_at(json.loads(raw))
    except (ValueError, RecursionError):
        path = None
    if path is not None:
        msg = "Value error, a lone surrogate is not valid text"
        return RequestValidationError([{"type": "value_error", "loc": ("body", *path), "msg": msg}])
    detail = f"{err.msg} at line {err.lineno} column {err.colno}"
    return RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": detail,
                                    "ctx": {"error": detail}}])  # fmt: skip


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def _validate_lists(model: type[BaseModel], data: dict[str, Any]) -> list[Any]:
    """Validate ``data``'s list fields in place, :data:`CHUNK_ITEMS` items per call.

    One pydantic call holds the GIL throughout, so a 30 MB batch validated at once held
    the event loop for seconds even from a worker thread; between chunks other requests
    run. Each raw chunk is released once validated. Returns the errors, located.
    """
    errors: list[Any] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        items = data.get(key)
        if typing.get_origin(field.annotation) is not list or not isinstance(items, list):
            continue
        adapter, done = _adapter(field.annotation), []
        for start in range(0, len(items), CHUNK_ITEMS):
            chunk = items[start : start + CHUNK_ITEMS]
            items[start : start + CHUNK_ITEMS] = [None] * len(chunk)
            try:
                done.extend(adapter.validate_python(chunk))
            except ValidationError as err:
                errors += [
                    {**e, "loc": ("body", key, start + e["loc"][0], *e["loc"][1:])}
                    for e in err.errors(include_url=False, include_input=False)
                ]
        data[key] = done
    return errors


def validate_json(model: type[M], raw: bytes) -> M:
    """``raw`` parsed once and validated as ``model``, or a ``RequestValidationError``."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise _malformed(raw, err) from None
    errors = _validate_lists(model, data) if isinstance(data, dict) else []
    if errors:
        raise RequestValidationError(errors)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        located = err.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in located]) from None


def json_body(model: type[M]) -> Any:
    """``Depends`` on the request body validated as ``model`` on a worker thread.

    FastAPI validates a declared body on the event loop: a 30 MB batch held every other
    request (``/health`` too) for seconds. This authenticates the caller, reads the bytes,
    then validates them once, straight from bytes, off the loop. :func:`document_bodies`
    puts ``model`` back into the OpenAPI document as the route's request body.
    """

    async def body(request: Request, _: PrincipalDep) -> M:  # who asks, before any parse
        return await run_in_threadpool(validate_json, model, await request.body())

    body.body_model = model  # type: ignore[attr-defined]
    return Depends(body)


def _body_models(app: FastAPI) -> Iterator[tuple[Any, type[BaseModel]]]:
    """``(route, model)`` for every route reading its body with :func:`json_body`."""
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        for dep in dependant.dependencies if dependant is not None else ():
            model = getattr(dep.call, "body_model", None)
            if model is not None:
                yield route, model


def document_bodies(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with the request bodies read by :func:`json_body` documented as if
    FastAPI had parsed them (the model's schema, under its own name)."""

    def openapi() -> dict[str, Any]:
        schema = FastAPI.openapi(app)  # cached by FastAPI; completing it again is a no-op
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for route, model in _body_models(app):
            spec = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in spec.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components.setdefault(model.__name__, spec)
            ref = {"$ref": f"#/components/schemas/{model.__name__}"}
            for method in route.methods:
                operation = schema["paths"][route.path_format][method.lower()]
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": ref}},
                }
        return schema

    return openapi
