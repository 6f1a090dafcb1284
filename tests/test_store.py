"""CallStore: merging of parts, persistence, migrations, load push-down, delete, threads."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import random
import threading
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine import schema as s
from service import store as store_module
from service.migrations import LATEST, MIGRATIONS
from service.parts import call_part, merge_parts, parts_frame
from service.settings import DB_FILE
from service.store import CallStore, StoreReader

P = "e/p"
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def start(call_id: str, trace: str = "t", parent: str | None = None, **kw: Any) -> dict:
    call = {
        "project_id": P,
        "id": call_id,
        "trace_id": trace,
        "parent_id": parent,
        "op_name": "op",
        "started_at": T0,
        "attributes": {"a": 1},
        "inputs": {"x": "weave-trace-internal:///p/object/o:1"},
        **kw,
    }
    return call_part(call, start=True, end=False)


def end(call_id: str, tokens: int = 1, **kw: Any) -> dict:
    call = {
        "project_id": P,
        "id": call_id,
        "ended_at": T0 + dt.timedelta(seconds=tokens),
        "output": {"o": tokens},
        "summary": {"usage": {"m": {"prompt_tokens": tokens, "requests": 1}}},
        **kw,
    }
    return call_part(call, start=False, end=True)


def complete(call_id: str, tokens: int = 1) -> dict:
    call = {
        "project_id": P,
        "id": call_id,
        "trace_id": "t",
        "op_name": "op",
        "started_at": T0,
        "inputs": {},
        "ended_at": T0,
        "summary": {"usage": {"m": {"prompt_tokens": tokens}}},
    }
    return call_part(call, start=True, end=True)


def snapshot(store: CallStore, project: str = P) -> tuple[pl.DataFrame, pl.DataFrame]:
    calls, usage = store.load(project)
    return calls.collect().sort(s.ID), usage.collect().sort(s.ID, s.MODEL)


def assert_usage_follows_calls(store: CallStore) -> None:
    """Every usage row carries the trace id its call has (what trace filters rely on)."""
    stale = store._fetch(
        "SELECT u.id, u.trace_id, c.trace_id FROM usage u LEFT JOIN calls c "
        "ON c.project_id = u.project_id AND c.id = u.id "
        "WHERE c.id IS NULL OR u.trace_id IS DISTINCT FROM c.trace_id"
    )
    assert stale == []


def _random_parts(rng: random.Random, n: int = 12) -> list[dict]:
    parts = []
    for i in range(n):
        cid = f"c{i % 5}"
        kind = rng.choice(["start", "end", "end", "complete"])
        if kind == "start":  # a repeated start may move its call to another trace
            trace = rng.choice(["t", "t", "u"])
            at = T0 + dt.timedelta(seconds=i)
            parts.append(start(cid, trace, display_name=f"d{i}", started_at=at))
        elif kind == "end":
            parts.append(end(cid, tokens=i, started_at=T0 - dt.timedelta(seconds=i)))
        else:
            parts.append(complete(cid, tokens=100 + i))
    return parts


@pytest.mark.parametrize("seed", range(12))
def test_one_batch_equals_the_same_parts_one_by_one(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    parts = _random_parts(rng)
    one = CallStore(tmp_path / "one.duckdb")
    many = CallStore(tmp_path / "many.duckdb")
    one.write_parts(parts_frame(parts))
    for part in parts:
        many.write_parts(parts_frame([part]))
    a, b = snapshot(one), snapshot(many)
    assert_frame_equal(a[0], b[0])
    assert_frame_equal(a[1], b[1])
    for st in (one, many):
        assert_usage_follows_calls(st)
        for trace in ("t", "u"):
            calls, usage = st.load(P, trace_ids=[trace])
            in_trace = set(calls.collect()[s.ID])
            assert set(usage.collect()[s.ID]) == in_trace & set(a[1][s.ID])
    one.close(), many.close()


@pytest.mark.parametrize("seed", range(6))
def test_a_batch_merged_slice_by_slice_equals_it_merged_whole(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    stored, batch = _random_parts(rng, 10), [*_random_parts(rng), start("c9", "u"), end("c8")]
    snapshots = []
    for slice_bytes in (store_module.UPSERT_SLICE_BYTES, 1):  # 1: a slice per call
        monkeypatch.setattr(store_module, "UPSERT_SLICE_BYTES", slice_bytes)
        st = CallStore(tmp_path / f"{slice_bytes}.duckdb")
        st.write_parts(parts_frame(stored))
        st.write_parts(parts_frame(batch))
        assert_usage_follows_calls(st)
        snapshots.append(snapshot(st))
        st.close()
    assert_frame_equal(snapshots[0][0], snapshots[1][0])
    assert_frame_equal(snapshots[0][1], snapshots[1][1])


@pytest.mark.parametrize("seed", range(6))
def test_start_and_end_order_does_not_matter(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    parts = [p for i in range(6) for p in (start(f"c{i}", parent="c0"), end(f"c{i}", i))]
    orders = []
    for k in range(2):
        rng.shuffle(parts)
        st = CallStore(tmp_path / f"{k}.duckdb")
        for i in range(0, len(parts), rng.choice([1, 3])):
            st.write_parts(parts_frame(parts[i : i + 3]))
        orders.append(snapshot(st))
        st.close()
    assert_frame_equal(orders[0][0], orders[1][0])
    assert_frame_equal(orders[0][1], orders[1][1])
    assert orders[0][1].height == 6  # every end's usage, whatever came first


@pytest.mark.parametrize("end_first", [True, False])
def test_a_trace_filter_finds_usage_whichever_part_came_first(
    store: CallStore, end_first: bool
) -> None:
    parts = [start("a", "t1"), end("a", 5)]
    for part in reversed(parts) if end_first else parts:
        store.write_parts(parts_frame([part]))
    assert_usage_follows_calls(store)
    _, usage = store.load(P, trace_ids=["t1"])
    assert usage.collect().select(s.ID, "prompt_tokens").rows() == [("a", 5)]


def test_a_repeated_start_moves_the_usage_to_its_new_trace(store: CallStore) -> None:
    store.write_parts(parts_frame([start("a", "t1"), end("a", 5)]))
    store.write_parts(parts_frame([start("a", "t2")]))
    assert_usage_follows_calls(store)
    assert store.load(P, trace_ids=["t1"])[1].collect().height == 0
    assert store.load(P, trace_ids=["t2"])[1].collect()[s.ID].to_list() == ["a"]


def test_merge_keeps_first_end_started_at_until_a_start_arrives() -> None:
    parts = parts_frame(
        [end("a", 1, started_at=T0), end("a", 2, started_at=T0 + dt.timedelta(days=1))]
    )
    merged = merge_parts(parts)
    assert merged.height == 1
    assert merged[s.STARTED_AT][0] == T0 and merged[s.OUTPUT][0] == '{"o":2}'


def test_persists_across_restart_and_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    st = CallStore(path)
    st.write_parts(parts_frame([start("a"), end("a", 7), start("b", parent="a")]))
    before = snapshot(st)
    st.close()
    st = CallStore(path)
    after = snapshot(st)
    assert_frame_equal(before[0], after[0])
    assert_frame_equal(before[1], after[1])
    assert after[1].select(s.ID, s.MODEL, "prompt_tokens").rows() == [("a", "m", 7)]
    st.close()
    con = duckdb.connect(str(path))
    versions = con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert versions == [(v,) for v in range(1, LATEST + 1)]  # each migration applied once
    con.execute("INSERT INTO schema_version VALUES (?)", [LATEST + 1])
    con.close()
    with pytest.raises(RuntimeError, match="newer"):
        CallStore(path)


def test_calls_are_kept_in_small_row_groups_across_reopens(tmp_path: Path) -> None:
    """DuckDB writes a transaction's appends to the file a full row group at a time: small
    row groups keep a big batch of big calls from waiting in memory until the commit."""
    path = tmp_path / DB_FILE
    rows = store_module.ROW_GROUP_ROWS
    for batch in range(2):  # the second batch after a reopen
        st = CallStore(path)
        ids = range(batch * 3 * rows, (batch + 1) * 3 * rows)
        st.write_parts(parts_frame([complete(f"c{i}") for i in ids]))
        st.close()
    st = CallStore(path)
    groups = st._fetch(
        "SELECT row_group_id, max(start + count) - min(start) FROM pragma_storage_info('calls') "
        "WHERE segment_type <> 'VALIDITY' GROUP BY row_group_id"
    )
    assert len(groups) >= 6 and max(size for _, size in groups) <= rows
    assert st.stats()["calls"] == 6 * rows
    st.close()


def test_new_calls_are_appended_and_stored_ones_written_over(
    store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New calls take a plain INSERT (which DuckDB writes to the file as row groups fill,
    where a MERGE or an UPDATE holds every row until the commit)."""
    statements: list[str] = []

    class Spied:
        def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
            self._con = con

        def execute(self, sql: str, *args: Any) -> Any:
            statements.append(sql)
            return self._con.execute(sql, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._con, name)

    monkeypatch.setattr(store, "_writer", Spied(store._writer))
    store.write_parts(parts_frame([start("a"), end("a", 2), start("b")]))
    assert any("FROM staged_new" in sql for sql in statements)
    assert not any(
        sql.startswith(("UPDATE calls", "MERGE", "DELETE FROM calls")) for sql in statements
    )
    statements.clear()
    store.write_parts(parts_frame([end("b", 3), complete("a", 5)]))
    assert not any("FROM staged_new" in sql for sql in statements)
    assert any(sql.startswith("UPDATE calls") for sql in statements)
    assert any(sql.startswith("DELETE FROM calls") for sql in statements)
    calls, usage = snapshot(store)
    assert calls.select(s.ID, s.OP_NAME).rows() == [("a", "op"), ("b", "op")]
    assert usage.select(s.ID, "prompt_tokens").rows() == [("a", 5), ("b", 3)]
    assert_usage_follows_calls(store)


def test_a_data_dir_with_a_quote_in_its_name(tmp_path: Path) -> None:
    st = CallStore(tmp_path / "it's" / DB_FILE)
    st.write_parts(parts_frame([start("a"), end("a", 1)]))
    st.close()
    st = CallStore(tmp_path / "it's" / DB_FILE)
    assert st.stats()["calls"] == 1
    st.close()


def test_a_version_1_store_is_migrated_with_its_usage_keyed_by_trace(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    con.execute(MIGRATIONS[0])
    con.execute("INSERT INTO schema_version VALUES (1)")
    con.execute(
        "INSERT INTO calls (project_id, id, trace_id, op_name, started_at, ended_at) VALUES "
        "(?, 'a', 't1', 'op', ?, ?), (?, 'b', 't2', 'op', ?, ?), (?, 'c', NULL, NULL, ?, ?)",
        [P, T0, T0] * 3,
    )
    con.execute(
        "INSERT INTO usage (project_id, id, model, prompt_tokens) VALUES "
        "(?, 'a', 'm', 1), (?, 'b', 'm', 2), (?, 'b', 'n', 3), (?, 'c', 'm', 4)",
        [P] * 4,
    )
    con.close()
    st = CallStore(path)
    assert_usage_follows_calls(st)
    _, usage = st.load(P, trace_ids=["t2"])
    assert sorted(usage.collect().select(s.ID, s.MODEL, "prompt_tokens").rows()) == [
        ("b", "m", 2),
        ("b", "n", 3),
    ]
    assert st.load(P)[1].collect().height == 4  # nothing lost, the end-only call's row too
    st.close()


def test_columns_types_and_refs(store: CallStore) -> None:
    store.write_parts(parts_frame([start("a"), end("a", 3)]))
    calls, usage = store.load(P)
    assert calls.collect_schema() == pl.Schema(s.CALL_SCHEMA)
    assert usage.collect_schema() == pl.Schema(s.USAGE_SCHEMA)
    row = calls.collect().row(0, named=True)
    assert row[s.INPUT_REFS] == ["weave-trace-internal:///p/object/o:1"]
    assert row[s.OUTPUT_REFS] == [] and row[s.ATTRIBUTES] == '{"a":1}'
    assert row[s.ENDED_AT] == T0 + dt.timedelta(seconds=3)


def test_load_pushes_down_project_traces_and_calls(store: CallStore) -> None:
    store.write_parts(
        parts_frame(
            [
                start("a", "t1"),
                end("a", 1),
                start("b", "t2"),
                end("b", 2),
                start("c", "t2"),
                call_part({**start("z"), "project_id": "other/p"}, start=True, end=False),
            ]
        )
    )

    def ids(**kw: Any) -> tuple[list[str], list[str]]:
        calls, usage = store.load(P, **kw)
        return sorted(calls.collect()[s.ID]), sorted(usage.collect()[s.ID])

    assert ids() == (["a", "b", "c"], ["a", "b"])
    assert ids(trace_ids=["t2"]) == (["b", "c"], ["b"])
    assert ids(call_ids=["a", "c"]) == (["a", "c"], ["a"])
    assert ids(trace_ids=["t2"], call_ids=["a", "c"]) == (["c"], [])
    assert ids(trace_ids=[]) == ([], [])
    assert sorted(store.load("other/p")[0].collect()[s.ID]) == ["z"]


def test_traces_of_calls(store: CallStore) -> None:
    store.write_parts(
        parts_frame(
            [
                start("a", "t1"),
                start("b", "t2"),
                start("c", "t2"),
                end("no-start-yet", 1),
                call_part({**start("z", "t9"), "project_id": "other/p"}, start=True, end=False),
            ]
        )
    )
    assert sorted(store.traces_of(P, ["a", "b", "c", "unknown"])) == ["t1", "t2"]
    assert store.traces_of(P, ["no-start-yet", "z"]) == []  # no trace yet; another project


def test_delete_is_trace_scoped_and_survives_cycles(store: CallStore) -> None:
    store.write_parts(
        parts_frame(
            [
                start("root", "t1"),
                start("kid", "t1", parent="root"),
                start("grandkid", "t1", parent="kid"),
                start("elsewhere", "t2", parent="kid"),  # another trace: not a descendant
                start("x", "t3", parent="y"),
                start("y", "t3", parent="x"),  # a cycle
            ]
        )
    )
    version = store.version()
    assert store.delete_calls(P, ["kid", "ghost"]) == 3  # kid, grandkid, and the unknown id
    assert store.delete_calls(P, ["x"]) == 2
    calls = store.load(P)[0].collect()
    deleted = set(calls.filter(pl.col(s.DELETED_AT).is_not_null())[s.ID])
    assert deleted == {"kid", "grandkid", "x", "y"}
    assert store.version() == version + 2
    # deleting again does not move the mark
    first = calls.filter(pl.col(s.ID) == "kid")[s.DELETED_AT][0]
    store.delete_calls(P, ["kid"], now=T0)
    assert store.load(P)[0].collect().filter(pl.col(s.ID) == "kid")[s.DELETED_AT][0] == first


def test_a_failing_write_leaves_nothing(store: CallStore) -> None:
    bad = end("b")
    bad[s.SUMMARY] = '{"usage": {"m": {"requests": 99999999999999999999999}}}'
    with pytest.raises(Exception, match="64-bit"):
        store.write_parts(parts_frame([start("a"), end("a"), bad]))
    assert store.stats()["calls"] == 0 and store.version() == 0


def test_reads_see_whole_writes_while_threads_write(store: CallStore) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for batch in range(30):
                store.write_parts(parts_frame([start(f"{batch}-{i}") for i in range(20)]))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)
        finally:
            done.set()

    def reader() -> None:
        try:
            while not done.is_set():
                n = store.load(P)[0].collect().height
                assert n % 20 == 0, n
                store.stats()
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.stats()["calls"] == 600 and store.version() == 30


def test_prices_default_then_project_rows(store: CallStore) -> None:
    row = {
        s.PRICING_LEVEL: "project",
        s.PRICING_LEVEL_ID: P,
        s.PROVIDER_ID: "default",
        s.LLM_ID: "m",
        s.EFFECTIVE_DATE: T0,
        **{name: 1.0 for name in s.PRICES},
        "prompt_token_cost_unit": "USD",
        "completion_token_cost_unit": "USD",
        "created_by": "ada",
        "created_at": T0,
    }
    ids = store.add_prices([row, row | {s.LLM_ID: "n"}, row | {s.PRICING_LEVEL_ID: "o/p"}])
    assert [llm for _, llm in ids] == ["m", "n", "m"] and len({i for i, _ in ids}) == 3
    prices = store.prices(P)
    assert dict(prices.schema) == s.PRICE_SCHEMA
    tail = prices.filter(pl.col(s.PRICING_LEVEL) == "project")
    assert tail[s.LLM_ID].to_list() == ["m", "n"] and tail[s.PRICE_SEQ].is_sorted()
    assert prices.filter(pl.col(s.PRICING_LEVEL) == "default").height > 1000
    store.purge_prices(P, [ids[0][0], ids[2][0]])  # the other project's row is not ours to purge
    assert [r[s.LLM_ID] for r in store.project_price_rows(P)] == ["n"]
    assert [r[s.LLM_ID] for r in store.project_price_rows("o/p")] == ["m"]


def test_credentials_in_inputs_and_attributes_are_redacted(store: CallStore) -> None:
    from weave.trace_server.credential_redaction import redact_sensitive_keys

    from tests.reference import weave_ref  # noqa: F401 - the reference's stub first

    inputs = {
        "openai_api_key": "sk-1",
        "apiKey": "k",
        "headers": {"Authorization": "Bearer x", "X-API-Key": "", "n": 1},
        "items": [{"client_secret": "s"}, ("aws_secret_access_key", "v")],
        "monkey": "banana",
        "keywords": ["a"],
        "private_key": 3,
        "session_token": "REDACTED",
    }
    store.write_parts(parts_frame([start("a", inputs=inputs, attributes={"api_token": "t"})]))
    row = store.load(P)[0].collect().row(0, named=True)
    want = redact_sensitive_keys(inputs)
    assert json.loads(row[s.INPUTS]) == json.loads(json.dumps(want))
    assert json.loads(row[s.ATTRIBUTES]) == {"api_token": "REDACTED"}
    assert "sk-1" not in row[s.INPUTS] and "Bearer" not in row[s.INPUTS]


@pytest.mark.parametrize("name", [n for n in vars(StoreReader) if not n.startswith("_")])
def test_store_and_fake_store_follow_the_reader_protocol(name: str) -> None:
    from tests.test_service import FakeStore

    def params(cls: type) -> list[str]:
        return list(inspect.signature(getattr(cls, name)).parameters)

    assert params(CallStore) == params(StoreReader)
    assert params(FakeStore) == params(StoreReader)


def test_parts_frame_in_slices_equals_one_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.parts as parts_module

    t = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    rows = [
        call_part({"project_id": "p", "id": f"c{i}", "op_name": "op", "started_at": t},
                  start=True, end=False)
        for i in range(7)
    ]  # fmt: skip
    whole = parts_frame(rows)
    monkeypatch.setattr(parts_module, "PARTS_PER_SLICE", 3)
    sliced = parts_frame(rows)
    assert sliced.n_chunks() > 1
    assert sliced.equals(whole)
