"""The service under test: a ``trace-usage serve`` subprocess on loopback, and its clients.

Setup (not timed): the traces are written to Parquet and loaded with ``trace-usage import``
into a temporary data directory, a key is made with ``trace-usage keys add``, and the
server is started with its answer cache off, so every request computes its answer.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import orjson
import psutil

from benchmarks.generate import PROJECT, Trace

USER = "bench"
_START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        check=True,
        capture_output=True,
        text=True,
        **kwargs,
    )


class Service:
    """A running service holding ``traces``; use as a context manager.

    Examples
    --------
    >>> with Service([trace]) as service:  # doctest: +SKIP
    ...     body = service.post("/trace/usage", trace.request(False))
    """

    def __init__(self, traces: list[Trace], cache_size: int = 0) -> None:
        self.traces = traces
        self.cache_size = cache_size
        self.port = _free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="trace-usage-bench-")
        self.data_dir = Path(self._tmp.name)
        self.process: subprocess.Popen[bytes] | None = None
        self.auth = ""

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the server."""
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> Service:
        files = []
        for i, trace in enumerate(self.traces):
            path = self.data_dir / f"trace-{i}.parquet"
            trace.calls.write_parquet(path)
            files.append(str(path))
        data = ("--data-dir", str(self.data_dir))
        _cli("import", *files, *data, "--quiet")
        for path in files:
            Path(path).unlink()
        added = _cli("keys", "add", "--user", USER, "--projects", PROJECT, *data).stdout
        secret = next(line.split()[-1] for line in added.splitlines() if "api key" in line)
        self.auth = "Basic " + base64.b64encode(f"{USER}:{secret}".encode()).decode()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", *data, "--port", str(self.port)]
            + ["--cache-size", str(self.cache_size), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"trace-usage serve exited: {err[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("trace-usage serve did not become ready")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._tmp.cleanup()

    def client(self) -> httpx.Client:
        """A keep-alive client that asks for an uncompressed body."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": self.auth, "Accept-Encoding": "identity"},
            timeout=600.0,
        )

    def plain_client(self) -> PlainClient:
        """A keep-alive client on the standard library's ``http.client``."""
        return PlainClient(self)

    def peak_rss(self) -> int:
        """The server's peak resident set size so far, in bytes (Linux ``VmHWM``)."""
        status = Path(f"/proc/{self.pid}/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return int(psutil.Process(self.pid).memory_info().rss)

    def rss(self) -> int:
        """The server's current resident set size, in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)


class PlainClient:
    """POSTs over one keep-alive ``http.client`` connection, reading the body in large
    blocks: a 47 MB body takes this client about 45 to 75 ms to read where httpx, which
    parses it in small pieces, takes about 90 ms, and the client shares the machine's two
    cores with the server. Use as a context manager."""

    def __init__(self, service: Service) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=600.0)
        self._headers = {
            "Authorization": service.auth,
            "Accept-Encoding": "identity",
            "Content-Type": "application/json",
        }

    def post(self, path: str, body: dict[str, Any]) -> bytes:
        """POST ``body`` and return the response body, read whole; raises on an error.

        A connection the server closed while idle (uvicorn's keep-alive timeout) is opened
        again once.
        """
        payload = orjson.dumps(body)
        try:
            self._conn.request("POST", path, body=payload, headers=self._headers)
            response = self._conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            self._conn.close()
            self._conn.request("POST", path, body=payload, headers=self._headers)
            response = self._conn.getresponse()
        content = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {response.status}: {content[:500]!r}")
        return content

    def __enter__(self) -> PlainClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> bytes:
    """POST ``body`` and return the response body, read whole; raises on an error status."""
    response = client.post(path, content=orjson.dumps(body))
    response.raise_for_status()
    return response.content


def load_test(
    service: Service,
    bodies: list[bytes],
    *,
    clients: int,
    seconds: float,
    max_requests: int,
) -> dict[str, float]:
    """Closed-loop load: ``clients`` keep-alive connections each send the next body as soon
    as the previous answer is read whole; stops after ``seconds`` or ``max_requests``."""
    return asyncio.run(_load(service, bodies, clients, seconds, max_requests))


async def _load(
    service: Service, bodies: list[bytes], clients: int, seconds: float, max_requests: int
) -> dict[str, float]:
    requests = [
        (
            "POST /trace/usage HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {service.auth}\r\nAccept-Encoding: identity\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]
    latencies: list[float] = []
    errors = [0]
    sent = [0]
    start = time.perf_counter()
    deadline = start + seconds

    async def one_client(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        try:
            i = offset
            while time.perf_counter() < deadline and sent[0] < max_requests:
                sent[0] += 1
                began = time.perf_counter()
                writer.write(requests[i % len(requests)])
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - began)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors[0] += 1
                i += clients
        finally:
            writer.close()

    await asyncio.gather(*(one_client(k) for k in range(clients)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": float(len(latencies)),
        "errors": float(errors[0]),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": 1e3 * latencies[len(latencies) // 2],
        "p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "clients": float(clients),
    }
