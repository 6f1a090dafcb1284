"""``trace-usage import`` and ``trace-usage rollup`` read calls through one reader: the same
files are accepted or refused by both, with the same one-line error naming the file, the
line (or row) and the column, and what both read is the same calls."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine import schema as s
from engine.batch import rollup_files
from engine.errors import InvalidRequestError
from engine.io import read_calls
from service.cli import main
from service.settings import DB_FILE
from service.store import CallStore

T0 = "2025-01-01T00:00:00Z"
CALL = {"project_id": "e/p", "id": "a", "trace_id": "t", "op_name": "op", "started_at": T0}
END = {"ended_at": "2025-01-01T00:00:01Z", "summary": {"usage": {"m": {"requests": 1}}}}


def _jsonl(path: Path, *records: Any) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _both(tmp_path: Path, capsys: pytest.CaptureFixture[str], source: Path) -> list[tuple]:
    """(exit code, stderr) of ``import`` and of ``rollup`` on ``source``."""
    results = []
    for argv in (
        ["import", str(source), "--data-dir", str(tmp_path / "data"), "--quiet"],
        ["rollup", str(source), "-o", str(tmp_path / "out.parquet"), "--no-progress"],
    ):
        code = main([*argv, "--workers", "1"] if argv[0] == "rollup" else argv)
        err = capsys.readouterr().err
        results.append((code, err.split(": ", 1)[-1] if code else ""))
        assert "Traceback" not in err
        assert not code or (err.count("\n") == 1 and err.startswith(f"trace-usage {argv[0]}: "))
    return results


ACCEPTED = {
    "bare complete": [CALL | END],
    "bare start-only": [CALL],
    "start body": [{"start": CALL}],
    "start and complete": [{"start": CALL | {"id": "b"}}, CALL | END | {"parent_id": "b"}],
    "offset timestamp": [CALL | {"started_at": "2025-01-01T01:00:00+01:00"}],
    "naive timestamp, read as UTC": [CALL | {"started_at": "2025-01-01T00:00:00"}],
}


@pytest.mark.parametrize("records", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_both_accept_the_same_lines_and_read_the_same_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], records: list[dict[str, Any]]
) -> None:
    source = _jsonl(tmp_path / "calls.jsonl", *records)
    assert _both(tmp_path, capsys, source) == [(0, ""), (0, "")]
    store = CallStore(tmp_path / "data" / DB_FILE)
    try:
        stored = store.load("e/p")[0].collect()
    finally:
        store.close()
    columns = [s.ID, s.PARENT_ID, s.OP_NAME, s.STARTED_AT, s.ENDED_AT, s.SUMMARY]
    read = read_calls([source]).collect()
    assert stored.select(columns).sort(s.ID).equals(read.select(columns).sort(s.ID))
    assert read.get_column(s.STARTED_AT).to_list()[0] == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    rolled = pl.read_parquet(tmp_path / "out.parquet")
    assert sorted(rolled.get_column(s.CALL_ID).unique()) == sorted(read.get_column(s.ID))


REFUSED = {
    "no id": (CALL | {"id": None}, "missing column 'id'"),
    "empty id": (CALL | {"id": ""}, "missing column 'id'"),
    "no project": ({k: v for k, v in CALL.items() if k != "project_id"}, "'project_id'"),
    "no op_name": (CALL | {"op_name": None}, "missing column 'op_name'"),
    "start without id": ({"start": CALL | {"id": None}}, "missing column 'id'"),
    "id not a string": (CALL | {"id": 7}, "column 'id' must be a string, not 7"),
    "parent not a string": (CALL | {"parent_id": ["x"]}, "column 'parent_id' must be a string"),
    "bad timestamp": (CALL | {"started_at": "yesterday"}, "column 'started_at' must be an ISO"),
    "timestamp number": (CALL | END | {"ended_at": 17}, "column 'ended_at' must be an ISO"),
    "run step text": (CALL | {"wb_run_step": "3"}, "column 'wb_run_step' must be a 64-bit"),
    "run step past int64": (CALL | {"wb_run_step": 2**63}, "column 'wb_run_step' must be"),
    "refs not a list": (CALL | {"input_refs": "x"}, "column 'input_refs' must be a list"),
    "not an object": ([1, 2], "must hold one JSON object"),
}


@pytest.mark.parametrize(("record", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_both_refuse_the_same_line_naming_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], record: Any, reason: str
) -> None:
    source = _jsonl(tmp_path / "calls.jsonl", CALL | END | {"id": "ok"}, record)
    (import_code, import_err), (rollup_code, rollup_err) = _both(tmp_path, capsys, source)
    assert import_code == rollup_code == 1
    assert import_err == rollup_err
    assert import_err.startswith(f"{source}:2: ") and reason in import_err
    assert not (tmp_path / "out.parquet").exists()


def test_not_json_names_the_line_and_the_column_within_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "calls.jsonl"
    source.write_text(json.dumps(CALL) + "\n\n" + '{"id": "b",, }\n')
    (code, err), other = _both(tmp_path, capsys, source)
    assert (code, err) == other and code == 1
    assert err.startswith(f"{source}:3: not JSON") and "column" in err


def _parquet(path: Path, **columns: list[Any]) -> Path:
    base: dict[str, list[Any]] = {
        "project_id": ["e/p", "e/p"],
        "id": ["a", "b"],
        "trace_id": ["t", "t"],
        "op_name": ["op", "op"],
    }
    pl.DataFrame(base | columns, strict=False).write_parquet(path)
    return path


def test_parquet_text_timestamps_are_read_by_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _parquet(
        tmp_path / "calls.parquet",
        started_at=["2025-01-01T00:00:00Z", "2025-01-01T02:00:00+02:00"],
        ended_at=[None, "2025-01-01T00:00:05Z"],
    )
    assert _both(tmp_path, capsys, source) == [(0, ""), (0, "")]
    read = read_calls([source]).collect()
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert read.get_column(s.STARTED_AT).to_list() == [t0, t0]
    store = CallStore(tmp_path / "data" / DB_FILE)
    try:
        stored = store.load("e/p")[0].collect().sort(s.ID)
    finally:
        store.close()
    assert stored.get_column(s.ENDED_AT).to_list() == [None, t0 + dt.timedelta(seconds=5)]
    unfinished = pl.read_parquet(tmp_path / "out.parquet").sort(s.CALL_ID)[s.UNFINISHED]
    assert unfinished.to_list() == [True, False]


PARQUET_REFUSED = {
    "text timestamp": ({"started_at": [T0, "yesterday"]}, "row 2: column 'started_at' is not"),
    "null id": ({"id": ["a", None]}, "row 2: column 'id' is null"),
    "null project": ({"project_id": [None, "e/p"]}, "row 1: column 'project_id' is null"),
    "int id": ({"id": [1, 2]}, "column 'id' is Int64"),
    "struct summary": ({"summary": [{"usage": 1}, None]}, "column 'summary' is Struct"),
}


@pytest.mark.parametrize(("columns", "reason"), PARQUET_REFUSED.values(), ids=PARQUET_REFUSED)
def test_both_refuse_the_same_parquet_naming_row_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], columns: dict, reason: str
) -> None:
    source = _parquet(tmp_path / "calls.parquet", **({"started_at": [T0, T0]} | columns))
    (import_code, import_err), (rollup_code, rollup_err) = _both(tmp_path, capsys, source)
    assert import_code == rollup_code == 1
    assert import_err == rollup_err
    assert import_err.startswith(f"{source}: ") and reason in import_err


def test_a_parquet_without_id_column_is_refused_by_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "calls.parquet"
    pl.DataFrame({"project_id": ["e/p"], "op_name": ["op"]}).write_parquet(source)
    results = _both(tmp_path, capsys, source)
    assert results[0] == results[1] == (1, f"{source}: missing column 'id'\n")


def test_a_csv_is_refused_by_both_as_of_unknown_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "calls.csv"
    source.write_text("id,project_id\na,e/p\n")
    results = _both(tmp_path, capsys, source)
    assert results[0] == results[1]
    code, err = results[0]
    assert code == 2 and err.startswith(f"{source}: neither Parquet nor JSON Lines")


def test_format_is_told_by_content_when_the_suffix_says_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One gzip sniffing: a gzip'd JSON Lines file named ``.dump`` reads as one."""
    body = (json.dumps(CALL | END) + "\n").encode()
    gz = tmp_path / "calls.dump"
    gz.write_bytes(gzip.compress(body))
    parquet = tmp_path / "calls.export"
    _parquet(tmp_path / "p.parquet", started_at=[T0, T0]).rename(parquet)
    for source, ids in ((gz, ["a"]), (parquet, ["a", "b"])):
        assert _both(tmp_path, capsys, source) == [(0, ""), (0, "")]
        assert sorted(read_calls([source]).collect().get_column(s.ID)) == ids


def test_refs_are_found_by_both_in_parquet_that_lacks_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One ref extraction: ``input_refs`` of a Parquet file without the column are found in
    its inputs by import and rollup alike, so a filter on them selects the same call."""
    ref = "weave:///e/p/object/model:v1"
    source = _parquet(
        tmp_path / "calls.parquet",
        started_at=[T0, T0],
        inputs=[json.dumps({"model": ref}), "{}"],
        output=[json.dumps(ref), None],
    )
    assert _both(tmp_path, capsys, source) == [(0, ""), (0, "")]
    store = CallStore(tmp_path / "data" / DB_FILE)
    try:
        stored = store.load("e/p")[0].collect().sort(s.ID)
    finally:
        store.close()
    assert stored.get_column(s.INPUT_REFS).to_list() == [[ref], []]
    assert stored.get_column(s.OUTPUT_REFS).to_list() == [[ref], []]
    out = tmp_path / "filtered.parquet"
    argv = ["rollup", str(source), "-o", str(out), "--no-progress", "--workers", "1"]
    for field in ("input_refs", "output_refs"):
        assert main([*argv, "--filter", json.dumps({field: [ref]})]) == 0
        assert pl.read_parquet(out).get_column(s.CALL_ID).to_list() == ["a"]


@pytest.mark.parametrize(
    "argv",
    [
        ["rollup", "x.jsonl", "-o", "o.parquet", "--workers", "0"],
        ["rollup", "x.jsonl", "-o", "o.parquet", "--buckets", "-1"],
        ["rollup", "x.jsonl", "-o", "o.parquet", "--bucket-rows", "0"],
        ["import", "x.jsonl", "--batch-rows", "0"],
    ],
)
def test_counts_below_one_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["buckets", "bucket_rows", "workers"])
def test_the_python_api_refuses_counts_below_one(tmp_path: Path, option: str) -> None:
    source = _jsonl(tmp_path / "calls.jsonl", CALL)
    with pytest.raises(InvalidRequestError, match=f"{option} must be at least 1"):
        rollup_files([source], tmp_path / "o.parquet", progress=False, **{option: 0})
