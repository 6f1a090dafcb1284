"""Peak memory of one ~30 MB ``/call/upsert_batch``: the whole request, or the store's part.

    python -m benchmarks.upsert_memory route   # over the app (parsing, parts, store)
    python -m benchmarks.upsert_memory store   # CallStore.write_parts of the parsed parts

Each run is one fresh process; growth is the peak RSS above the RSS just before the
upsert (the body and, for ``store``, the parts frame are built before), so run each mode
in its own process and a few times: the figures move by ~10% between runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT = "e/p"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def through_app(data_dir: Path, body: bytes) -> tuple[float, float]:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.auth import KeyStore
    from service.settings import Settings

    settings = Settings(data_dir=data_dir)
    _, key = KeyStore(settings.keys_path).add("ada", [PROJECT])
    with TestClient(create_app(settings)) as client:
        client.get("/health")
        base, started = peak_mib(), time.perf_counter()
        res = client.post("/call/upsert_batch", content=body, auth=("ada", key))
        assert res.status_code == 200, res.text[:300]
        return base, time.perf_counter() - started


def store_only(data_dir: Path, body: bytes) -> tuple[float, float]:
    import orjson

    from service.parts import call_part, parts_frame
    from service.settings import DB_FILE
    from service.store import CallStore

    parts = []
    for item in orjson.loads(body)["batch"]:
        call = dict(next(iter(item["req"].values())))
        for name in ("started_at", "ended_at"):
            if name in call:
                call[name] = dt.datetime.fromisoformat(call[name])
        parts.append(call_part(call, start=item["mode"] == "start", end=item["mode"] == "end"))
    frame = parts_frame(parts)
    del parts
    store = CallStore(data_dir / DB_FILE)
    base, started = peak_mib(), time.perf_counter()
    store.write_parts(frame)
    took = time.perf_counter() - started
    store.close()
    return base, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["route", "store"])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--pad", type=int, default=3300, help="random bytes of input per call")
    args = parser.parse_args()
    body = upsert_body(args.calls, args.pad)
    run = through_app if args.mode == "route" else store_only
    base, took = run(Path(tempfile.mkdtemp()), body)
    size, growth = len(body) / 2**20, peak_mib() - base
    print(
        f"{args.mode}: body {size:.1f} MiB, RSS before {base:.0f} MiB, peak {peak_mib():.0f} MiB,"
        f" growth {growth:.0f} MiB ({growth / size:.1f}x the body), {took:.2f} s"
    )


if __name__ == "__main__":
    main()
