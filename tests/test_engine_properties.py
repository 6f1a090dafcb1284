"""Property tests: the engine against the obvious model, on hypothesis-generated trees and on
forests big enough for the threaded path; the packed sorts' argsort fallback is forced too."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import rollup as rollup_module
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


def big_forest(seed: int, n: int) -> tuple[dict[str, str | None], dict[str, dict]]:
    """``n`` calls: random earlier parents, a 300-deep chain, orphans, cycles, self-parents
    and raw usage over four models (1-2 per call for about half of them)."""
    rng = np.random.default_rng(seed)
    ids = [f"c{i}" for i in range(n)]
    parent = (rng.random(n) * np.arange(n)).astype(np.int64)
    parent[1:300] = np.arange(299)  # a chain
    parent[rng.random(n) < 0.02] = -1
    loops = rng.choice(n, size=30, replace=False)
    parent[loops] = rng.choice(n, size=30)  # may point forward: cycles and self-parents
    parents = {c: (ids[p] if p >= 0 else None) for c, p in zip(ids, parent, strict=True)}
    for c in rng.choice(ids, size=20):
        parents[str(c)] = "outside"
    usage = {}
    for i in np.flatnonzero(rng.random(n) < 0.5):
        picked = rng.choice(["a", "b", "c", "d"], size=rng.integers(1, 3), replace=False)
        usage[ids[i]] = {
            str(m): {k: int(rng.integers(-5, 10**6)) for k in rng.choice(s.RAW_COUNTERS, 3)}
            for m in picked
        }
    return parents, usage


@pytest.mark.parametrize("seed", range(2))
def test_engine_equals_model_on_the_threaded_path(seed: int, monkeypatch) -> None:
    """Over 20,000 calls the rollup hands its steps to the worker threads."""
    parents, usage = big_forest(seed, 25_000)
    submitted = []
    submit = rollup_module.workers.submit

    def spy(fn, *args):
        submitted.append(fn.__name__)
        return submit(fn, *args)

    monkeypatch.setattr(rollup_module.workers, "submit", spy)
    order = list(parents)
    np.random.default_rng(seed).shuffle(order)
    got = trace_usage(to_frame(parents, usage, order), {"project_id": PROJECT, "limit": 0})
    assert "_preorder" in submitted  # the threaded path was taken
    assert model.strip_costs(got.to_dict()) == model.rollup(parents, usage)


@settings(max_examples=100, deadline=None)
@given(call_trees(), st.randoms(use_true_random=False))
def test_engine_equals_model_with_the_argsort_fallback(tree, rng) -> None:
    """Keys too wide for one 64-bit word with a position are sorted by ``np.argsort``;
    forcing that path everywhere (no word is wide enough) changes no answer."""
    parents, usage = tree
    order = list(parents)
    rng.shuffle(order)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rollup_module, "_WORD_BITS", 0)
        got = trace_usage(to_frame(parents, usage, order), {"project_id": PROJECT, "limit": 0})
    assert model.strip_costs(got.to_dict()) == model.rollup(parents, usage)


def test_engine_equals_model_on_the_threaded_path_with_the_argsort_fallback(monkeypatch) -> None:
    parents, usage = big_forest(7, 21_000)
    monkeypatch.setattr(rollup_module, "_WORD_BITS", 0)
    got = trace_usage(to_frame(parents, usage, list(parents)), {"project_id": PROJECT, "limit": 0})
    assert model.strip_costs(got.to_dict()) == model.rollup(parents, usage)
