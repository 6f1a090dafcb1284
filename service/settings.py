"""Service settings: one ``Settings`` object, filled from flags, then env, then defaults.

Every field has an environment variable ``TRACE_USAGE_<NAME>`` and a ``trace-usage serve``
flag ``--<name>``; flags win over the environment. Nothing reads settings at import time:
``create_app(settings)`` receives them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DB_FILE = "trace_usage.duckdb"
KEYS_FILE = "keys.json"


class Settings(BaseSettings):
    """Configuration of ``trace-usage serve`` and of ``create_app``."""

    model_config = SettingsConfigDict(env_prefix="TRACE_USAGE_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port.")
    data_dir: Path = Field(default=Path("data"), description="Store, keys and sample live here.")
    workers: int = Field(
        default=1, ge=1, description="uvicorn worker processes (the DuckDB store allows 1)."
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1,
        description="Larger request bodies get 413 (Weave's client sends at most 31 MiB).",
    )
    summary_usage: Literal["own", "auto"] = Field(
        default="own",
        description="Server default of the usage endpoints' summary_usage extension.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="Level of the JSON request log and uvicorn's own log."
    )
    cache_size: int = Field(
        default=128, ge=0, description="Usage answers kept per process for repeated polls (0: off)."
    )
    compute_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Usage answers computed at once (default: one per CPU); more requests wait.",
    )

    @property
    def db_path(self) -> Path:
        """The DuckDB file of the store."""
        return self.data_dir / DB_FILE

    @property
    def keys_path(self) -> Path:
        """The hashed API keys file."""
        return self.data_dir / KEYS_FILE

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can reach the server: ``host`` resolves, and only to
        loopback addresses (``127.evil.com`` is a name like any other)."""
        return is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address; False if it names none.

    Examples
    --------
    >>> is_loopback_host("127.0.0.2"), is_loopback_host("::1"), is_loopback_host("0.0.0.0")
    (True, True, False)
    >>> is_loopback_host("127.evil.invalid")
    False
    """
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0].split("%", 1)[0] for info in found}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)
