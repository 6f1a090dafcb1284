"""API keys: created once, stored hashed in ``<data_dir>/keys.json``, checked in constant time.

A key is 256 random bits, so a single SHA-256 is enough to store it (nothing to brute-force,
unlike a password); the plain key is shown once, by ``trace-usage keys add``. Each key belongs
to a user and is granted project ids or ``fnmatch`` patterns (``entity/*``). The file is a
plain JSON document so that ``keys add`` works while a server runs: servers reload it when it
changes.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import fnmatch
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

KEY_PREFIX = "tu_"
# W&B clients (weave >= 0.53.12's ``ApiKeyCredentials``) send ``api:<key>``: the key alone
# names its user, as on wandb.ai
ANY_USER = "api"
ALL_PROJECTS = "*"


@dataclass(frozen=True)
class ApiKey:
    """One stored key; ``sha256`` is the hex digest of the plain key."""

    id: str
    user: str
    projects: tuple[str, ...]
    sha256: str
    created_at: str

    def grants(self, project_id: str) -> bool:
        """Whether one of the key's project patterns matches ``project_id``."""
        return any(fnmatch.fnmatchcase(project_id, p) for p in self.projects)

    @property
    def grants_all(self) -> bool:
        """Whether the key is granted every project (the pattern ``*``): an operator's key."""
        return ALL_PROJECTS in self.projects


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _check_user(user: str) -> None:
    """Refuse a user name that could never log in with HTTP Basic auth (a colon ends the
    user part) or that :data:`ANY_USER` already means."""
    if not user or user != user.strip():
        raise ValueError(f"user {user!r}: must be non-empty, without surrounding spaces")
    if ":" in user or not user.isprintable():
        raise ValueError(
            f"user {user!r}: a colon or control character cannot be sent in Basic auth"
        )
    if user == ANY_USER:
        raise ValueError(
            f"user {ANY_USER!r} is reserved: W&B clients send '{ANY_USER}:<key>' to mean the "
            "key's own user; pick another name (any key also logs in as 'api')"
        )


def _check_projects(projects: list[str]) -> None:
    """Refuse an empty grant, or a pattern that names no ``entity/project``."""
    if not projects:
        raise ValueError("a key needs at least one project")
    for project in projects:
        if not project or project != project.strip() or not project.isprintable():
            raise ValueError(f"project {project!r}: must be non-empty, without spaces around")
        if "/" not in project and not any(c in project for c in "*?["):
            raise ValueError(
                f"project {project!r}: not an entity/project id or a pattern such as '{project}/*'"
            )


class KeyStore:
    """The keys file of a data directory.

    Examples
    --------
    >>> import tempfile
    >>> keys = KeyStore(Path(tempfile.mkdtemp()) / "keys.json")
    >>> record, secret = keys.add("ada", ["entity/*"])
    >>> keys.authenticate("ada", secret) == record, keys.authenticate("ada", "nope")
    (True, None)
    >>> record.grants("entity/project"), record.grants("other/project")
    (True, False)
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None
        self._keys: tuple[ApiKey, ...] = ()

    def keys(self) -> tuple[ApiKey, ...]:
        """Every key, re-read whenever the file changed."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._keys = None, ()
            return self._keys
        if self._seen != (st.st_mtime_ns, st.st_size):
            self._keys = self._read()
            self._seen = (st.st_mtime_ns, st.st_size)
        return self._keys

    def authenticate(self, user: str, key: str) -> ApiKey | None:
        """The key record that ``user`` and ``key`` name, or None; time does not tell which.

        The user name :data:`ANY_USER` (``api``, what W&B clients send) matches every user.
        """
        digest = _digest(key).encode()
        any_user = hmac.compare_digest(user.encode(), ANY_USER.encode())
        found = None
        for record in self.keys():
            same_user = any_user or hmac.compare_digest(record.user.encode(), user.encode())
            same_key = hmac.compare_digest(record.sha256.encode(), digest)
            if same_user and same_key:
                found = record
        return found

    def add(self, user: str, projects: list[str]) -> tuple[ApiKey, str]:
        """Create a key for ``user`` granted ``projects``; returns the record and the plain key."""
        _check_user(user)
        _check_projects(projects)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            id=secrets.token_hex(4),
            user=user,
            projects=tuple(projects),
            sha256=_digest(secret),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        with self._locked():
            self._write((*self._read(), record))
        return record, secret

    def revoke(self, key_id: str) -> bool:
        """Delete the key with id ``key_id``; False when there is none."""
        with self._locked():
            current = self._read()
            kept = tuple(k for k in current if k.id != key_id)
            if len(kept) == len(current):
                return False
            self._write(kept)
        return True

    def _read(self) -> tuple[ApiKey, ...]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return ()
        return tuple(ApiKey(**{**k, "projects": tuple(k["projects"])}) for k in raw["keys"])

    def _write(self, keys: tuple[ApiKey, ...]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": [asdict(k) for k in keys]}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
