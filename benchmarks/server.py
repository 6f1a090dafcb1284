"""The service under test: a ``trace-usage serve`` subprocess on loopback, and its clients.

Setup (not timed): the traces are written to Parquet and loaded with ``trace-usage import``
into a temporary data directory, a key is made with ``trace-usage keys add``, and the
server is started with its answer cache off, so every request computes its answer.
"""

from __future__ import annotations

import base64
import http.client
import math
import os
import shutil
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
        return self._send("POST", path, orjson.dumps(body))

    def get(self, path: str) -> bytes:
        """GET ``path`` (e.g. ``/health``, the floor of a request's cost)."""
        return self._send("GET", path, None)

    def _send(self, method: str, path: str, payload: bytes | None) -> bytes:
        try:
            self._conn.request(method, path, body=payload, headers=self._headers)
            response = self._conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            self._conn.close()
            self._conn.request(method, path, body=payload, headers=self._headers)
            response = self._conn.getresponse()
        content = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {content[:500]!r}")
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
    """Closed-loop load by Locust, headless: ``clients`` users each send the next body as
    soon as the previous answer is read whole; stops after ``seconds`` (whole seconds, at
    least one) or ``max_requests``. Returns the figures of Locust's final statistics."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bodies.jsonl").write_bytes(b"\n".join(bodies))
        env = {
            **os.environ,
            "TRACE_USAGE_BODIES": str(folder / "bodies.jsonl"),
            "TRACE_USAGE_AUTH": service.auth,
            "TRACE_USAGE_MAX_REQUESTS": str(max_requests),
        }
        command = [
            sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")),
            "--headless", "--users", str(clients), "--spawn-rate", str(clients),
            "--run-time", f"{max(1, math.ceil(seconds))}s", "--stop-timeout", "0",
            "--host", service.url, "--json-file", str(folder / "stats"), "--only-summary",
            "--loglevel", "ERROR", "--exit-code-on-error", "0",
        ]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        written = folder / "stats.json"
        if done.returncode != 0 or not written.exists():
            raise RuntimeError(f"locust failed ({done.returncode}): {done.stderr[-2000:]}")
        entries = orjson.loads(written.read_bytes())
    return {**_load_figures(entries), "clients": float(clients)}


def _load_figures(entries: list[dict[str, Any]]) -> dict[str, float]:
    """Requests, failures, requests/s and the median and 99th percentile latency (ms) of
    Locust's per-request statistics, all entries together."""
    count = sum(e["num_requests"] for e in entries)
    if count == 0:
        raise RuntimeError("the load test completed no request")
    began = min(e["start_time"] for e in entries)
    ended = max(e["last_request_timestamp"] for e in entries)
    latencies: dict[float, int] = {}
    for entry in entries:
        for ms, n in entry["response_times"].items():
            latencies[float(ms)] = latencies.get(float(ms), 0) + n

    def percentile(q: float) -> float:
        seen = 0
        for ms in sorted(latencies):
            seen += latencies[ms]
            if seen >= q * count:
                return ms
        return max(latencies)

    return {
        "requests": float(count),
        "errors": float(sum(e["num_failures"] for e in entries)),
        "rps": count / max(ended - began, 1e-9),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
    }


WRK_SCRIPT = Path(__file__).with_name("wrk.lua")


def wrk_test(
    service: Service, bodies: list[bytes], *, connections: int, seconds: float
) -> dict[str, float]:
    """Closed-loop load by wrk (one thread, ``connections`` keep-alive connections), which
    leaves the server the CPU a Python load generator would take: each connection sends
    the next of ``bodies`` (rotating) as soon as the answer is read. Returns requests,
    errors (non-2xx and socket errors), requests/s and the median and 99th percentile
    latency (ms). Raises ``FileNotFoundError`` when wrk is not installed."""
    exe = shutil.which("wrk")
    if exe is None:
        raise FileNotFoundError("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bodies.jsonl"
        path.write_bytes(b"\n".join(bodies) + b"\n")
        env = {**os.environ, "TRACE_USAGE_BODIES": str(path), "TRACE_USAGE_AUTH": service.auth}
        command = [
            exe, "-t1", f"-c{connections}", f"-d{max(1, math.ceil(seconds))}s", "--latency",
            "-s", str(WRK_SCRIPT), service.url,
        ]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("TRACE_USAGE_WRK")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]}")
    figures = {k: float(v) for k, v in (part.split("=") for part in line.split()[1:])}
    if figures["requests"] == 0:
        raise RuntimeError("the wrk run completed no request")
    return {
        "requests": figures["requests"],
        "errors": figures["errors"],
        "rps": figures["requests"] / (figures["duration_us"] / 1e6),
        "p50_ms": figures["p50_us"] / 1e3,
        "p99_ms": figures["p99_us"] / 1e3,
        "clients": float(connections),
    }
