"""The embedded DuckDB store: calls, their extracted usage, project prices, objects, files.

Every write is one transaction on one writer connection behind a lock: all of a request
lands or none of it, and DuckDB's commit has written its WAL and ``fdatasync``'d it (seen
with strace on duckdb 2.0) before a write method returns. Reads take their own cursor, so
they run beside a write and see the last committed state. Calls are upserted by
``(project_id, id)`` from *parts* (:mod:`service.parts`): a start part carries the start
columns, an end part the end columns, a complete part replaces the whole row. Usage is
extracted from an end's summary at write time into the ``usage`` table, so queries never
parse summary JSON for usage; each usage row also carries its call's trace id (kept right
when a start arrives after its end), so a trace's usage is read by the same filter as its
calls, skipping other traces' row groups, however big the store. The file is attached
with small row groups (:data:`ROW_GROUP_ROWS`) and new calls are appended, not merged:
DuckDB then writes a big batch to the file as its row groups fill, instead of holding every
row in memory until the commit. One process at a time can open the file (DuckDB's lock).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import duckdb
import polars as pl
import pyarrow as pa

from engine import schema as s
from engine.pricing import price_table
from engine.usage import usage_from_json
from service.migrations import migrate
from service.parts import COMPLETE, PART_SCHEMA, merge_parts
from service.store_errors import (
    StoreDamagedError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreOpenError,
    StoreUnavailableError,
)
from service.store_sql import (
    INSERT_NEW,
    KIND,
    PRICE_COLS,
    STORED,
    STORED_ENDED,
    STORED_SCHEMA,
    STORED_TRACE,
    UPDATES,
    USAGE_COLS,
    part_kind,
)
from service.versions import WriteVersions

_T = TypeVar("_T")
MAX_DELETE_CALLS = 1000  # as the reference's MAX_DELETE_CALLS_COUNT
UPSERT_SLICE_BYTES = 4 * 1024 * 1024  # staged parts per INSERT or UPDATE (one transaction for all)
PRICE_ROW_FIELDS = (
    "id",
    s.PRICING_LEVEL,
    s.PRICING_LEVEL_ID,
    s.PROVIDER_ID,
    s.LLM_ID,
    s.EFFECTIVE_DATE,
    *s.PRICES,
    "prompt_token_cost_unit",
    "completion_token_cost_unit",
    "created_by",
    "created_at",
)


class StoreReader(Protocol):
    """What the usage routes, metrics and app read of a store: :class:`CallStore` and the
    tests' in-memory fake both follow it (``tests/test_store.py`` compares signatures)."""

    def load(
        self,
        project_id: str,
        trace_ids: list[str] | None = None,
        call_ids: list[str] | None = None,
        columns: Iterable[str] | None = None,
    ) -> tuple[pl.LazyFrame, pl.LazyFrame]: ...

    def traces_of(self, project_id: str, call_ids: Sequence[str]) -> list[str]: ...

    def prices(self, project_id: str) -> pl.DataFrame: ...

    def version(self) -> int: ...

    def cache_version(self, project_id: str, trace_ids: Sequence[str] | None) -> tuple: ...

    def stats(self) -> dict[str, int]: ...

    def check(self) -> None: ...

    def close(self) -> None: ...


_HEADER_BYTES = 3 * 4096  # DuckDB's file header and its two database headers
_CATALOG = "store"  # the name the database file is attached under
ROW_GROUP_ROWS = 2048  # DuckDB's smallest row group (one vector); its default is 122,880
_PRIVATE = 0o600  # the store holds every project's calls: owner only, as keys.json
_LOCKED = ("Could not set lock", "Conflicting lock")
_DAMAGED = (
    "not a valid DuckDB database file",
    "Could not read enough bytes",
    "Corrupt database file",
    "checksum",
)
_NO_SPACE = "No space left on device"
_INVALIDATED = "database has been invalidated"


def _damaged(path: Path, detail: str) -> StoreDamagedError:
    return StoreDamagedError(
        f"the store file {path} is damaged ({detail}): restore it from a backup, or move it "
        "and its .wal aside to start with an empty store"
    )


def _open_error(path: Path, err: duckdb.Error) -> StoreOpenError:
    text = str(err)
    if any(marker in text for marker in _LOCKED):
        return StoreLockedError(
            f"cannot open {path}: {text}. DuckDB lets one process hold the store; stop the "
            "server or send the data through its HTTP API."
        )
    if any(marker in text for marker in _DAMAGED):
        return _damaged(path, text)
    return StoreOpenError(f"cannot open {path}: {text}")


def _restrict(path: Path) -> None:
    """Make the database file and its WAL readable by their owner only."""
    for file in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            if file.stat().st_mode & 0o077:
                file.chmod(_PRIVATE)


def _in_store(cur: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """``cur`` pointed at the store's database: a cursor starts in DuckDB's in-memory
    catalog, not in the attached file."""
    cur.execute(f"USE {_CATALOG}")
    return cur


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    """Open ``path`` and check it is whole: every table's metadata reads, and the file holds
    the last block its tables' data is in (a truncated file would open, then fail reads).

    The file is attached with row groups of :data:`ROW_GROUP_ROWS`: DuckDB writes a
    transaction's appended rows to the file a full row group at a time, so a batch of calls
    with big inputs no longer waits in memory for 122,880 rows that never come, and a trace's
    rows are found by the statistics of small row groups."""
    root = duckdb.connect()
    try:
        quoted = str(path).replace("'", "''")
        root.execute(f"ATTACH '{quoted}' AS {_CATALOG} (ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        _in_store(root)
    except duckdb.Error as err:
        root.close()
        raise _open_error(path, err) from err
    try:
        _restrict(path)
        root.execute("SET GLOBAL TimeZone = 'UTC'")
        tables = root.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()
        last_block = -1
        for (table,) in tables:
            root.execute(f'SELECT count(*) FROM "{table}"').fetchall()
            row = root.execute(
                "SELECT max(block_id) FROM pragma_storage_info(?)", [table]
            ).fetchone()
            last_block = max(last_block, -1 if row is None or row[0] is None else int(row[0]))
        size_row = root.execute(
            "SELECT block_size FROM pragma_database_size() WHERE database_name = ?", [_CATALOG]
        ).fetchone()
        assert size_row is not None
        block_size = int(size_row[0])
    except duckdb.Error as err:
        root.close()
        if isinstance(err, duckdb.FatalException) or _INVALIDATED in str(err):
            raise StoreUnavailableError(f"cannot open {path} yet: {err}") from err
        raise _damaged(path, str(err)) from err
    size, need = path.stat().st_size, _HEADER_BYTES + (last_block + 1) * block_size
    if size < need:
        root.close()
        raise _damaged(path, f"{size} bytes, its data reaches byte {need}: truncated")
    return root


class CallStore:
    """A DuckDB file of calls, usage and prices; safe to share between threads.

    A file that is held by another process, damaged or too new is refused with a
    :class:`~service.store_errors.StoreOpenError`. A write that finds the disk full raises
    :class:`~service.store_errors.StoreFullError` and stores nothing; when DuckDB then
    invalidates the open database (a failed checkpoint does), the store reopens the file,
    whose committed state is intact, before its next use.

    Examples
    --------
    >>> import tempfile
    >>> from service.settings import DB_FILE
    >>> store = CallStore(Path(tempfile.mkdtemp()) / DB_FILE)
    >>> store.stats()["calls"], store.version()
    (0, 0)
    >>> store.close()
    """

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._root = _connect(path)
        self._spawn = threading.Lock()
        self._lock = threading.Lock()
        self._writer = _in_store(self._root.cursor())
        try:
            migrate(self._writer)
        except BaseException:
            self._writer.close()
            self._root.close()
            raise
        self._broken: str | None = None  # why DuckDB invalidated the open database
        self._damage: StoreDamagedError | None = None  # a read found a damaged block
        self._version = 0
        self._price_cache: dict[str, tuple[int, pl.DataFrame]] = {}
        self._versions = WriteVersions()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="store-read")

    # --- lifecycle and metadata ----------------------------------------------------------
    def close(self) -> None:
        """Checkpoint and close the database file."""
        self._pool.shutdown()
        with self._lock, self._spawn, contextlib.suppress(duckdb.Error):
            self._writer.close()
            self._root.close()

    def check(self) -> None:
        """Raise the :class:`~service.store_errors.StoreError` that keeps the store from
        serving (for ``/health``); reopens an invalidated database first.

        It runs no query: every read and write notes the faults it meets, so the check stays
        as cheap as ``/health`` must be (it is the floor that latency is measured against)
        and never waits behind a long write."""
        if self._damage is not None:
            raise self._damage
        self._reopen()

    def version(self) -> int:
        """A counter that changes on every committed write (for response caches)."""
        return self._version

    def cache_version(self, project_id: str, trace_ids: Sequence[str] | None) -> tuple:
        """What an answer over ``trace_ids`` of ``project_id`` (None: any of its calls)
        depends on, for answer caches: a write to another trace leaves it as it is. Read
        it before loading the calls the answer is computed from."""
        return self._versions.key(project_id, trace_ids)

    def stats(self) -> dict[str, int]:
        """Number of stored calls and bytes on disk (database plus WAL)."""
        calls = self._fetch("SELECT count(*) FROM calls")[0][0]
        wal = self.path.with_name(self.path.name + ".wal")
        size = sum(p.stat().st_size for p in (self.path, wal) if p.exists())
        return {"calls": int(calls), "bytes": size}

    def _reopen(self) -> None:
        """Reopen the file if DuckDB invalidated the database (it refuses all use after a
        fatal error such as a checkpoint that found the disk full)."""
        if self._broken is None:
            return
        with self._lock, self._spawn:
            if self._broken is None:
                return
            with contextlib.suppress(duckdb.Error):
                self._writer.close()
                self._root.close()
            try:
                root = _connect(self.path)
            except StoreError as err:
                raise StoreUnavailableError(
                    f"the store is unusable ({self._broken}) and could not be reopened: {err}"
                ) from err
            self._root, self._writer = root, _in_store(root.cursor())
            self._broken = None
            self._version += 1

    def _problem(self, err: duckdb.Error, *, writing: bool) -> StoreError | None:
        """The store error a DuckDB error stands for (None: not a store fault); notes an
        invalidated database, to reopen, and a damaged block, for :meth:`check`."""
        text = str(err)
        invalidated = isinstance(err, duckdb.FatalException) or _INVALIDATED in text
        if invalidated and self._broken is None:
            self._broken = text
        if _NO_SPACE in text and (writing or not invalidated):
            outcome = (
                "this write was not stored (what was acknowledged before is kept)"
                if writing
                else "this read could not spill its work to disk"
            )
            return StoreFullError(
                f"no space left on the disk holding {self.path}: {outcome}; free space and "
                "send it again"
            )
        if invalidated:
            return StoreUnavailableError(f"the store is unusable: {text}")
        if any(marker in text for marker in _DAMAGED):
            self._damage = _damaged(self.path, text)
            return self._damage
        return None

    def _read(self, run: Callable[[duckdb.DuckDBPyConnection], _T]) -> _T:
        """``run(cursor)`` on a fresh cursor; tried again when DuckDB invalidated the
        database under it (the second try reopens the file first)."""
        try:
            return self._read_once(run)
        except StoreUnavailableError:
            return self._read_once(run)

    def _read_once(self, run: Callable[[duckdb.DuckDBPyConnection], _T]) -> _T:
        self._reopen()
        with self._spawn:
            cur = self._root.cursor()
        try:
            return run(_in_store(cur))
        except duckdb.Error as err:
            problem = self._problem(err, writing=False)
            if problem is None:
                raise
            raise problem from err
        finally:
            cur.close()

    def _fetch(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple]:
        return self._read(lambda cur: cur.execute(sql, params).fetchall())

    def _arrow(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pa.Table:
        return self._read(lambda cur: cur.sql(sql, params=params).to_arrow_table())

    def _transaction(self, work: Callable[[duckdb.DuckDBPyConnection], _T]) -> _T:
        """Run ``work(cursor)`` in one transaction; bump :meth:`version` when it commits."""
        self._reopen()
        with self._lock:
            con = self._writer
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    result = work(con)
                    con.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(duckdb.Error):  # a failed COMMIT ended it already
                        con.execute("ROLLBACK")
                    raise
            except duckdb.Error as err:
                problem = self._problem(err, writing=True)
                if problem is None:
                    raise
                raise problem from err
            self._version += 1
        _restrict(self.path)  # DuckDB creates a new WAL after each checkpoint
        return result

    # --- calls ---------------------------------------------------------------------------
    def write_parts(self, parts: pl.DataFrame) -> int:
        """Upsert call parts (:data:`PART_SCHEMA`) and their usage in one transaction.

        Returns the number of distinct calls written. Raises ``InputDataError`` (nothing
        written) when a summary's usage cannot be read.
        """
        # one copy of the batch at most (merging a call's parts); the rest are views:
        # filters read only the columns they keep, and Arrow gets Polars' string views
        merged = merge_parts(parts.select(list(PART_SCHEMA)).cast(PART_SCHEMA))
        staged = merged.with_columns(part_kind())
        ended = (
            staged.lazy()
            .filter(pl.col(COMPLETE) | pl.col(s.ENDED_AT).is_not_null())
            .select(s.PROJECT_ID, s.ID, s.SUMMARY)
            .collect()
        )
        usage = usage_from_json(ended, (s.PROJECT_ID, s.ID))
        staged_keys = _to_arrow(ended.select(s.PROJECT_ID, s.ID))
        staged_usage = _to_arrow(usage)

        def work(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
            con.register("staged_keys", staged_keys)
            con.register("staged_usage", staged_usage)
            try:
                # a slice at a time: an UPDATE holds its input's strings again while it runs
                stored = pl.concat(
                    [_upsert(con, rows) for rows in _slices(staged, UPSERT_SLICE_BYTES)]
                )
                now = _as_written(staged, stored)
                # each ended call's trace id as now stored: its usage rows carry it
                con.register("staged_traces", _to_arrow(now.filter("ended").drop("ended")))
                if ended.height:
                    con.execute(
                        "DELETE FROM usage USING staged_keys k "
                        "WHERE usage.project_id = k.project_id AND usage.id = k.id"
                    )
                if usage.height:
                    con.execute(
                        "INSERT INTO usage BY NAME SELECT u.*, t.trace_id "
                        "FROM staged_usage u LEFT JOIN staged_traces t "
                        "ON t.project_id = u.project_id AND t.id = u.id"
                    )
                ended_before = stored.filter(pl.col(STORED_ENDED)).select(_KEY)
                starts = staged.filter(pl.col(KIND) == "start").select(_KEY)
                if starts.join(ended_before, on=_KEY, how="semi").height:
                    # a start after its end: the stored usage rows learn the trace id (the
                    # only case that scans the usage table for it)
                    con.execute(
                        "UPDATE usage SET trace_id = t.trace_id FROM staged_traces t "
                        "WHERE usage.project_id = t.project_id AND usage.id = t.id "
                        "AND usage.trace_id IS DISTINCT FROM t.trace_id"
                    )
                # the traces written: each call's trace before (it may have moved) and now
                before = stored.select(s.PROJECT_ID, pl.col(STORED_TRACE).alias(s.TRACE_ID))
                return pl.concat([before, now.select(s.PROJECT_ID, s.TRACE_ID)])
            finally:
                for name in (*_UPSERT_VIEWS, "staged_keys", "staged_usage", "staged_traces"):
                    con.unregister(name)

        if merged.height:
            touched = self._transaction(work)
            self._versions.wrote(touched.unique().rows())  # after the commit
        return merged.height

    def has_start(self, project_id: str, call_id: str) -> bool:
        """Whether the call's start part is stored."""
        rows = self._fetch(
            "SELECT op_name IS NOT NULL FROM calls WHERE project_id = ? AND id = ?",
            [project_id, call_id],
        )
        return bool(rows and rows[0][0])

    def delete_calls(
        self, project_id: str, call_ids: Sequence[str], now: dt.datetime | None = None
    ) -> int:
        """Mark ``call_ids`` and their descendants deleted, as the reference does.

        Descendants are searched among the live calls of the requested calls' traces; the
        count includes every requested id, found or not.
        """
        deleted_at = now or dt.datetime.now(dt.UTC)
        wanted = list(dict.fromkeys(call_ids))

        def work(con: duckdb.DuckDBPyConnection) -> int:
            edges = con.execute(
                """
                WITH traces AS (
                    SELECT DISTINCT trace_id FROM calls
                    WHERE project_id = $p AND deleted_at IS NULL AND id IN (SELECT unnest($ids))
                )
                SELECT c.parent_id, c.id FROM calls c
                WHERE c.project_id = $p AND c.deleted_at IS NULL AND c.parent_id IS NOT NULL
                  AND EXISTS (
                      SELECT 1 FROM traces t WHERE t.trace_id IS NOT DISTINCT FROM c.trace_id
                  )
                """,
                {"p": project_id, "ids": wanted},
            ).fetchall()
            children: dict[str, list[str]] = {}
            for parent, child in edges:
                children.setdefault(parent, []).append(child)
            found: set[str] = set()
            stack = list(wanted)
            while stack:
                current = stack.pop()
                if current not in found:
                    found.add(current)
                    stack.extend(children.get(current, ()))
            con.execute(
                "UPDATE calls SET deleted_at = $at WHERE project_id = $p AND deleted_at IS NULL "
                "AND id IN (SELECT unnest($ids))",
                {"at": deleted_at, "p": project_id, "ids": sorted(found)},
            )
            return len(found)

        deleted = self._transaction(work)
        self._versions.changed(project_id)  # descendants may sit in other traces
        return deleted

    def load(
        self,
        project_id: str,
        trace_ids: list[str] | None = None,
        call_ids: list[str] | None = None,
        columns: Iterable[str] | None = None,
    ) -> tuple[pl.LazyFrame, pl.LazyFrame]:
        """Calls (:data:`~engine.schema.CALL_SCHEMA`) and raw usage of one project.

        ``trace_ids`` and ``call_ids`` (both optional, combined with AND) are pushed down to
        DuckDB; rows reach Polars through Arrow. Deleted and end-only calls are included:
        the engine picks candidates itself. ``columns`` limits the call columns read (the
        JSON text columns are most of a call's bytes); default: all.
        """
        wanted = set(s.CALL_SCHEMA if columns is None else columns) | {s.ID}
        schema = {c: t for c, t in s.CALL_SCHEMA.items() if c in wanted}
        where = ["project_id = $p"]
        params: dict[str, Any] = {"p": project_id}
        for column, name, values in (("trace_id", "t", trace_ids), ("id", "c", call_ids)):
            if values is not None:
                condition, params[name] = _among(column, name, values)
                where.append(condition)
        cond = " AND ".join(where)
        # usage rows carry their call's project, trace and call ids: the same filter
        # selects them, and the two queries run at once
        usage_job = self._pool.submit(
            self._arrow, f"SELECT {USAGE_COLS} FROM usage WHERE {cond}", params
        )
        calls_tbl = self._arrow(f"SELECT {', '.join(schema)} FROM calls WHERE {cond}", params)
        usage_tbl = usage_job.result()
        return _frame(calls_tbl, schema).lazy(), _frame(usage_tbl, s.USAGE_SCHEMA).lazy()

    def traces_of(self, project_id: str, call_ids: Sequence[str]) -> list[str]:
        """The distinct trace ids of these calls (unknown ids and calls without a trace id,
        i.e. whose start has not arrived, give none), in no particular order."""
        among, wanted = _among("id", "c", call_ids)
        rows = self._fetch(
            f"SELECT DISTINCT trace_id FROM calls WHERE project_id = $p AND {among} "
            "AND trace_id IS NOT NULL",
            {"p": project_id, "c": wanted},
        )
        return [trace for (trace,) in rows]

    # --- prices --------------------------------------------------------------------------
    def add_prices(self, rows: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
        """Append price rows (keys of :data:`PRICE_ROW_FIELDS` but ``id``, which is
        generated); returns ``(id, llm_id)`` pairs in order."""
        records = [{**row, "id": str(uuid.uuid4())} for row in rows]
        cols = ", ".join(PRICE_ROW_FIELDS)
        marks = ", ".join("?" for _ in PRICE_ROW_FIELDS)

        def work(con: duckdb.DuckDBPyConnection) -> None:
            for rec in records:
                con.execute(
                    f"INSERT INTO prices ({cols}) VALUES ({marks})",
                    [rec[f] for f in PRICE_ROW_FIELDS],
                )

        if records:
            self._transaction(work)
            for project_id in {rec[s.PRICING_LEVEL_ID] for rec in records}:
                self._versions.changed(project_id)  # prices reach every trace's costs
        return [(rec["id"], rec[s.LLM_ID]) for rec in records]

    def project_price_rows(self, project_id: str) -> list[dict[str, Any]]:
        """This project's price rows (:data:`PRICE_ROW_FIELDS`), in creation order."""
        rows = self._fetch(
            f"SELECT {', '.join(PRICE_ROW_FIELDS)} FROM prices "
            "WHERE pricing_level = ? AND pricing_level_id = ? ORDER BY seq",
            [s.PROJECT_LEVEL, project_id],
        )
        return [dict(zip(PRICE_ROW_FIELDS, row, strict=True)) for row in rows]

    def purge_prices(self, project_id: str, ids: Sequence[str]) -> None:
        """Remove this project's price rows with the given ids."""

        def work(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(
                "DELETE FROM prices WHERE pricing_level = ? AND pricing_level_id = ? "
                "AND id IN (SELECT unnest(?))",
                [s.PROJECT_LEVEL, project_id, list(ids)],
            )

        self._transaction(work)
        self._versions.changed(project_id)

    def prices(self, project_id: str) -> pl.DataFrame:
        """Default prices then this project's rows, as one :data:`PRICE_SCHEMA` table.

        Kept per project until its prices change (writes of calls leave it), so polls do
        not rebuild it, nor its price timeline.
        """
        version = self._versions.epoch(project_id)
        cached = self._price_cache.get(project_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        cols = ", ".join(PRICE_COLS)
        tbl = self._arrow(
            f"SELECT {cols} FROM prices WHERE pricing_level = ? AND pricing_level_id = ? "
            "ORDER BY seq",
            [s.PROJECT_LEVEL, project_id],
        )
        table = price_table(_frame(tbl, s.PRICE_SCHEMA))
        self._price_cache[project_id] = (version, table)
        return table

    # --- objects and files ---------------------------------------------------------------
    def add_object(self, row: dict[str, Any]) -> None:
        """Store an object version; an existing ``(project, object_id, digest)`` is kept."""

        def work(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(
                "INSERT INTO objects (project_id, object_id, digest, val, kind, "
                "base_object_class, leaf_object_class, wb_user_id, created_at) "
                "VALUES ($project_id, $object_id, $digest, $val, $kind, $base_object_class, "
                "$leaf_object_class, $wb_user_id, now()) ON CONFLICT DO NOTHING",
                row,
            )

        self._transaction(work)

    def add_file(self, project_id: str, digest: str, name: str, content: bytes) -> None:
        """Store file content under its digest; an existing digest is kept."""

        def work(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?, now()) ON CONFLICT DO NOTHING",
                [project_id, digest, name, content],
            )

        self._transaction(work)

    def read_object(self, project_id: str, object_id: str, digest: str) -> str | None:
        """The stored JSON value of an object version, if any."""
        rows = self._fetch(
            "SELECT val FROM objects WHERE project_id = ? AND object_id = ? AND digest = ?",
            [project_id, object_id, digest],
        )
        return rows[0][0] if rows else None

    def read_file(self, project_id: str, digest: str) -> bytes | None:
        """The stored content of a file, if any."""
        rows = self._fetch(
            "SELECT content FROM files WHERE project_id = ? AND digest = ?", [project_id, digest]
        )
        return bytes(rows[0][0]) if rows else None

    def projects(self) -> list[tuple[str, int]]:
        """``(project_id, number of calls)`` of every project with calls, by project id."""
        return self._fetch(
            "SELECT project_id, count(*) FROM calls GROUP BY project_id ORDER BY project_id"
        )


def _slices(frame: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    """``frame`` cut into zero-copy row slices of about ``size`` bytes each."""
    rows = max(1, frame.height * size // max(1, int(frame.estimated_size())))
    return [frame.slice(start, rows) for start in range(0, max(1, frame.height), rows)]


_KEY = [s.PROJECT_ID, s.ID]
_UPSERT_VIEWS = ("staged_ids", "staged_new", "staged_stored")


def _upsert(con: duckdb.DuckDBPyConnection, rows: pl.DataFrame) -> pl.DataFrame:
    """Write staged parts (one per call): new calls appended, stored ones written over by
    their kind. Returns the stored ones as they were before (:data:`STORED_SCHEMA`)."""
    con.register("staged_ids", _to_arrow(rows.select(_KEY)))
    stored = pl.DataFrame(con.execute(STORED).fetchall(), schema=STORED_SCHEMA, orient="row")
    keys = stored.select(_KEY)
    new = rows.join(keys, on=_KEY, how="anti") if stored.height else rows
    if new.height:
        con.register("staged_new", _to_arrow(new))
        con.execute(INSERT_NEW)
    if stored.height:
        old = rows.join(keys, on=_KEY, how="semi")
        con.register("staged_stored", _to_arrow(old))
        for kind in old.get_column(KIND).unique().to_list():
            for sql in UPDATES[kind]:
                con.execute(sql)
    return stored


def _as_written(staged: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """Each staged call's project, id and trace id as stored after the write, and whether
    it has ended: an end part keeps the stored trace (none for a new call), a start part
    the stored end."""
    end_only, start_only = pl.col(KIND) == "end", pl.col(KIND) == "start"
    return (
        staged.select(*_KEY, KIND, COMPLETE, s.TRACE_ID, s.ENDED_AT)
        .join(stored, on=_KEY, how="left")
        .select(
            *_KEY,
            pl.when(end_only)
            .then(pl.col(STORED_TRACE))
            .otherwise(pl.col(s.TRACE_ID))
            .alias(s.TRACE_ID),
            (
                pl.col(COMPLETE)
                | pl.col(s.ENDED_AT).is_not_null()
                | (start_only & pl.col(STORED_ENDED).fill_null(False))
            ).alias("ended"),
        )
    )


def _to_arrow(frame: pl.DataFrame) -> pa.Table:
    """``frame`` as Arrow without copying its strings (DuckDB reads string views)."""
    return frame.to_arrow(compat_level=pl.CompatLevel.newest())


def _among(column: str, name: str, values: Sequence[str]) -> tuple[str, Any]:
    """``column`` among ``values`` as SQL and its parameter: one value is an equality, which
    DuckDB plans in a fraction of the time of a list's semi join (~1 ms less per query;
    a trace view asks for one trace)."""
    if len(values) == 1:
        return f"{column} = ${name}", values[0]
    return f"{column} IN (SELECT unnest(${name}))", list(values)


def _frame(table: pa.Table, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """``table`` as a frame of ``schema``, in its order, in one chunk; selected and cast
    only where DuckDB's columns differ, so the engine usually takes it as it is.

    DuckDB answers in a batch per row group read, hundreds for a big trace; the engine's
    NumPy steps would each copy such columns into one array again, so they are made
    contiguous once, here."""
    frame = pl.from_arrow(table, rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    if list(frame.schema.items()) != list(schema.items()):
        frame = frame.select(list(schema)).cast(schema)
    return frame.rechunk()
