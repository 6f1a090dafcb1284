"""Every route of the app guards its project: a route added later cannot forget
``principal.check`` (issue 18, finding 9).

The test walks ``app.routes``. A project-scoped route is found by its OpenAPI request (a
``project_id`` anywhere in the body, or ``{entity}/{project}`` in the path) and called
with a minimal body built from that schema naming a project the key is not granted: it
must answer 403, and 401 without credentials or with a wrong key. Routes that name no
project must be listed below with the reason, so a new one is a decision, not an accident.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import KeyStore
from service.settings import Settings

GRANTED = "entity/*"
UNGRANTED = "other/project"
T0 = "2025-01-01T00:00:00Z"

PUBLIC = {
    "/health": "liveness for load balancers",
    "/openapi.json": "the API's description",
    "/docs": "the API's description",
    "/": "the browser page (it signs in with a key, then calls the API)",
}
KEY_ONLY = {
    "/server_info": "Weave's version handshake, no project data",
    "/metrics": "store-wide counts, for keys granted '*' only",
    "/projects": "lists the projects the caller's key is granted",
}
# routes whose project is not in their OpenAPI request: how to name one
PROJECT_ELSEWHERE = {
    "/otel/v1/traces": lambda project: {
        "content": b"",
        "headers": {"project_id": project, "content-type": "application/x-protobuf"},
    },
}


def _api_routes() -> list[tuple[str, str]]:
    settings = Settings(data_dir=Path("/nonexistent"))
    app = create_app(settings, store=_NoStore())  # type: ignore[arg-type]
    found = []
    for route in iter_route_contexts(app.routes):
        for method in sorted((route.methods or set()) - {"HEAD"}):
            found.append((method, route.path_format))
    return found


class _NoStore:
    """Routes must refuse before they touch the store: any use of it fails the test."""

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was used ({name}) before the project was checked")


ROUTES = _api_routes()


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("auth"))
    _, secret = KeyStore(settings.keys_path).add("ada", [GRANTED])
    app = create_app(settings, store=_NoStore())  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, ("ada", secret)


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def minimal(spec: dict[str, Any], schema: dict[str, Any], project: str, name: str = "") -> Any:
    """The smallest value ``schema`` accepts, every ``project_id`` set to ``project`` and
    every list given one item (an empty batch would name no project)."""
    schema = _resolve(spec, schema)
    if name == "project_id":
        return project
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        chosen = next(o for o in options if _resolve(spec, o).get("type") != "null")
        return minimal(spec, chosen, project, name)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        wanted = {*schema.get("required", ()), *({"project_id"} & set(props))}
        return {k: minimal(spec, props[k], project, k) for k in sorted(wanted)}
    if kind == "array":
        return [minimal(spec, schema.get("items", {}), project, name)]
    if kind == "string":
        return T0 if schema.get("format") == "date-time" else "x"
    return {"integer": 0, "number": 0, "boolean": False}.get(kind)


def names_project(
    spec: dict[str, Any], schema: dict[str, Any], seen: frozenset = frozenset()
) -> bool:
    """Whether a request of ``schema`` can carry a ``project_id`` somewhere."""
    ref = schema.get("$ref")
    if ref is not None:
        if ref in seen:
            return False
        seen = seen | {ref}
    schema = _resolve(spec, schema)
    if "project_id" in schema.get("properties", {}):
        return True
    nested = [
        *schema.get("properties", {}).values(),
        *schema.get("anyOf", ()),
        *schema.get("oneOf", ()),
        *([schema["items"]] if "items" in schema else []),
    ]
    return any(names_project(spec, s, seen) for s in nested)


def request_naming(spec: dict[str, Any], method: str, path: str, project: str) -> dict | None:
    """httpx arguments of a request to ``path`` about ``project``; None if it names none."""
    if path in PROJECT_ELSEWHERE:
        return {"url": path, **PROJECT_ELSEWHERE[path](project)}
    operation = spec["paths"].get(path, {}).get(method.lower(), {})
    entity, name = project.split("/")
    url = path.replace("{entity}", entity).replace("{project}", name)
    in_path = "{entity}" in path
    content = operation.get("requestBody", {}).get("content", {})
    if "multipart/form-data" in content:
        schema = _resolve(spec, content["multipart/form-data"]["schema"])
        if not names_project(spec, schema):
            return None
        fields = {k: minimal(spec, v, project, k) for k, v in schema["properties"].items()}
        files = {
            k: ("f", b"x")
            for k, v in schema["properties"].items()
            if v.get("format") == "binary" or "contentMediaType" in v
        }
        data = {k: v for k, v in fields.items() if k not in files and v is not None}
        return {"url": url, "data": data, "files": files}
    if "application/json" in content:
        schema = content["application/json"]["schema"]
        if not (in_path or names_project(spec, schema)):
            return None
        return {"url": url, "json": minimal(spec, schema, project)}
    return {"url": url} if in_path else None


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_route_guards_its_project(app_client: Any, method: str, path: str) -> None:
    client, auth = app_client
    if path in PUBLIC or path.endswith("/{path}"):  # static files are mounted, public
        return
    spec = client.get("/openapi.json").json()
    req = request_naming(spec, method, path, UNGRANTED) or {"url": path}
    without = client.request(method, **req)
    assert without.status_code == 401, f"{method} {path} without credentials: {without.text}"
    wrong = client.request(method, **req, auth=(auth[0], "tu_not-a-key"))
    assert wrong.status_code == 401, f"{method} {path} with a wrong key: {wrong.text}"
    if path in KEY_ONLY:
        return
    assert request_naming(spec, method, path, UNGRANTED) is not None, (
        f"{method} {path} names no project: if that is right, list it in KEY_ONLY with why"
    )
    denied = client.request(method, **req, auth=auth)
    assert denied.status_code == 403, f"{method} {path} for {UNGRANTED}: {denied.text}"
    assert UNGRANTED in denied.json()["reason"]


def test_the_walk_finds_the_routes_it_must_guard() -> None:
    """The walk sees every router (FastAPI keeps included routers lazily)."""
    paths = {p for _, p in ROUTES}
    guarded = {"/trace/usage", "/calls/usage", "/call/upsert_batch", "/cost/create", "/obj/create"}
    assert {*guarded, "/files/create", "/v2/{entity}/{project}/calls/complete"} <= paths
    assert {*PUBLIC, *KEY_ONLY, *PROJECT_ELSEWHERE} - {"/"} <= paths


def test_minimal_bodies_name_the_project_everywhere() -> None:
    item = {
        "type": "object",
        "properties": {"project_id": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["n"],
    }
    spec = {"components": {"schemas": {"Item": item}}}
    batch = {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}
    schema = {"type": "object", "required": ["batch"], "properties": {"batch": batch}}
    assert minimal(spec, schema, "e/p") == {"batch": [{"n": 0, "project_id": "e/p"}]}
    assert names_project(spec, schema)
    assert not names_project(spec, {"type": "object", "properties": {"n": {"type": "integer"}}})
