"""Bulk import: JSON Lines (plain and gzip'd) and canonical Parquet, the CLI, the sample."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine import schema as s
from engine import trace_usage
from engine.errors import InputDataError
from engine.trace_usage import price_table
from service.cli import main
from service.importer import SAMPLE_DIR, import_files, seed_sample
from service.parts import call_part, parts_frame
from service.sample import PROJECT as SAMPLE_PROJECT
from service.settings import DB_FILE
from service.store import CallStore
from tests.reference import weave_ref
from tests.reference.compare import assert_same_usage
from tests.reference.generate import PROJECT, random_calls

T0 = "2025-01-01T00:00:00+00:00"


def _line(call_id: str, ended: bool = True, **kw: Any) -> dict[str, Any]:
    call = {
        "project_id": PROJECT,
        "id": call_id,
        "trace_id": "t",
        "parent_id": None,
        "op_name": "op",
        "started_at": T0,
        "attributes": {},
        "inputs": {"r": "weave-trace-internal:///x/object/o:1"},
        **kw,
    }
    if ended:
        call |= {
            "ended_at": "2025-01-01T00:00:03Z",
            "output": 1,
            "summary": {"usage": {"gpt-4o": {"prompt_tokens": 5, "requests": 1}}},
        }
    return call


def _write_jsonl(path: Path, calls: list[dict[str, Any]], gz: bool = False) -> Path:
    body = "".join(json.dumps(c) + "\n" for c in calls).encode()
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


def _snapshot(store: CallStore, project: str = PROJECT) -> tuple[pl.DataFrame, pl.DataFrame]:
    calls, usage = store.load(project)
    return calls.collect().sort(s.ID), usage.collect().sort(s.ID, s.MODEL)


@pytest.mark.parametrize("gz", [False, True])
def test_jsonl_import_is_idempotent_and_batched(store: CallStore, tmp_path: Path, gz: bool) -> None:
    calls = [_line(f"c{i}", ended=i % 3 != 0, parent_id="c1" if i > 1 else None) for i in range(25)]
    path = _write_jsonl(tmp_path / "calls.jsonl", calls, gz)
    ticks: list[int] = []
    stats = import_files(store, [path], batch_rows=10, progress=lambda p, total, unit: ticks.append)
    assert (stats.rows, stats.batches) == (25, 3)
    assert sum(ticks) == path.stat().st_size
    first = _snapshot(store)
    assert first[0].height == 25 and first[1].height == 16
    assert first[0].filter(pl.col(s.ID) == "c0")[s.ENDED_AT][0] is None
    assert first[0][s.INPUT_REFS][0].to_list() == ["weave-trace-internal:///x/object/o:1"]
    import_files(store, [path])
    again = _snapshot(store)
    assert_frame_equal(first[0], again[0])
    assert_frame_equal(first[1], again[1])


def test_a_start_only_line_keeps_a_stored_end(store: CallStore, tmp_path: Path) -> None:
    end = {"project_id": PROJECT, "id": "a", "ended_at": dt.datetime(2025, 1, 2, tzinfo=dt.UTC)}
    end["summary"] = {"usage": {"m": {"requests": 2}}}
    store.write_parts(parts_frame([call_part(end, start=False, end=True)]))
    import_files(store, [_write_jsonl(tmp_path / "s.jsonl", [_line("a", ended=False)])])
    calls, usage = _snapshot(store)
    assert calls[s.OP_NAME].to_list() == ["op"] and calls[s.ENDED_AT][0] is not None
    assert usage["requests"].to_list() == [2]


def test_bad_lines_name_file_and_line(store: CallStore, tmp_path: Path) -> None:
    good = json.dumps(_line("a"))
    for body, reason in (
        (good + "\n{not json\n", "not JSON"),
        (good + "\n" + json.dumps(_line("b") | {"started_at": "yesterday"}), "ISO 8601"),
        (good + "\n" + json.dumps({"id": "x", "project_id": PROJECT}), "missing column 'op_name'"),
        (good + "\n[1, 2]", "one JSON object"),
    ):
        path = tmp_path / "bad.jsonl"
        path.write_text(body)
        with pytest.raises(InputDataError, match=reason) as err:
            import_files(store, [path])
        assert "bad.jsonl:2" in str(err.value)
    assert store.stats()["calls"] == 0  # the whole batch (with line 1) was rejected


@pytest.mark.parametrize("seed", range(4))
def test_parquet_import_answers_as_the_reference(
    store: CallStore, tmp_path: Path, seed: int
) -> None:
    calls = random_calls(random.Random(seed))
    frame = weave_ref.to_frame(calls)
    path = tmp_path / "calls.parquet"
    frame.write_parquet(path)
    import_files(store, [path], batch_rows=7)
    import_files(store, [path], batch_rows=50)  # idempotent
    stored, usage = store.load(PROJECT)
    want_rows = frame.filter(pl.col(s.PROJECT_ID) == PROJECT).sort(s.ID)
    assert_frame_equal(
        stored.collect().sort(s.ID), want_rows.cast(s.CALL_SCHEMA), check_dtypes=False
    )
    req = {"project_id": PROJECT, "include_costs": True}
    prices = price_table(default=weave_ref.to_price_frame([]))
    got = trace_usage(stored, req, usage=usage, prices=prices).to_dict()
    want = weave_ref.reference_trace_usage(weave_ref.make_server(calls, []), req)
    assert_same_usage(got, want, f"seed {seed}")


def test_parquet_without_refs_or_optional_columns(store: CallStore, tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "project_id": [PROJECT],
            "id": ["a"],
            "op_name": ["op"],
            "started_at": ["2025-01-01T00:00:00Z"],
            "inputs": ['{"r": "weave-trace-internal:///x/object/o:1"}'],
            "output": ['"weave-trace-internal:///x/object/p:2"'],
        }
    )
    frame.write_parquet(tmp_path / "min.parquet")
    import_files(store, [tmp_path / "min.parquet"])
    row = _snapshot(store)[0].row(0, named=True)
    assert row[s.INPUT_REFS] == ["weave-trace-internal:///x/object/o:1"]
    assert row[s.OUTPUT_REFS] == ["weave-trace-internal:///x/object/p:2"]
    assert row[s.STARTED_AT] == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    pl.DataFrame({"project_id": [PROJECT]}).write_parquet(tmp_path / "noid.parquet")
    with pytest.raises(InputDataError, match="'id'"):
        import_files(store, [tmp_path / "noid.parquet"])


def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_jsonl(tmp_path / "calls.jsonl.gz", [_line("a"), _line("b")], gz=True)
    data = tmp_path / "data"
    assert main(["import", str(path), "--data-dir", str(data), "--quiet"]) == 0
    assert "imported 2 rows" in capsys.readouterr().out
    (tmp_path / "bad.jsonl").write_text("nope\n")
    assert main(["import", str(tmp_path / "bad.jsonl"), "--data-dir", str(data)]) == 1
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "missing.jsonl"), "--data-dir", str(data)]) == 2
    store = CallStore(data / DB_FILE)
    try:
        assert store.stats()["calls"] == 2
        held = subprocess.run(
            [sys.executable, "-m", "service.cli", "import", str(path), "--data-dir", str(data)],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert held.returncode == 1 and "one process" in held.stderr
    finally:
        store.close()


def test_sample_is_seeded_once_and_has_what_the_issue_asks(store: CallStore) -> None:
    assert seed_sample(store, SAMPLE_DIR) >= 20_000
    assert seed_sample(store, SAMPLE_DIR) == 0
    calls, usage = (f.collect() for f in store.load(SAMPLE_PROJECT))
    sizes = calls.group_by(s.TRACE_ID).len()
    assert sizes["len"].max() >= 20_000 and sizes.height >= 4
    assert usage[s.MODEL].n_unique() >= 4
    assert calls.filter(pl.col(s.ENDED_AT).is_null()).height >= 1
    res = trace_usage(
        calls,
        {
            "project_id": SAMPLE_PROJECT,
            "include_costs": True,
            "filter": {"trace_ids": ["live-0001"]},
        },
        usage=usage,
        prices=store.prices(SAMPLE_PROJECT),
    ).to_dict()
    assert res["unfinished_call_ids"] and res["call_usage"]


def test_cli_import_into_a_damaged_store_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_jsonl(tmp_path / "calls.jsonl", [_line("a")])
    data = tmp_path / "data"
    data.mkdir()
    (data / DB_FILE).write_bytes(b"garbage" * 1000)
    assert main(["import", str(path), "--data-dir", str(data), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("trace-usage import: ") and "damaged" in err and err.count("\n") == 1


def test_cli_import_takes_directories_and_globs_as_rollup_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "exports"
    (folder / "day1").mkdir(parents=True)
    _write_jsonl(folder / "day1" / "calls.jsonl.gz", [_line("a"), _line("b")], gz=True)
    pl.DataFrame(
        {"project_id": [PROJECT], "id": ["c"], "op_name": ["op"], "started_at": [T0]}
    ).write_parquet(folder / "more.parquet")
    (folder / "notes.txt").write_text("not calls")  # a directory contributes calls files only
    data = tmp_path / "data"
    assert main(["import", str(folder), "--data-dir", str(data), "--quiet"]) == 0
    assert "imported 3 rows from 2 file(s)" in capsys.readouterr().out
    assert main(["import", str(folder / "*" / "*.gz"), "--data-dir", str(data), "--quiet"]) == 0
    assert main(["import", str(tmp_path / "none-*.jsonl"), "--data-dir", str(data)]) == 2
    assert "no input matches" in capsys.readouterr().err
    store = CallStore(data / DB_FILE)
    try:
        assert sorted(_snapshot(store)[0].get_column(s.ID)) == ["a", "b", "c"]
    finally:
        store.close()
