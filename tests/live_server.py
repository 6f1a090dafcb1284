"""``trace-usage serve`` as a subprocess on a free loopback port, with keys from the CLI."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from weave.trace_server_bindings.remote_http_trace_server import RemoteHTTPTraceServer
from weave.wandb_interface.auth import ApiKeyCredentials

USER = "sdk"
STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict[str, str]:
    """This environment without any ``TRACE_USAGE_*`` setting leaking in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TRACE_USAGE_")}


def cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return done.stdout


def new_key(data_dir: Path, env: dict[str, str], *projects: str) -> str:
    out = cli("keys", "add", "--data-dir", str(data_dir), "--user", USER, "--projects", *projects,
              env=env)  # fmt: skip
    return re.search(r"^api key:\s+(\S+)$", out, re.M).group(1)


class Server:
    """A running ``trace-usage serve`` and keys for it."""

    def __init__(self, url: str, key: str, narrow_key: str, proc: subprocess.Popen) -> None:
        self.url, self.key, self.narrow_key, self.proc = url, key, narrow_key, proc

    def client(self, key: str | None = None) -> RemoteHTTPTraceServer:
        return RemoteHTTPTraceServer(self.url, auth=ApiKeyCredentials(key or self.key))


def wait_until_healthy(
    proc: subprocess.Popen, url: str, log_path: Path, seconds: float = STARTUP_SECONDS
) -> None:
    """Return once ``url`` answers ``/health``; fail with the server's log if it exits."""
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, log_path.read_text()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


@contextmanager
def running_server(
    data_dir: Path, projects: str, narrow_project: str, *extra_args: str
) -> Iterator[Server]:
    """Serve ``data_dir``; ``key`` is granted ``projects``, ``narrow_key`` one project."""
    env = clean_env()
    key = new_key(data_dir, env, projects)
    narrow = new_key(data_dir, env, narrow_project)
    port = free_port()
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning",
             *extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(proc, url, log_path)
            yield Server(url, key, narrow, proc)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert "Traceback" not in log_path.read_text()
