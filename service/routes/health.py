"""Liveness (no auth) and the version handshake Weave clients make at ``weave.init``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter
from pydantic import BaseModel

from service.deps import PrincipalDep

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


@router.get("/health")
def health() -> HealthRes:
    """Answers without credentials, for load balancers and ``make run`` readiness checks."""
    return HealthRes()


@router.get("/server_info")
def server_info(_: PrincipalDep) -> ServerInfoRes:
    """Any Weave client version may talk to this server."""
    return ServerInfoRes(min_required_weave_python_version="0.0.0", trace_server_version=_version())
