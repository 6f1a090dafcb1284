"""FastAPI dependencies shared by every router: the store, the settings, the caller, a body.

Routes declare what they need with the ``Annotated`` aliases (``store: StoreDep``) and call
``principal.check(project_id)`` before touching a project. The dependencies are ``async``:
they only read app state (and a key file's ``stat``), and FastAPI runs a plain ``def``
dependency on a worker thread, a thread wake-up per dependency per request. Routes that
take big bodies read them with :func:`json_body`, which validates off the event loop
(:mod:`service.body`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import iter_route_contexts
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel

from service.auth import ApiKey, KeyStore
from service.body import BodyStream, gc_paused, validate_json
from service.settings import Settings

if TYPE_CHECKING:
    from service.store import CallStore

M = TypeVar("M", bound=BaseModel)
REALM = "trace-usage"
PAGE_HEADER = "x-requested-with"  # sent by the trace-view page with every request
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


async def get_store(request: Request) -> CallStore:
    """The app's store (opened by ``create_app``)."""
    return request.app.state.store


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


async def get_keys(request: Request) -> KeyStore:
    """The app's API key file."""
    return request.app.state.keys


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    keys: Annotated[KeyStore, Depends(get_keys)],
) -> Principal:
    """The caller named by HTTP Basic credentials (username, API key), or 401."""
    key = None
    if credentials is not None:
        key = keys.authenticate(credentials.username, credentials.password)
    if key is None:
        # no Basic challenge for the page's own requests (X-Requested-With): the browser
        # would open its own sign-in dialog and hold the request, where the page shows why
        page = PAGE_HEADER in request.headers
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid credentials: use HTTP Basic auth with your user and API key",
            headers=None if page else {"WWW-Authenticate": f'Basic realm="{REALM}"'},
        )
    request.state.user = key.user
    return Principal(user=key.user, key=key, state=request.state)


StoreDep = Annotated["CallStore", Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def json_body(model: type[M], *, stream: bool = False) -> Any:
    """``Depends`` on the request body validated as ``model`` on a worker thread, or with
    ``stream`` as a :class:`service.body.BodyStream` the (sync) route reads chunk by chunk.

    FastAPI validates a declared body on the event loop: a 30 MB batch held every other
    request (``/health`` too) for seconds. This authenticates the caller, reads the bytes
    (the body the middleware buffered, not a copy of it: ``request.body()`` joins it with
    an empty chunk), then parses and validates them off the loop, in pieces
    (:mod:`service.body`). :func:`document_bodies` puts ``model`` back into the OpenAPI
    document as the route's request body.
    """

    async def body(request: Request, _: PrincipalDep) -> AsyncIterator[Any]:  # auth first
        chunks = [chunk async for chunk in request.stream() if chunk]
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        del chunks
        with gc_paused(len(raw)):  # until the route is done with what the body became
            if stream:
                parsed: Any = BodyStream(model, raw)
            else:
                parsed = await run_in_threadpool(validate_json, model, raw)
            del raw  # a stream lets go of the body once it is read
            yield parsed

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
