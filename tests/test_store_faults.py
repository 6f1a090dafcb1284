"""Store faults: a full disk, a database DuckDB invalidated, a damaged file, file modes.

A full disk is made twice: for real, on a small tmpfs mounted in a private mount namespace
(``unshare``, so no root and no cleanup are needed), and by injecting DuckDB's own errors
at the connection, so the paths that the tmpfs run may or may not hit are each exercised.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient

from service import store as store_module
from service.app import create_app
from service.auth import KeyStore
from service.parts import call_part, parts_frame
from service.settings import DB_FILE, Settings
from service.store import CallStore
from service.store_errors import (
    StoreDamagedError,
    StoreLockedError,
    StoreOpenError,
    StoreUnavailableError,
)

PROJECT = "e/p"
T0 = "2025-01-01T00:00:00Z"
NO_SPACE = 'Could not write file "trace_usage.duckdb.wal": No space left on device'
ROOT = Path(__file__).resolve().parent.parent


def batch(name: str, calls: int = 3, pad: int = 0) -> dict[str, Any]:
    """An upsert batch: ``calls`` complete calls of trace ``name``, each with one usage."""
    items = []
    for i in range(calls):
        call_id = f"{name}-{i}"
        start = {
            "project_id": PROJECT,
            "id": call_id,
            "trace_id": name,
            "parent_id": None if i == 0 else f"{name}-0",
            "op_name": "op",
            "started_at": T0,
            "attributes": {},
            "inputs": {"pad": os.urandom(pad).hex()},
        }
        end = {
            "project_id": PROJECT,
            "id": call_id,
            "ended_at": T0,
            "summary": {"usage": {"m": {"prompt_tokens": 1, "requests": 1}}},
        }
        items += [{"mode": "start", "req": {"start": start}}, {"mode": "end", "req": {"end": end}}]
    return {"batch": items}


def stored_ids(store: CallStore) -> set[str]:
    calls, _ = store.load(PROJECT, columns=["id"])
    return set(calls.collect().get_column("id"))


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, CallStore, tuple[str, str]]]:
    """The real app over a real store; the store stays reachable for fault injection."""
    settings = Settings(data_dir=tmp_path)
    _, secret = KeyStore(settings.keys_path).add("ada", [PROJECT])
    st = CallStore(settings.db_path)
    with TestClient(create_app(settings, store=st), raise_server_exceptions=False) as client:
        yield client, st, ("ada", secret)


class Sick:
    """A DuckDB connection whose statements fail with ``error`` where ``fails(sql)`` says;
    its cursors inherit the sickness. ``undo`` runs before raising (a failed COMMIT has
    ended the transaction in DuckDB: so does this one)."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        fails: Callable[[str], bool],
        error: Exception,
        undo: str | None = None,
    ) -> None:
        self._con, self._fails, self._error, self._undo = con, fails, error, undo

    def _check(self, sql: str) -> None:
        if self._fails(sql):
            if self._undo:
                self._con.execute(self._undo)
            raise self._error

    def execute(self, sql: str, *args: Any) -> Any:
        self._check(sql)
        return self._con.execute(sql, *args)

    def sql(self, sql: str, *args: Any, **kw: Any) -> Any:
        self._check(sql)
        return self._con.sql(sql, *args, **kw)

    def cursor(self) -> Sick:
        return Sick(self._con.cursor(), self._fails, self._error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _is_commit(sql: str) -> bool:
    return sql == "COMMIT"


# --- full disk, injected ------------------------------------------------------------------


def test_a_commit_that_finds_the_disk_full_answers_507_and_stores_nothing(
    app_client: tuple[TestClient, CallStore, tuple[str, str]],
) -> None:
    client, st, auth = app_client
    assert client.post("/call/upsert_batch", json=batch("kept"), auth=auth).status_code == 200
    writer = st._writer
    error = duckdb.TransactionException(f"TransactionContext Error: Failed to commit: {NO_SPACE}")
    st._writer = Sick(writer, _is_commit, error, undo="ROLLBACK")  # type: ignore[assignment]

    res = client.post("/call/upsert_batch", json=batch("lost"), auth=auth)
    assert res.status_code == 507
    assert "no space left" in res.json()["reason"] and "not stored" in res.json()["reason"]
    assert stored_ids(st) == {"kept-0", "kept-1", "kept-2"}
    assert client.get("/health").status_code == 200  # reads still work
    usage = client.post("/trace/usage", json={"project_id": PROJECT}, auth=auth)
    assert (
        usage.status_code == 200 and usage.json()["call_usage"]["kept-0"]["m"]["prompt_tokens"] == 3
    )

    st._writer = writer  # space is back
    assert client.post("/call/upsert_batch", json=batch("later"), auth=auth).status_code == 200
    assert {"kept-0", "later-0"} <= stored_ids(st)


def test_an_invalidated_database_is_reopened_and_keeps_every_acknowledged_write(
    app_client: tuple[TestClient, CallStore, tuple[str, str]],
) -> None:
    client, st, auth = app_client
    for name in ("a", "b"):
        assert client.post("/call/upsert_batch", json=batch(name), auth=auth).status_code == 200
    fatal = duckdb.FatalException(
        "FATAL Error: Failed to create checkpoint because of error: " + NO_SPACE
    )
    invalidated = duckdb.FatalException(
        "FATAL Error: Failed: database has been invalidated because of a previous fatal error."
    )
    # the commit's checkpoint fails; from then on DuckDB refuses every statement
    st._writer = Sick(st._writer, _is_commit, fatal, undo="ROLLBACK")  # type: ignore[assignment]
    sick_root = Sick(st._root, lambda sql: True, invalidated)
    st._root = sick_root  # type: ignore[assignment]

    res = client.post("/call/upsert_batch", json=batch("c"), auth=auth)
    assert res.status_code == 507 and "no space left" in res.json()["reason"]
    # the next use reopens the file: health, reads and writes all work again
    assert client.get("/health").status_code == 200
    assert st._root is not sick_root
    assert client.post("/call/upsert_batch", json=batch("d"), auth=auth).status_code == 200
    assert stored_ids(st) == {f"{t}-{i}" for t in "abd" for i in range(3)}


def test_health_answers_503_while_the_store_cannot_be_reopened(
    app_client: tuple[TestClient, CallStore, tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, st, auth = app_client
    assert client.post("/call/upsert_batch", json=batch("a"), auth=auth).status_code == 200
    invalidated = duckdb.FatalException("FATAL Error: database has been invalidated")
    st._root = Sick(st._root, lambda sql: True, invalidated)  # type: ignore[assignment]
    st._writer = Sick(st._writer, lambda sql: True, invalidated)  # type: ignore[assignment]
    real_connect = store_module._connect

    def refuse(path: Path) -> duckdb.DuckDBPyConnection:
        raise StoreUnavailableError(f"cannot open {path} yet: still held")

    monkeypatch.setattr(store_module, "_connect", refuse)
    # the first use meets the invalidated database (/health itself runs no query)
    usage = client.post("/trace/usage", json={"project_id": PROJECT}, auth=auth)
    assert usage.status_code == 503, usage.text
    health = client.get("/health")
    assert health.status_code == 503 and "could not be reopened" in health.json()["reason"]
    assert client.post("/call/upsert_batch", json=batch("b"), auth=auth).status_code == 503

    monkeypatch.setattr(store_module, "_connect", real_connect)
    assert client.get("/health").status_code == 200
    assert stored_ids(st) == {"a-0", "a-1", "a-2"}


def test_a_read_that_cannot_spill_to_a_full_disk_answers_507(
    app_client: tuple[TestClient, CallStore, tuple[str, str]],
) -> None:
    client, st, auth = app_client
    assert client.post("/call/upsert_batch", json=batch("a"), auth=auth).status_code == 200
    error = duckdb.IOException(
        'IO Error: Could not write file "trace_usage.duckdb.tmp/duckdb_temp_storage-0.tmp": '
        "No space left on device"
    )
    st._root = Sick(st._root, lambda sql: "FROM calls" in sql, error)  # type: ignore[assignment]
    res = client.post("/trace/usage", json={"project_id": PROJECT}, auth=auth)
    assert res.status_code == 507 and "could not spill" in res.json()["reason"], res.text
    assert client.get("/health").status_code == 200  # the store itself is fine


def test_a_failing_write_that_is_not_a_store_fault_is_raised_as_it_is(store: CallStore) -> None:
    error = duckdb.ConstraintException("Constraint Error: something the code got wrong")
    store._writer = Sick(store._writer, _is_commit, error, undo="ROLLBACK")  # type: ignore[assignment]
    part = call_part({"project_id": PROJECT, "id": "x", "op_name": "op"}, start=True, end=False)
    with pytest.raises(duckdb.ConstraintException):
        store.write_parts(parts_frame([part]))


# --- full disk, for real ---------------------------------------------------------------------

TMPFS_RUN = textwrap.dedent(
    """
    import json, subprocess, sys
    from pathlib import Path
    from fastapi.testclient import TestClient
    from service.app import create_app
    from service.auth import KeyStore
    from service.settings import Settings
    from service.store import CallStore
    from tests.test_store_faults import PROJECT, batch, stored_ids

    root = Path(sys.argv[1])  # a tmpfs in this process's own mount namespace
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(root)], check=True)
    settings = Settings(data_dir=root)
    _, key = KeyStore(settings.keys_path).add("ada", [PROJECT])
    ballast = root / "ballast"
    ballast.write_bytes(b"\\0" * 12_000_000)  # freed once the disk is full
    out = {"acked": []}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        auth = ("ada", key)
        for n in range(400):
            res = client.post("/call/upsert_batch", json=batch(f"b{n}", 20, 3000), auth=auth)
            if res.status_code != 200:
                out["full"] = [res.status_code, res.json()["reason"]]
                break
            out["acked"].append(f"b{n}")
        last = out["acked"][-1]
        req = {"project_id": PROJECT, "filter": {"trace_ids": [last]}}
        answer = client.post("/trace/usage", json=req, auth=auth).json()
        out["read"] = answer["call_usage"][last + "-0"]
        out["health"] = client.get("/health").status_code
        ballast.unlink()
        res = client.post("/call/upsert_batch", json=batch("after", 20, 10), auth=auth)
        out["after"] = res.status_code
    store = CallStore(settings.db_path)  # the server restarted on the same file
    out["stored"] = sorted(stored_ids(store))
    store.close()
    print(json.dumps(out))
    """
)


def test_a_full_tmpfs_answers_507_loses_no_acknowledged_batch_and_recovers(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    run = subprocess.run(
        ["unshare", "--mount", "--map-root-user", sys.executable, "-c", TMPFS_RUN, str(disk)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["full"][0] == 507 and "no space left" in out["full"][1], out.get("full")
    assert len(out["acked"]) >= 3
    assert out["read"]["m"]["prompt_tokens"] == 20  # reads go on while the disk is full
    assert out["health"] == 200
    assert out["after"] == 200
    expected = {f"{t}-{i}" for t in [*out["acked"], "after"] for i in range(20)}
    assert set(out["stored"]) == expected  # every acknowledged call, none of the refused batch


# --- damaged files ------------------------------------------------------------------------


def _written_store(path: Path, traces: int = 20) -> Path:
    st = CallStore(path)
    for n in range(traces):
        parts = []
        for i in range(200):
            call = {
                "project_id": PROJECT,
                "id": f"t{n}-{i}",
                "trace_id": f"t{n}",
                "op_name": "op",
                "inputs": {"pad": os.urandom(300).hex()},
                "summary": {"usage": {"m": {"requests": 1}}},
            }
            parts.append(call_part(call, start=True, end=True))
        st.write_parts(parts_frame(parts))
    st.close()
    return path


@pytest.fixture(scope="module")
def whole_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _written_store(tmp_path_factory.mktemp("whole") / DB_FILE)


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2 // 4096 * 4096)


def _overwrite_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:4096] = b"garbage!" * 512
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [lambda p: p.write_bytes(b""), _overwrite_header, _truncate],
    ids=["zero-length", "garbage-header", "truncated"],
)
def test_a_damaged_file_is_refused_at_open_with_one_line_saying_what_to_do(
    whole_store: Path, tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    path = tmp_path / DB_FILE
    shutil.copy(whole_store, path)
    damage(path)
    with pytest.raises(StoreDamagedError) as err:
        CallStore(path)
    message = str(err.value)
    assert isinstance(err.value, StoreOpenError)
    assert "\n" not in message and "damaged" in message and str(path) in message
    assert "backup" in message and "aside" in message


def test_an_undamaged_file_reopens_with_every_call(whole_store: Path, tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    shutil.copy(whole_store, path)
    st = CallStore(path)
    assert st.stats()["calls"] == 4000 and len(stored_ids(st)) == 4000
    st.close()


def test_a_store_whose_last_blocks_were_freed_is_not_taken_for_truncated(
    tmp_path: Path,
) -> None:
    """DuckDB cuts freed blocks off the file's end but still counts them in its header."""
    path = tmp_path / DB_FILE
    CallStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE big AS SELECT md5(range::VARCHAR) AS s FROM range(300000)")
    con.execute("CHECKPOINT")
    con.execute("DROP TABLE big")
    con.execute("CHECKPOINT")
    con.close()
    st = CallStore(path)
    assert st.stats()["calls"] == 0
    st.close()


def test_a_damaged_block_found_by_a_read_is_reported_and_health_answers_503(
    whole_store: Path, tmp_path: Path
) -> None:
    path = tmp_path / DB_FILE
    shutil.copy(whole_store, path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2 // 4096 * 4096
    data[middle : middle + 4096] = os.urandom(4096)  # inside the calls' data blocks
    path.write_bytes(bytes(data))
    st = CallStore(path)  # opens: only reading the damaged block can tell
    with pytest.raises(StoreDamagedError, match="backup"):
        st.load(PROJECT)  # every column, so every data block
    settings = Settings(data_dir=tmp_path)
    with TestClient(create_app(settings, store=st), raise_server_exceptions=False) as client:
        health = client.get("/health")
        assert health.status_code == 503 and "damaged" in health.json()["reason"]


def test_a_file_held_by_another_process_is_refused_as_locked(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    CallStore(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(path)!r}); "
            "print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError, match="one process"):
            CallStore(path)
    finally:
        holder.kill()
        holder.wait()


# --- file mode ----------------------------------------------------------------------------


def test_the_database_and_its_wal_are_private_to_their_owner(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    st = CallStore(path)
    part = call_part({"project_id": PROJECT, "id": "x", "op_name": "op"}, start=True, end=False)
    st.write_parts(parts_frame([part]))
    wal = path.with_name(path.name + ".wal")
    assert wal.exists()
    assert (path.stat().st_mode & 0o777, wal.stat().st_mode & 0o777) == (0o600, 0o600)
    st.close()
    path.chmod(0o644)  # a store made by an older version
    CallStore(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
