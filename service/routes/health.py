"""Liveness and store health (no auth), and the version handshake of ``weave.init``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter
from pydantic import BaseModel

from service.deps import PrincipalDep, StoreDep

router = APIRouter(tags=["service"])


class HealthRes(BaseModel):
    status: str = "ok"


class ServerInfoRes(BaseModel):
    """As weave 0.53.12's ``service_interface.ServerInfoRes``."""

    min_required_weave_python_version: str
    trace_server_version: str | None = None


def _version() -> str | None:
    try:
        return version("trace-usage")
    except PackageNotFoundError:
        return None


@router.get("/health", responses={503: {"description": "The store cannot serve"}})
def health(store: StoreDep) -> HealthRes:
    """Answers without credentials, for load balancers and ``make run`` readiness checks:
    503 with the reason while the store cannot serve (its database invalidated and not yet
    reopened, or its file damaged), so that an orchestrator restarts the server."""
    store.check()
    return HealthRes()


@router.get("/server_info")
def server_info(_: PrincipalDep) -> ServerInfoRes:
    """Any Weave client version may talk to this server."""
    return ServerInfoRes(min_required_weave_python_version="0.0.0", trace_server_version=_version())
