"""FastAPI dependencies shared by every router: the store, the settings, the caller.

Routes declare what they need with the ``Annotated`` aliases (``store: StoreDep``) and call
``principal.check(project_id)`` before touching a project.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from service.auth import ApiKey, KeyStore
from service.settings import Settings

if TYPE_CHECKING:
    from service.store import CallStore

REALM = "trace-usage"
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
