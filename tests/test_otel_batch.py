"""OTLP files (JSON Lines of ``ExportTraceServiceRequest``, as the Collector's file exporter
writes them, gzip'd) through ``trace-usage rollup`` and ``trace-usage import``: the same
calls, so the same usage, as ``POST /otel/v1/traces`` of the same spans."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from engine import schema as s
from engine.errors import InputDataError
from engine.io import call_lines
from service.app import create_app
from service.cli import main
from service.settings import Settings
from tests.otel_support import key_values, otlp_json, random_trace, request_of
from tests.reference.compare import COST_FIELDS

PROJECT = "acme/files"
RESOURCE = [("wandb.entity", "acme"), ("wandb.project", "files"), ("service.name", "batch")]
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet-20241022", "no-such-model")
T0_NS = 1_735_000_000_000_000_000  # late 2024: both gpt-4o prices in force over the traces


def _requests() -> list[Any]:
    """Three exports: two traces split over two requests, and one with a rejected span."""
    first, second = random_trace(11, 30, T0_NS, MODELS), random_trace(12, 8, T0_NS, MODELS)
    bad = Span(trace_id=second[0].trace_id, span_id=b"\x07" * 8, name="bad",
               attributes=key_values([("x", 1), ("x.y", 2)]))  # fmt: skip
    return [
        request_of(first[:17], RESOURCE),
        request_of(first[17:], RESOURCE),
        request_of([*second, bad], RESOURCE),
    ]


@pytest.fixture
def collector_file(tmp_path: Path) -> Path:
    path = tmp_path / "traces.jsonl.gz"
    lines = b"".join(orjson.dumps(otlp_json(req)) + b"\n" for req in _requests())
    path.write_bytes(gzip.compress(lines))
    return path


def _served(tmp_path: Path, ingest: bool) -> tuple[TestClient, list[str]]:
    app = create_app(Settings(data_dir=tmp_path))
    _, key = app.state.keys.add("ada", ["acme/*"])
    client = TestClient(app)
    client.auth = ("ada", key)
    trace_ids = sorted({r.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
                        for r in _requests()})  # fmt: skip
    if ingest:
        for req in _requests():
            res = client.post("/otel/v1/traces", content=req.SerializeToString(),
                              headers={"content-type": "application/x-protobuf"})  # fmt: skip
            assert res.status_code == 200
    return client, trace_ids


def _usage(client: TestClient, trace_id: str) -> dict[str, Any]:
    req = {"project_id": PROJECT, "filter": {"trace_ids": [trace_id]}, "include_costs": True}
    res = client.post("/trace/usage", json=req)
    assert res.status_code == 200, res.text
    return res.json()["call_usage"]


def _same(ours: dict[str, Any], want: dict[str, Any]) -> None:
    assert ours.keys() == want.keys()
    for call_id, models in want.items():
        assert ours[call_id].keys() == models.keys(), call_id
        for model, usage in models.items():
            for field, value in usage.items():
                got = ours[call_id][model][field]
                if field in COST_FIELDS:
                    assert math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-15), field
                else:
                    assert got == value, (call_id, model, field)


def test_rollup_of_a_collector_file_equals_the_server(tmp_path: Path, collector_file: Path) -> None:
    out = tmp_path / "usage.parquet"
    argv = ["rollup", str(collector_file), "-o", str(out), "--include-costs"]
    assert main([*argv, "--no-progress", "--workers", "1"]) == 0
    rows = pl.read_parquet(out)
    client, trace_ids = _served(tmp_path / "served", ingest=True)
    for trace_id in trace_ids:
        batch: dict[str, Any] = {}
        for row in rows.filter(pl.col(s.TRACE_ID) == trace_id).iter_rows(named=True):
            models = batch.setdefault(row[s.CALL_ID], {})  # a null model: a call without usage
            if row[s.MODEL] is not None:
                models[row[s.MODEL]] = {name: row[name] for name in s.METRICS}
        want = _usage(client, trace_id)
        costs = [u["prompt_tokens_total_cost"] for models in want.values() for u in models.values()]
        assert any(cost > 0 for cost in costs)  # priced by the shipped default prices
        _same(batch, want)


def test_import_of_a_collector_file_equals_the_server(tmp_path: Path, collector_file: Path) -> None:
    imported = tmp_path / "imported"
    assert main(["import", str(collector_file), "--data-dir", str(imported), "--quiet"]) == 0
    client, trace_ids = _served(imported, ingest=False)
    served, _ = _served(tmp_path / "served", ingest=True)
    for trace_id in trace_ids:
        _same(_usage(client, trace_id), _usage(served, trace_id))


def test_rejected_spans_are_left_out_and_a_resource_needs_a_project(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    bad = Span(span_id=b"\x07" * 8, name="bad", attributes=key_values([("x", 1), ("x.y", 2)]))
    good = Span(span_id=b"\x08" * 8, name="good")
    path.write_bytes(orjson.dumps(otlp_json(request_of([bad, good], RESOURCE))) + b"\n")
    assert [line.call["id"] for line in call_lines(path)] == ["0808080808080808"]
    path.write_bytes(orjson.dumps(otlp_json(request_of([good]))) + b"\n")
    with pytest.raises(InputDataError, match=r"spans.jsonl:1: .*wandb.entity"):
        list(call_lines(path))
