"""Batch rollup: Python API, files (Parquet, JSON Lines), CLI, all equal to a per-trace oracle."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine import schema as s
from engine.batch import SORT_KEYS, rollup_files, rollup_frame
from engine.errors import InputDataError, InvalidRequestError, QueryError
from engine.io import read_calls
from engine.trace_usage import price_table, trace_usage
from service.cli import main
from tests.reference.generate import OTHER_PROJECT, PROJECT, random_calls

# extra price rows: one for PROJECT only, one for every project
EXTRA_PRICES = pl.DataFrame(
    {
        "project_id": [PROJECT, None],
        "llm_id": ["gpt-4o", "llama-3"],
        "effective_date": ["2024-06-01T00:00:00Z", "2020-01-01T00:00:00Z"],
        "prompt_token_cost": [1.0, 0.5],
        "completion_token_cost": [2.0, 0.25],
        "cache_read_input_token_cost": [0.125, 0.0],
    }
)


def tangled_calls(seed: int, n_traces: int = 4) -> list[dict[str, Any]]:
    """Random traces of two projects, plus ids shared by two traces and cross-trace parents."""
    rng = random.Random(seed)
    calls = random_calls(rng, n_traces=n_traces, max_calls=20)
    for call in calls:
        call["id"] = f"s{seed}-{call['id']}"
        call["trace_id"] = f"s{seed}-{call['trace_id']}"
        if call["parent_id"]:
            call["parent_id"] = f"s{seed}-{call['parent_id']}"
    picks = rng.sample(calls, min(3, len(calls)))
    twin = dict(picks[0], trace_id=f"s{seed}-twin", parent_id=None)  # same id, other trace
    calls.append(twin)
    picks[1]["parent_id"] = picks[2]["id"]  # maybe a parent in another trace
    calls.append(dict(picks[2], id=f"s{seed}-orphan", trace_id=f"s{seed}-lone"))
    return calls


def calls_frame(calls: list[dict[str, Any]]) -> pl.DataFrame:
    """Test calls as a canonical frame (JSON columns as text, no refs)."""
    rows = []
    for call in calls:
        row = {name: call.get(name) for name in s.CALL_SCHEMA}
        for name in s.JSON_COLUMNS:
            value = call.get(name)
            row[name] = None if value is None else orjson.dumps(value).decode()
        rows.append(row)
    return pl.DataFrame(rows, schema=s.CALL_SCHEMA, orient="row")


def write_jsonl(calls: list[dict[str, Any]], path: Path) -> Path:
    """Calls as JSON Lines (gzip when ``path`` ends in .gz), start-only ones as such.

    End-only calls (no ``op_name``, never selectable) are left out: a line is a start or a
    complete call, and a missing parent ends a chain just as an unselectable one does.
    """
    lines = []
    for call in calls:
        if call.get("op_name") is None:
            continue
        record = {k: v for k, v in call.items() if v is not None or k == "parent_id"}
        if record.get("ended_at") is None:
            record = {k: v for k, v in record.items() if k not in ("summary", "output")}
            record = {"start": record}  # a /call/start body
        lines.append(orjson.dumps(record, default=_default))
    data = b"\n".join(lines) + b"\n"
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(type(value))


def oracle(
    calls: pl.DataFrame,
    *,
    include_costs: bool = False,
    filter: dict[str, Any] | None = None,
    query: dict[str, Any] | None = None,
    summary_usage: str = "own",
    extra_prices: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Rollup rows computed the obvious way: one ``trace_usage`` per (project, trace)."""
    rows: list[dict[str, Any]] = []
    groups = calls.filter(pl.col(s.PROJECT_ID).is_not_null()).partition_by(
        s.PROJECT_ID, s.TRACE_ID, as_dict=True
    )
    for (project, trace), frame in groups.items():
        req = {"project_id": project, "limit": 0, "include_costs": include_costs}
        if filter is not None:
            req["filter"] = filter
        if query is not None:
            req["query"] = query
        prices = None
        if include_costs and extra_prices is not None:
            mine = extra_prices.filter(
                pl.col("project_id").is_null() | (pl.col("project_id") == project)
            )
            prices = price_table(
                mine.select(
                    s.LLM_ID,
                    pl.lit("project").alias(s.PRICING_LEVEL),
                    pl.lit(project).alias(s.PRICING_LEVEL_ID),
                    pl.col(s.EFFECTIVE_DATE).str.to_datetime(time_zone="UTC"),
                    *(pl.col(p) for p in s.PRICES if p in mine.columns),
                )
            )
        answer = trace_usage(frame, req, prices=prices, summary_usage=summary_usage).to_dict()
        unfinished = set(answer["unfinished_call_ids"])
        for call_id, per_model in answer["call_usage"].items():
            base = {
                s.PROJECT_ID: project,
                s.TRACE_ID: trace,
                s.CALL_ID: call_id,
                s.UNFINISHED: call_id in unfinished,
            }
            rows.extend({**base, s.MODEL: m, **usage} for m, usage in per_model.items())
            if not per_model:
                rows.append({**base, s.MODEL: None})
    frame = pl.DataFrame(rows, schema=s.BATCH_OUTPUT_SCHEMA, orient="row") if rows else None
    if frame is None:
        return s.empty(s.BATCH_OUTPUT_SCHEMA)
    return frame.sort(SORT_KEYS, nulls_last=True)


def sample_calls(seeds: range) -> list[dict[str, Any]]:
    """Calls of several seeds, ids prefixed per seed (so seeds never collide)."""
    return [call for seed in seeds for call in tangled_calls(seed)]


def _unfinished_without_summary(calls: pl.DataFrame) -> pl.DataFrame:
    """What a start-only JSON line carries: no summary, no output."""
    start_only = pl.col(s.ENDED_AT).is_null()
    return calls.with_columns(
        pl.when(~start_only).then(pl.col(c)).alias(c) for c in (s.SUMMARY, s.OUTPUT)
    )


@pytest.mark.parametrize("summary_usage", ["own", "auto"])
@pytest.mark.parametrize("include_costs", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_rollup_frame_equals_engine_per_trace(
    seed: int, include_costs: bool, summary_usage: str
) -> None:
    calls = calls_frame(tangled_calls(seed))
    got = rollup_frame(
        calls.lazy(),
        include_costs=include_costs,
        prices=EXTRA_PRICES,
        summary_usage=summary_usage,
    )
    want = oracle(
        calls,
        include_costs=include_costs,
        summary_usage=summary_usage,
        extra_prices=EXTRA_PRICES,
    )
    assert_frame_equal(got, want)
    assert got.height > 0


@pytest.mark.parametrize(
    "filter",
    [
        {"trace_roots_only": True},
        {"trace_ids": ["s7-trace-0", "s7-twin", "s7-lone"]},
        {"parent_ids": ["s7-c0-0", "s7-c1-0"]},
        {"call_ids": ["s7-c0-0", "s7-c0-1", "s7-c1-2", "s7-orphan"]},
    ],
)
def test_filter_applies_within_each_trace(filter: dict) -> None:
    calls = calls_frame(tangled_calls(7))
    got = rollup_frame(calls, filter=filter, include_costs=True)
    assert_frame_equal(got, oracle(calls, filter=filter, include_costs=True))


@pytest.mark.parametrize(
    ("filter", "query"),
    [
        ({"op_names": ["tool"]}, None),
        (None, {"$expr": {"$eq": [{"$getField": "op_name"}, {"$literal": "tool"}]}}),
        (
            {"trace_roots_only": False},
            {
                "$expr": {
                    "$not": [
                        {"$contains": {"input": {"$getField": "id"}, "substr": {"$literal": "-1"}}}
                    ]
                }
            },
        ),
    ],
)
def test_query_applies_within_each_trace(filter: dict | None, query: dict | None) -> None:
    calls = calls_frame(sample_calls(range(60, 63)))
    got = rollup_frame(calls, filter=filter, query=query, summary_usage="auto")
    want = oracle(calls, filter=filter, query=query, summary_usage="auto")
    assert_frame_equal(got, want)
    assert 0 < got.get_column(s.CALL_ID).n_unique() < calls.height


def test_project_option_keeps_one_project() -> None:
    calls = calls_frame(sample_calls(range(3)))
    got = rollup_frame(calls, project_id=OTHER_PROJECT)
    want = oracle(calls).filter(pl.col(s.PROJECT_ID) == OTHER_PROJECT)
    assert_frame_equal(got, want)
    assert got.height > 0


def _call(id_: str, trace: str, parent: str | None, prompt: int | None, ended=True) -> dict:
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    usage = None if prompt is None else {"usage": {"gpt-4o": {"prompt_tokens": prompt}}}
    return {
        "project_id": PROJECT,
        "id": id_,
        "trace_id": trace,
        "parent_id": parent,
        "op_name": "op",
        "started_at": t0,
        "ended_at": t0 if ended else None,
        "summary": usage,
    }


def test_traces_are_separate_selections() -> None:
    """A parent in another trace ends the chain; an id in two traces is two calls."""
    calls = calls_frame(
        [
            _call("root", "A", None, 1),
            _call("kid", "A", "root", 10),
            _call("stray", "B", "kid", 100),  # its parent lives in trace A
            _call("kid", "C", None, 1000),  # same id as A's kid, another trace
            _call("idle", "C", "kid", None, ended=False),
        ]
    )
    got = rollup_frame(calls).select(s.TRACE_ID, s.CALL_ID, s.MODEL, "prompt_tokens", s.UNFINISHED)
    assert got.rows() == [
        ("A", "kid", "gpt-4o", 10, False),
        ("A", "root", "gpt-4o", 11, False),
        ("B", "stray", "gpt-4o", 100, False),
        ("C", "idle", None, None, True),
        ("C", "kid", "gpt-4o", 1000, False),
    ]


def test_project_prices_apply_to_their_project_only() -> None:
    calls = calls_frame(sample_calls(range(2)))
    plain = rollup_frame(calls, include_costs=True)
    priced = rollup_frame(calls, include_costs=True, prices=EXTRA_PRICES)
    cost = "prompt_tokens_total_cost"
    changed = plain.join(priced, on=SORT_KEYS, nulls_equal=True).filter(
        pl.col(cost).ne_missing(pl.col(f"{cost}_right"))
    )
    assert changed.height > 0
    assert set(changed.get_column(s.MODEL)) <= {"gpt-4o", "llama-3"}
    gpt_other = changed.filter(
        (pl.col(s.MODEL) == "gpt-4o") & (pl.col(s.PROJECT_ID) == OTHER_PROJECT)
    )
    assert gpt_other.height == 0


def _split_parquet(calls: pl.DataFrame, folder: Path) -> Path:
    folder.mkdir()
    half = calls.height // 2
    calls.head(half).write_parquet(folder / "a.parquet")
    calls.slice(half).drop(s.INPUT_REFS, s.THREAD_ID).write_parquet(folder / "b.parquet")
    return folder


@pytest.mark.parametrize(
    ("buckets", "bucket_rows"), [(1, 500_000), (3, 500_000), (None, 7), (64, 500_000)]
)
def test_rollup_files_streams_buckets_with_same_result(
    tmp_path: Path, buckets: int | None, bucket_rows: int
) -> None:
    calls = calls_frame(sample_calls(range(10, 16)))
    source = _split_parquet(calls, tmp_path / "in")
    out = tmp_path / "out" / "usage.parquet"
    options = {"include_costs": True, "prices": EXTRA_PRICES, "summary_usage": "auto"}
    stats = rollup_files(
        [source],
        out,
        buckets=buckets,
        bucket_rows=bucket_rows,
        workers=1,
        progress=False,
        **options,
    )
    got = pl.read_parquet(out).sort(SORT_KEYS, nulls_last=True)
    assert_frame_equal(got, rollup_frame(calls, **options))
    assert_frame_equal(
        got, oracle(calls, include_costs=True, summary_usage="auto", extra_prices=EXTRA_PRICES)
    )
    assert stats.calls == calls.height and stats.rows == got.height
    assert stats.buckets == (buckets or -(-calls.height // bucket_rows))


def test_rollup_files_in_worker_processes(tmp_path: Path) -> None:
    calls = calls_frame(sample_calls(range(20, 24)))
    source = tmp_path / "calls.parquet"
    calls.write_parquet(source)
    out = tmp_path / "usage.parquet"
    rollup_files([str(tmp_path / "*.parquet")], out, buckets=4, workers=2, progress=False)
    got = pl.read_parquet(out).sort(SORT_KEYS, nulls_last=True)
    assert_frame_equal(got, rollup_frame(calls))


def test_jsonl_inputs_equal_parquet(tmp_path: Path) -> None:
    raw = sample_calls(range(30, 34))
    write_jsonl(raw[: len(raw) // 2], tmp_path / "a.jsonl.gz")
    write_jsonl(raw[len(raw) // 2 :], tmp_path / "b.jsonl")
    calls = _unfinished_without_summary(calls_frame(raw))
    options = {"include_costs": True, "summary_usage": "auto"}
    want = rollup_frame(calls, **options)
    assert_frame_equal(rollup_frame(read_calls([tmp_path]), **options), want)
    out = tmp_path / "usage.parquet"
    rollup_files([tmp_path], out, buckets=3, workers=1, progress=False, **options)
    assert_frame_equal(pl.read_parquet(out).sort(SORT_KEYS, nulls_last=True), want)


def test_jsonl_reads_timestamps_and_json_columns(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_text(
        '{"id": "a", "project_id": "e/p", "trace_id": "t", "op_name": "op",'
        ' "started_at": "2025-01-01T00:00:00.5Z", "ended_at": "2025-01-01T00:00:01+00:00",'
        ' "summary": {"usage": {"m": {"requests": 1}}}, "inputs": {"x": [1, 2]},'
        ' "output": "weave:///e/p/op/f:v2"}\n\n'
        '{"id": "c", "project_id": "e/p", "trace_id": "t", "op_name": "op", "started_at":'
        ' "2025-01-01T00:00:03Z", "inputs": {"m": "weave:///e/p/object/model:v1"}}\n'
        '{"start": {"id": "b", "project_id": "e/p", "trace_id": "t", "parent_id": "a",'
        ' "op_name": "op", "started_at": "2025-01-01T00:00:02Z"}}\n'
    )
    calls = read_calls([path]).collect()
    assert calls.get_column(s.ID).to_list() == ["a", "c", "b"]
    assert calls.get_column(s.SUMMARY).to_list() == ['{"usage":{"m":{"requests":1}}}', None, None]
    assert calls.get_column(s.INPUT_REFS).to_list() == [
        [],
        ["weave:///e/p/object/model:v1"],
        [],
    ]
    assert calls.get_column(s.OUTPUT_REFS).to_list() == [["weave:///e/p/op/f:v2"], [], []]
    assert calls.get_column(s.INPUTS)[0] == '{"x":[1,2]}'
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert calls.get_column(s.STARTED_AT).to_list() == [
        t0 + dt.timedelta(seconds=0.5),
        t0 + dt.timedelta(seconds=3),
        t0 + dt.timedelta(seconds=2),
    ]
    assert calls.get_column(s.ENDED_AT).to_list() == [t0 + dt.timedelta(seconds=1), None, None]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]\n", "JSON object"),
        ("{not json\n", "not JSON"),
        ('{"id": "a", "project_id": "e/p", "op_name": "o", "started_at": "x"}\n', "ISO 8601"),
    ],
)
def test_bad_jsonl_is_input_data_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(InputDataError, match=message):
        read_calls([path])


def test_bad_options_fail_before_any_work() -> None:
    with pytest.raises(InvalidRequestError, match="summary_usage"):
        rollup_frame(s.empty(s.CALL_SCHEMA), summary_usage="both")
    with pytest.raises(QueryError):
        rollup_frame(s.empty(s.CALL_SCHEMA), query={"$expr": {"$nope": []}})
    with pytest.raises(InputDataError, match="lacks columns"):
        rollup_frame(s.empty(s.CALL_SCHEMA), prices=pl.DataFrame({"llm_id": ["m"]}))


def test_cli_with_every_option_equals_python_api(tmp_path: Path) -> None:
    calls = calls_frame(sample_calls(range(40, 43)))
    calls.write_parquet(tmp_path / "calls.parquet")
    EXTRA_PRICES.write_csv(tmp_path / "prices.csv")
    out = tmp_path / "usage.parquet"
    filter = {"op_names": ["tool", "openai.chat.completions.create"]}
    query = {"$expr": {"$not": [{"$eq": [{"$getField": "op_name"}, {"$literal": "tool"}]}]}}
    argv = ["rollup", str(tmp_path / "calls.parquet"), "--output", str(out)]
    argv += ["--include-costs", "--prices", str(tmp_path / "prices.csv"), "--project", PROJECT]
    argv += ["--filter", json.dumps(filter), "--query", json.dumps(query)]
    argv += ["--summary-usage", "auto", "--buckets", "2", "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    want = rollup_frame(
        calls,
        include_costs=True,
        prices=EXTRA_PRICES,
        project_id=PROJECT,
        filter=filter,
        query=query,
        summary_usage="auto",
    )
    assert_frame_equal(pl.read_parquet(out).sort(SORT_KEYS, nulls_last=True), want)
    assert want.height > 0


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
@pytest.mark.parametrize("summary_usage", ["own", "auto"])
@pytest.mark.parametrize("include_costs", [False, True])
def test_cli_equals_python_api(
    tmp_path: Path, fmt: str, summary_usage: str, include_costs: bool
) -> None:
    raw = sample_calls(range(44, 46))
    calls = _unfinished_without_summary(calls_frame(raw))
    source = tmp_path / f"calls.{fmt}"
    if fmt == "parquet":
        calls.write_parquet(source)
    else:
        write_jsonl(raw, source)
    out = tmp_path / "usage.parquet"
    argv = ["rollup", str(source), "-o", str(out), "--summary-usage", summary_usage]
    argv += ["--include-costs"] if include_costs else []
    assert main([*argv, "--no-progress", "--workers", "1"]) == 0
    want = rollup_frame(calls, include_costs=include_costs, summary_usage=summary_usage)
    assert_frame_equal(pl.read_parquet(out).sort(SORT_KEYS, nulls_last=True), want)
    costs = want.get_column("completion_tokens_total_cost")
    assert costs.is_not_null().any() == include_costs


def test_cli_reports_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["rollup", str(tmp_path / "nothing-*.parquet"), "-o", str(tmp_path / "o.parquet")])
    assert code == 2
    assert "no input matches" in capsys.readouterr().err
