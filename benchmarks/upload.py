"""Big uploads (issue 19): one ~30 MB ``/call/upsert_batch`` against a running server.

    python -m benchmarks.upload server   # trace-usage serve: peak RSS, /health meanwhile
    python -m benchmarks.upload store    # CallStore.write_parts of the parsed parts alone

``server`` starts ``trace-usage serve`` on an empty store, times ``GET /health`` idle (the
floor), then polls it every 10 ms while the upload is sent, and reports the server's peak
RSS growth as a multiple of the body and the slowest ``/health`` as a multiple of the floor
measured in the same run (targets: <= 5x the body, < 100 ms). ``store`` runs in this
process: the parts built as the route builds them (a frame per chunk of items), then the
peak RSS of the write above the RSS just before it (the peak is reset first, through
``/proc/self/clear_refs``). Run each a few times: the figures move by ~10-20% between runs
on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.live_server import running_server

PROJECT = "e/p"


def upsert_body(calls: int, pad: int) -> bytes:
    """Starts and ends of ``calls`` calls in traces of 100, ~``3 * pad`` bytes of text each."""
    items: list[dict[str, Any]] = []
    for i in range(calls):
        start = {
            "project_id": PROJECT,
            "id": f"c{i}",
            "trace_id": f"t{i // 100}",
            "parent_id": None if i % 100 == 0 else f"c{i - i % 100}",
            "op_name": "op",
            "started_at": "2025-01-01T00:00:00Z",
            "attributes": {"k": "v"},
            "inputs": {"messages": [{"role": "user", "content": os.urandom(pad).hex()}]},
        }
        end = {
            "project_id": PROJECT,
            "id": f"c{i}",
            "ended_at": "2025-01-01T00:00:01Z",
            "output": {"text": os.urandom(pad // 2).hex()},
            "summary": {"usage": {"gpt-4o": {"prompt_tokens": 10, "requests": 1}}},
        }
        items += [{"mode": "start", "req": {"start": start}}, {"mode": "end", "req": {"end": end}}]
    return json.dumps({"batch": items}).encode()


@dataclass(frozen=True)
class UploadFigures:
    """One upload: body size, server RSS growth, and ``/health`` before and during it."""

    body_bytes: int
    growth_bytes: int
    floor_ms: float
    health_p50_ms: float
    health_max_ms: float
    seconds: float

    def __str__(self) -> str:
        mib = self.body_bytes / 2**20
        return (
            f"server: body {mib:.1f} MiB, peak RSS growth {self.growth_bytes / 2**20:.0f} MiB "
            f"({self.growth_bytes / self.body_bytes:.1f}x the body), {self.seconds:.2f} s; "
            f"/health idle {self.floor_ms:.1f} ms, during the upload p50 "
            f"{self.health_p50_ms:.1f} ms, max {self.health_max_ms:.1f} ms "
            f"({self.health_max_ms / self.floor_ms:.0f}x the floor)"
        )


def _rss(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def _health_ms(client: httpx.Client) -> float:
    started = time.perf_counter()
    client.get("/health")
    return (time.perf_counter() - started) * 1000


def through_server(body: bytes) -> UploadFigures:
    """Send ``body`` to a fresh ``trace-usage serve`` while another client polls /health."""
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), PROJECT, PROJECT) as srv:
        with httpx.Client(base_url=srv.url) as client:
            floor = statistics.median(_health_ms(client) for _ in range(50))
        before = _rss(srv.proc.pid, "VmRSS")
        polls: list[float] = []
        done = threading.Event()

        def poll() -> None:
            with httpx.Client(base_url=srv.url) as client:
                while True:  # at least one poll, however short the upload
                    polls.append(_health_ms(client))
                    if done.is_set():
                        return
                    time.sleep(0.01)

        poller = threading.Thread(target=poll)
        poller.start()
        started = time.perf_counter()
        with httpx.Client(base_url=srv.url, timeout=600) as client:
            res = client.post(
                "/call/upsert_batch", content=body, auth=("api", srv.key),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
        took = time.perf_counter() - started
        done.set()
        poller.join()
        assert res.status_code == 200, res.text[:300]
        growth = _rss(srv.proc.pid, "VmHWM") - before
    return UploadFigures(len(body), growth, floor, statistics.median(polls), max(polls), took)


def store_only(data_dir: Path, body: bytes) -> tuple[int, int, float]:
    """RSS before ``CallStore.write_parts`` of ``body``'s parts, its peak growth, seconds."""
    import orjson

    from service.body import CHUNK_ITEMS
    from service.parts import call_part, concat_parts, parts_frame
    from service.settings import DB_FILE
    from service.store import CallStore

    frames, parts = [], []
    for item in orjson.loads(body)["batch"]:
        call = dict(next(iter(item["req"].values())))
        for name in ("started_at", "ended_at"):
            if name in call:
                call[name] = dt.datetime.fromisoformat(call[name])
        parts.append(call_part(call, start=item["mode"] == "start", end=item["mode"] == "end"))
        if len(parts) == CHUNK_ITEMS:
            frames.append(parts_frame(parts))
            parts = []
    frame = concat_parts([*frames, parts_frame(parts)])
    del frames, parts
    store = CallStore(data_dir / DB_FILE)
    gc.collect()
    base = _rss(os.getpid(), "VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    started = time.perf_counter()
    store.write_parts(frame)
    took = time.perf_counter() - started
    growth = _rss(os.getpid(), "VmHWM") - base
    store.close()
    return base, growth, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["server", "store"])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--pad", type=int, default=3300, help="random bytes of input per call")
    args = parser.parse_args()
    body = upsert_body(args.calls, args.pad)
    if args.mode == "server":
        print(through_server(body))
        return
    base, growth, took = store_only(Path(tempfile.mkdtemp()), body)
    print(
        f"store: body {len(body) / 2**20:.1f} MiB, RSS before {base / 2**20:.0f} MiB, peak "
        f"growth {growth / 2**20:.0f} MiB ({growth / len(body):.1f}x the body), {took:.2f} s"
    )


if __name__ == "__main__":
    main()
