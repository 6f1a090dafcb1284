"""Why the store refused a request or could not open, one class per answer.

``app.py`` maps each class to its status; ``trace-usage serve`` and ``import`` print a
:class:`StoreOpenError`'s message as one line and exit non-zero. Kept apart from
``store.py`` so that the app can map them without importing DuckDB.
"""

from __future__ import annotations


class StoreError(RuntimeError):
    """A store failure that is not the request's fault."""

    @property
    def reason(self) -> str:
        """The message, for the ``{"reason": ...}`` error body."""
        return str(self)


class StoreOpenError(StoreError):
    """The store file cannot be opened or used; the message says what to do."""


class StoreLockedError(StoreOpenError):
    """The database file is held by another process (a running server, an import)."""


class StoreDamagedError(StoreOpenError):
    """The database file is truncated, overwritten or fails its checksums."""


class StoreVersionError(StoreOpenError):
    """The database was written by a newer trace-usage (a newer schema version)."""


class StoreFullError(StoreError):
    """A write failed for lack of disk space; nothing of it was stored (507)."""


class StoreUnavailableError(StoreError):
    """The database went unusable (DuckDB invalidated it) and could not be reopened yet."""
