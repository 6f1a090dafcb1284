"""Property tests: the engine against the obvious model, on hypothesis-generated trees."""

from __future__ import annotations

import json

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import schema as s
from engine import trace_usage
from tests.engine_helpers import PROJECT, T0
from tests.reference import model


@st.composite
def call_trees(draw):
    """Forests with orphans, deep chains, cycles, many models per call and null usage."""
    n = draw(st.integers(1, 60))
    ids = [f"c{i}" for i in range(n)]
    parents: dict[str, str | None] = {}
    for i, c in enumerate(ids):
        kind = draw(st.sampled_from(["tree", "tree", "tree", "chain", "orphan", "root", "any"]))
        parents[c] = {
            "tree": ids[draw(st.integers(0, i - 1))] if i else None,
            "chain": ids[i - 1] if i else None,
            "orphan": "outside",
            "root": None,
            "any": ids[draw(st.integers(0, n - 1))],  # may self-parent or close a cycle
        }[kind]
    counters = st.dictionaries(st.sampled_from(s.RAW_COUNTERS), st.integers(-5, 1000), max_size=8)
    usage = {
        c: draw(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), counters, max_size=4))
        for c in ids
        if draw(st.booleans())
    }
    return parents, usage


def to_frame(parents, usage, order) -> pl.DataFrame:
    rows = [
        {
            s.PROJECT_ID: PROJECT,
            s.ID: c,
            s.TRACE_ID: "t",
            s.PARENT_ID: parents[c],
            s.OP_NAME: "op",
            s.STARTED_AT: T0,
            s.ENDED_AT: T0,
            s.SUMMARY: json.dumps({"usage": usage[c]}) if c in usage else None,
        }
        for c in order
    ]
    return pl.DataFrame(rows, schema={k: s.CALL_SCHEMA[k] for k in rows[0]})


@settings(max_examples=300, deadline=None)
@given(call_trees(), st.randoms(use_true_random=False))
def test_engine_equals_model_in_any_row_order(tree, rng) -> None:
    parents, usage = tree
    order = list(parents)
    rng.shuffle(order)
    got = trace_usage(to_frame(parents, usage, order), {"project_id": PROJECT, "limit": 0})
    assert model.strip_costs(got.to_dict()) == model.rollup(parents, usage)


@settings(max_examples=100, deadline=None)
@given(call_trees())
def test_root_total_is_the_sum_over_its_tree(tree) -> None:
    parents, usage = tree
    res = trace_usage(to_frame(parents, usage, list(parents)), {"project_id": PROJECT})
    answer = model.strip_costs(res.to_dict())
    roots = [c for c, p in parents.items() if p not in parents]
    reached = {r: {r} for r in roots}
    for c in parents:  # follow each call up to its root, if it has one
        node, path = c, []
        while node in parents and node not in path:
            path.append(node)
            node = parents[node]
        if path[-1] in reached and parents[path[-1]] not in parents:
            reached[path[-1]].add(c)
    for root, members in reached.items():
        expected: dict[str, int] = {}
        for c in members:
            for counters in usage.get(c, {}).values():
                tokens = model.own_usage(counters)
                if any(tokens.values()):
                    expected["requests"] = expected.get("requests", 0) + tokens["requests"]
        got = sum(u["requests"] for u in answer[root].values())
        assert got == expected.get("requests", 0)
