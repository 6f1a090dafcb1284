"""Seeded generators of calls with varied JSON, and of random CallsFilters and ``$expr`` trees,
for differential tests of the query compiler against the reference.

Floats are kept to values that every JSON reader parses exactly (few digits): long floats
are covered by table tests of leaf reads instead (see docs/query-language.md, "Known
differences").
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from typing import Any

from tests.reference.generate import PROJECT, T0, random_calls

INTERNAL_REF = "weave-trace-internal:///cHJvamVjdA"
REFS = [
    f"{INTERNAL_REF}/object/dataset:v1",
    f"{INTERNAL_REF}/object/dataset:v2",
    f"{INTERNAL_REF}/object/model:abc/attr/rows/id/xyz",
    f"{INTERNAL_REF}/op/agent:abc",
    f"{INTERNAL_REF}/op/agent",  # not a ref: no version
    f"{INTERNAL_REF}/table/deadbeef",
]
KEYS = ["a", "b", "k.d", "x-y", "0", "1", "é", "list", "n"]
STRINGS = [
    "x",
    "abc",
    "Hello World",
    "",
    "5",
    "5.0",
    "1e3",
    " 7 ",
    "-3",
    "+5",
    "255",
    "256",
    "1_000",
    "nan",
    "inf",
    "true",
    "false",
    "é",
    "ÉCOLE",
    '{"a":1}',
    "[1]",
    "2025-01-01T00:00:00Z",
    "agent",
    "weave-trace-internal:///cHJvamVjdA/op/agent:abc",
]
FLOATS = [5.0, 1e3, 1.5, -2.25, 0.1, 1e-7, 1.5e-5, 1e20, -0.0, 3.0e-3, 1e16, 255.0]
INTS = [0, 1, -1, 2, 5, 7, 42, 255, 256, 1000, -3, 2**40, 2**62]
FIELDS_PLAIN = [
    "id",
    "trace_id",
    "parent_id",
    "thread_id",
    "turn_id",
    "op_name",
    "display_name",
    "exception",
    "wb_user_id",
    "wb_run_id",
    "project_id",
]
FIELDS_DATETIME = ["started_at", "ended_at", "deleted_at"]
FIELDS_INT = ["wb_run_step", "wb_run_step_end", "summary.weave.latency_ms"]
FIELDS_LIST = ["input_refs", "output_refs"]
FIELDS_COMPUTED_STR = ["summary.weave.status", "summary.weave.trace_name"]
FIELDS_JSON = [
    "inputs",
    "output",
    "inputs.a",
    "inputs.b",
    "inputs.a.b",
    "inputs.k\\.d",
    "inputs.x-y",
    "inputs.0",
    "inputs.list.0",
    "inputs.list.1",
    "inputs.list.0.a",
    "inputs.n",
    "inputs.é",
    "inputs.nope",
    "inputs.a.nope.deeper",
    "output.a",
    "output.0",
    "output.b.k\\.d",
    "attributes.a",
    "attributes.x-y",
    "attributes.list.1",
    "summary.status_counts.error",
    "summary.usage",
    "summary.other",
    "summary.weave",
]
INVALID_FIELDS = ["bogus", "summary.weave.bogus", "storage_size_bytes", "inputsx"]


# --- calls ---------------------------------------------------------------------------------


def _scalar(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.25:
        return rng.choice(INTS)
    if roll < 0.45:
        return rng.choice(FLOATS)
    if roll < 0.55:
        return rng.choice([True, False, None])
    if roll < 0.62:
        return rng.choice(REFS)
    return rng.choice(STRINGS)


def _json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.25:
        return {rng.choice(KEYS): _json(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if depth < 3 and roll < 0.4:
        return [_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return _scalar(rng)


def _object(rng: random.Random) -> dict[str, Any]:
    return {rng.choice(KEYS): _json(rng, 1) for _ in range(rng.randint(0, 4))}


def random_query_calls(rng: random.Random) -> list[dict[str, Any]]:
    """``random_calls`` with inputs, output, attributes, ids and names filled with varied JSON."""
    calls = random_calls(rng, n_traces=rng.randint(1, 3), max_calls=12)
    for call in calls:
        call["inputs"] = _object(rng)
        call["attributes"] = _object(rng)
        call["output"] = rng.choice([None, _json(rng), _object(rng), rng.choice(REFS)])
        if call["summary"] is not None and rng.random() < 0.4:
            call["summary"]["status_counts"] = {"error": rng.choice([0, 1, 3])}
        call["display_name"] = rng.choice([None, None, "", "My Call", "agent", "é-run"])
        call["thread_id"] = rng.choice([None, "th-1", "th-2"])
        call["turn_id"] = rng.choice([None, "tu-1", "tu-2"])
        call["wb_user_id"] = rng.choice([None, "user-1", "user-2"])
        call["wb_run_id"] = rng.choice([None, "run-1", "run-2"])
        call["wb_run_step"] = rng.choice([None, 0, 3, 10])
        call["wb_run_step_end"] = rng.choice([None, 5])
        call["exception"] = rng.choice([None, None, None, "ValueError: boom"])
    return calls


# --- filters -------------------------------------------------------------------------------


def random_filter(rng: random.Random, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """A CallsFilter dict touching a few random fields."""
    ids = [c["id"] for c in calls]
    out: dict[str, Any] = {}
    for _ in range(rng.choice([1, 1, 2])):
        field = rng.choice(
            [
                "op_names",
                "input_refs",
                "output_refs",
                "parent_ids",
                "trace_ids",
                "call_ids",
                "thread_ids",
                "turn_ids",
                "trace_roots_only",
                "wb_user_ids",
                "wb_run_ids",
            ]
        )
        if field == "op_names":
            out[field] = rng.sample(
                [
                    "tool",
                    "openai.chat.completions.create",
                    f"{INTERNAL_REF}/op/agent:abc",
                    f"{INTERNAL_REF}/op/agent:*",
                    f"{INTERNAL_REF}/op/other:*",
                    "openai.chat:*",
                ],
                rng.randint(0, 2),
            )
        elif field in ("input_refs", "output_refs"):
            pool = [*REFS, f"{INTERNAL_REF}/object/dataset:*", f"{INTERNAL_REF}/op/agent:*"]
            out[field] = rng.sample(pool, rng.randint(0, 2))
        elif field in ("parent_ids", "call_ids"):
            out[field] = rng.sample(ids, min(len(ids), rng.randint(0, 4)))
        elif field == "trace_ids":
            out[field] = [f"trace-{i}" for i in rng.sample(range(4), rng.randint(0, 2))]
        elif field in ("thread_ids", "turn_ids"):
            prefix = "th" if field == "thread_ids" else "tu"
            out[field] = rng.sample([f"{prefix}-1", f"{prefix}-2", "zz"], rng.randint(0, 2))
        elif field == "trace_roots_only":
            out[field] = rng.choice([True, False])
        else:
            prefix = "user" if field == "wb_user_ids" else "run"
            out[field] = rng.sample([f"{prefix}-1", f"{prefix}-2"], rng.randint(0, 2))
    return out


# --- queries -------------------------------------------------------------------------------


def _literal_value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(STRINGS)
    if roll < 0.5:
        return rng.choice(INTS)
    if roll < 0.65:
        return rng.choice(FLOATS)
    if roll < 0.75:
        return rng.choice([True, False])
    if roll < 0.82:
        return None
    if roll < 0.92:  # datetimes as ISO text
        when = T0 + dt.timedelta(days=rng.randint(-400, 400))
        return rng.choice([when.isoformat(), when.strftime("%Y-%m-%d"), "2025-01-01T00:00:00Z"])
    return (T0 + dt.timedelta(days=rng.randint(-400, 400))).timestamp()  # unix seconds


def _lit(rng: random.Random) -> dict[str, Any]:
    return {"$literal": _literal_value(rng)}


def _field(rng: random.Random, pool: list[str] | None = None) -> dict[str, Any]:
    if pool is None:
        roll = rng.random()
        if roll < 0.45:
            pool = FIELDS_JSON
        elif roll < 0.65:
            pool = FIELDS_PLAIN
        elif roll < 0.75:
            pool = FIELDS_DATETIME
        elif roll < 0.83:
            pool = FIELDS_INT
        elif roll < 0.9:
            pool = FIELDS_LIST
        else:
            pool = FIELDS_COMPUTED_STR
    return {"$getField": rng.choice(pool)}


def _sized(rng: random.Random) -> dict[str, Any]:
    """An operand $size accepts: text or a list."""
    roll = rng.random()
    if roll < 0.5:
        inner = _field(rng, FIELDS_JSON + FIELDS_PLAIN + FIELDS_LIST + FIELDS_COMPUTED_STR)
    elif roll < 0.7:
        inner = {"$convert": {"input": _value(rng, 2), "to": "string"}}
    else:
        inner = {"$literal": rng.choice(STRINGS)}
    return {"$size": inner}


def _value(rng: random.Random, depth: int) -> dict[str, Any]:
    """A non-boolean operand: field, literal, conversion or size."""
    roll = rng.random()
    if roll < 0.5:
        return _field(rng)
    if roll < 0.72 or depth > 3:
        return _lit(rng)
    if roll < 0.9:
        to = rng.choice(["double", "string", "int", "bool", "exists"])
        return {"$convert": {"input": _value(rng, depth + 1), "to": to}}
    return _sized(rng)


def _operand(rng: random.Random, depth: int) -> dict[str, Any]:
    if depth < 3 and rng.random() < 0.15:
        return random_operation(rng, depth + 1)
    return _value(rng, depth)


def _stored(call: dict[str, Any], name: str) -> Any:
    """Roughly what ``name`` reads on ``call`` (a dict walk; only used to pick literals)."""
    column, _, rest = name.partition(".")
    value = call.get(column)
    for part in [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", rest)] if rest else []:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _data_literal(rng: random.Random, value: Any) -> Any:
    """A literal equal or close to a stored value, in one of the types it may compare as."""
    if isinstance(value, dt.datetime):
        value = value + dt.timedelta(seconds=rng.choice([-1, 0, 0, 1]))
        return rng.choice([value.isoformat(), value.timestamp()])
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return rng.choice([value, value + 1, value - 1, str(value), float(value)])
    if isinstance(value, str):
        return rng.choice([value, value, value.upper(), value[:3]])
    return json.dumps(value, separators=(",", ":"))


def typed_comparison(rng: random.Random, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """A comparison of a field with a literal taken from the data: selects some calls."""
    for _ in range(10):  # prefer a field the chosen call has
        name = rng.choice(FIELDS_JSON + FIELDS_PLAIN + FIELDS_DATETIME + ["wb_run_step"])
        stored = _stored(rng.choice(calls), name)
        if stored is not None:
            break
    value = _data_literal(rng, stored)
    pair = [{"$getField": name}, {"$literal": value}]
    roll = rng.random()
    if roll < 0.15:
        return {"$in": [pair[0], [pair[1], _lit(rng)]]}
    if roll < 0.25 and isinstance(value, str):
        return {"$contains": {"input": pair[0], "substr": pair[1], "case_insensitive": True}}
    if rng.random() < 0.2:
        pair.reverse()
    return {rng.choice(["$eq", "$eq", "$gt", "$gte", "$lt", "$lte"]): pair}


def random_operation(
    rng: random.Random, depth: int = 0, calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A random operation tree, mostly valid; some trees are rejected by both sides."""
    if calls and rng.random() < 0.4:
        return typed_comparison(rng, calls)
    roll = rng.random()
    if depth < 3 and roll < 0.25:
        op = rng.choice(["$and", "$or"])
        n = rng.choice([0, 1, 2, 2, 3]) if rng.random() < 0.05 else rng.randint(1, 3)
        return {op: [random_operation(rng, depth + 1, calls) for _ in range(n)]}
    if depth < 3 and roll < 0.35:
        return {"$not": [random_operation(rng, depth + 1, calls)]}
    if roll < 0.72:
        op = rng.choice(["$eq", "$eq", "$gt", "$gte", "$lt", "$lte"])
        pair = [_operand(rng, depth), _operand(rng, depth)]
        if rng.random() < 0.6:
            pair = [_field(rng), _lit(rng)]
            if rng.random() < 0.2:
                pair.reverse()
        if rng.random() < 0.01:
            pair = pair[:1]  # wrong arity
        return {op: pair}
    if roll < 0.87:
        items = [_lit(rng) for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.4:  # one shared literal type
            kind = rng.choice([INTS, FLOATS, STRINGS, [True, False]])
            items = [{"$literal": rng.choice(kind)} for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.1:
            items.append(_field(rng))
        return {"$in": [_operand(rng, depth) if rng.random() < 0.3 else _field(rng), items]}
    if roll < 0.99:
        spec: dict[str, Any] = {
            "input": _operand(rng, depth) if rng.random() < 0.3 else _field(rng),
            "substr": {"$literal": rng.choice(["", "a", "A", "x", "é", "É", "5", "agent", "1"])},
        }
        if rng.random() < 0.5:
            spec["case_insensitive"] = rng.choice([True, False])
        return {"$contains": spec}
    return rng.choice(
        [
            {"$eq": [{"$getField": rng.choice(INVALID_FIELDS)}, {"$literal": 1}]},
            {"$bogus": []},
            {"$eq": [{"$literal": [1]}, {"$literal": 1}]},
        ]
    )


def random_request(rng: random.Random, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """A TraceUsageReq dict with a random filter and/or query."""
    req: dict[str, Any] = {"project_id": PROJECT, "include_costs": rng.random() < 0.3}
    if rng.random() < 0.4:
        req["filter"] = random_filter(rng, calls)
    if rng.random() < 0.9 or "filter" not in req:
        roll = rng.random()
        if roll < 0.25:  # most single conditions select few calls: mix in wide ones
            expr = {"$not": [random_operation(rng, 1, calls)]}
        elif roll < 0.5:
            expr = {"$or": [random_operation(rng, 1, calls) for _ in range(rng.randint(2, 4))]}
        else:
            expr = random_operation(rng, 0, calls)
        req["query"] = {"$expr": expr}
    return req
