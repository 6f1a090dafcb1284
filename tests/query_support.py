"""Tiny literal calls and one assert helper shared by the query and filter table tests.

``assert_selects`` checks an expected selection against both the engine and the reference,
so every table row is also a statement about weave 0.53.12.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from engine import trace_usage
from engine.errors import QueryError
from engine.refs import extract_refs
from tests.reference import weave_ref
from tests.reference.generate import PROJECT, T0

INTERNAL_OP = "weave-trace-internal:///cHJvamVjdA/op/agent:abc"
PUBLIC_OP = "weave:///entity/project/op/tool:v1"
INTERNAL_TOOL = "weave-trace-internal:///cHJvamVjdA/op/tool:v1"
DS_V1 = "weave-trace-internal:///cHJvamVjdA/object/dataset:v1"
DS_V2 = "weave-trace-internal:///cHJvamVjdA/object/dataset:v2"


def call(call_id: str, **fields: Any) -> dict[str, Any]:
    """A call with defaults for every field a test does not care about."""
    base: dict[str, Any] = {
        "project_id": PROJECT,
        "id": call_id,
        "trace_id": "t1",
        "parent_id": None,
        "op_name": "plain",
        "started_at": T0,
        "ended_at": T0 + dt.timedelta(seconds=3),
        "inputs": {},
        "attributes": {},
        "output": None,
        "summary": {"usage": {"gpt-4o": {"requests": 1, "prompt_tokens": 1}}},
    }
    base.update(fields)
    return base


ROWS = [
    call(
        "c1",
        inputs={
            "n": 5,
            "s": "abc",
            "f": 1.5,
            "b": True,
            "k.d": "dot",
            "list": [10, {"a": "x"}],
            "0": "zero",
            "t": " 7 ",
            "ref": DS_V1,
        },
        output={"a": 1e3},
        attributes={"env": "prod"},
        display_name="First",
        thread_id="th-1",
        turn_id="tu-1",
        wb_user_id="u1",
        wb_run_id="r1",
        wb_run_step=3,
    ),
    call(
        "c2",
        parent_id="c1",
        op_name=INTERNAL_OP,
        inputs={"n": "5", "s": "ABC", "f": "1.50", "b": "true", "list": [], "ref": DS_V2},
        output="plain text",
        summary={"status_counts": {"error": 2}},
        started_at=T0 + dt.timedelta(seconds=1),
        ended_at=None,
        thread_id="th-2",
    ),
    call(
        "c3",
        trace_id="t2",
        op_name=INTERNAL_TOOL,
        inputs={"n": 7.0, "s": "", "b": False, "nested": {"x-y": None}},
        output=[DS_V1, 2],
        exception="ValueError: boom",
        display_name="",
        started_at=T0 + dt.timedelta(days=1),
        ended_at=T0 + dt.timedelta(days=1, milliseconds=1500),
        wb_user_id="u2",
    ),
    call(
        "c4",
        trace_id="t2",
        parent_id="c3",
        inputs={"n": -2, "s": "héllo"},
        summary=None,
        started_at=T0 - dt.timedelta(days=1),
        wb_run_step=None,
    ),
]
ALL = ["c1", "c2", "c3", "c4"]


def request(query: dict[str, Any] | None = None, filter: dict[str, Any] | None = None) -> dict:
    req: dict[str, Any] = {"project_id": PROJECT}
    if query is not None:
        req["query"] = {"$expr": query}
    if filter is not None:
        req["filter"] = filter
    return req


def ours(req: dict[str, Any], rows: list[dict[str, Any]] = ROWS) -> list[str]:
    frame = weave_ref.to_frame(rows, refs=extract_refs)
    return trace_usage(frame, req).call_ids.to_list()


def assert_selects(
    query: dict[str, Any] | None,
    want: list[str],
    *,
    filter: dict[str, Any] | None = None,
    rows: list[dict[str, Any]] = ROWS,
) -> None:
    """The engine and the reference both select exactly ``want`` (any order)."""
    req = request(query, filter)
    assert sorted(weave_ref.reference_selected_ids(rows, req)) == sorted(want), "reference"
    assert sorted(ours(req, rows)) == sorted(want), "engine"


def assert_rejects(query: dict[str, Any], error: type[QueryError] = QueryError) -> None:
    """The reference raises and the engine raises ``error``."""
    req = request(query)
    with pytest.raises(Exception):  # noqa: B017 - the reference's own error types vary
        weave_ref.reference_selected_ids(ROWS, req)
    with pytest.raises(error):
        ours(req)


def field(name: str) -> dict[str, str]:
    return {"$getField": name}


def lit(value: Any) -> dict[str, Any]:
    return {"$literal": value}
