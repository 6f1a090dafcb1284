"""The rollup's building blocks say what they promise: integer preorder, repeated ids
rejected by name, hash lookups exact when hashes collide (and only the colliding values
matched by string), and the argsort fallback of the packed sort equal to the packed sort."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from engine import rollup as rollup_module
from engine.errors import InputDataError
from engine.rollup import index_tree, rollup
from tests.reference import model


def _tree(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, dict, dict]:
    """A random forest with orphans, a cycle and unknown usage ids, as frames and dicts."""
    rng = np.random.default_rng(seed)
    ids = [f"c{i}" for i in range(n)]
    parent = (rng.random(n) * np.arange(n)).astype(np.int64)
    parent[rng.random(n) < 0.1] = -1
    parents = {c: (ids[p] if p >= 0 else None) for c, p in zip(ids, parent, strict=True)}
    parents[ids[1]], parents[ids[2]] = ids[2], ids[1]  # a cycle
    parents[ids[3]] = "outside"
    owner = rng.choice(n, size=n)
    models = rng.choice(["a", "b"], size=n)
    counts = rng.integers(1, 1000, size=n)
    usage: dict[str, dict[str, dict[str, int]]] = {}
    for i, m, k in zip(owner, models, counts, strict=True):
        entry = usage.setdefault(ids[i], {}).setdefault(str(m), {"requests": 0})
        entry["requests"] += int(k)
    calls = pl.DataFrame({"id": ids, "parent_id": list(parents.values())})
    rows = pl.DataFrame(
        {
            "id": [ids[i] for i in owner] + ["unknown"],
            "model": [str(m) for m in models] + ["a"],
            "requests": [int(k) for k in counts] + [5],
        }
    )
    return calls, rows, parents, usage


def _nested(frame: pl.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    out: dict[str, dict[str, dict[str, int]]] = {}
    for call_id, model_name, requests in frame.iter_rows():
        out.setdefault(call_id, {})[model_name] = {"requests": requests}
    return out


def _want(parents: dict, usage: dict) -> dict:
    expected = model.rollup(parents, usage)
    return {
        c: {m: {"requests": u["requests"]} for m, u in models.items()}
        for c, models in expected.items()
        if models
    }


def _spy_exact_matches(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the values each call of the by-string matching is given."""
    seen: list[list[str]] = []
    match = rollup_module._match_by_value

    def spy(values: pl.Series, members: np.ndarray, n: int) -> np.ndarray:
        seen.append(values.gather(members).to_list())
        return match(values, members, n)

    monkeypatch.setattr(rollup_module, "_match_by_value", spy)
    return seen


def _patch_first_hash(monkeypatch: pytest.MonkeyPatch, first: pl.Expr) -> None:
    """Make the id lookup sort by ``first`` (an expression of the values, column ``v``)."""
    check = rollup_module._HASHES[1]
    monkeypatch.setattr(rollup_module, "_HASHES", (first.alias("hash"), check))


def test_preorder_is_integer_and_right() -> None:
    #     0
    #    / \
    #   1   3      5 (root)   6 <-> 7 (a cycle)
    #   |
    #   2, 4
    parent = np.array([-1, 0, 1, 0, 1, -1, 7, 6])
    start, size = rollup_module._preorder(parent)
    assert start.dtype == np.int64 and size.dtype == np.int64
    assert size.tolist() == [5, 3, 1, 1, 1, 1, 1, 1]
    # preorder: 0, 1, 2, 4, 3 | 5 | 6 | 7 (siblings in row order)
    assert start.tolist() == [0, 1, 2, 4, 3, 5, 6, 7]


@pytest.mark.parametrize(
    ("ids", "repeated"),
    [(["a", "b", "c", "b"], "'b'"), (["x", "y", "x", "y"], "'x'"), ([None, "a", None], "None")],
)
def test_repeated_ids_are_rejected_by_name(ids: list[str | None], repeated: str) -> None:
    calls = pl.DataFrame(
        {"id": ids, "parent_id": [None] * len(ids)},
        schema=[("id", pl.String), ("parent_id", pl.String)],
    )
    with pytest.raises(InputDataError, match=f"call id {repeated} appears more than once"):
        index_tree(calls, pl.Series("id", ["a"]))


def test_lookup_rows_and_nulls() -> None:
    calls = pl.DataFrame({"id": ["r", "a", "b"], "parent_id": [None, "r", "zz"]})
    tree = index_tree(calls, pl.Series("id", ["b", None, "nope", "r"], dtype=pl.String))
    assert tree.parent.tolist() == [-1, 0, -1]
    assert tree.row_call.tolist() == [2, -1, -1, 0]


def test_values_sharing_the_kept_hash_bits_are_matched_by_string_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """'c1' gets the hash of 'c2' with its lowest bit flipped: the two share every bit the
    sort keeps. Only the values equal to one of them are matched by string, and the answer
    is the model's."""
    calls, rows, parents, usage = _tree(500, seed=1)
    seed = rollup_module._SEEDS[0]
    value = pl.col("v")
    colliding = (
        pl.when(value == "c1").then(pl.lit("c2").hash(seed).xor(1)).otherwise(value.hash(seed))
    )
    _patch_first_hash(monkeypatch, colliding)
    seen = _spy_exact_matches(monkeypatch)
    got = rollup(calls, rows, ["model"])
    assert len(seen) == 1 and set(seen[0]) == {"c1", "c2"}
    assert _nested(got) == _want(parents, usage)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda h: h & 0xFFFF, id="only-16-low-bits"),  # kept bits collide
        pytest.param(lambda h: h & 0xF000_0000_0000_0000, id="only-4-high-bits"),  # all bits
    ],
)
def test_lookups_are_exact_when_the_first_hash_collides_a_lot(
    monkeypatch: pytest.MonkeyPatch, mangle
) -> None:
    calls, rows, parents, usage = _tree(2_000, seed=2)
    _patch_first_hash(monkeypatch, mangle(pl.col("v").hash(rollup_module._SEEDS[0])))
    seen = _spy_exact_matches(monkeypatch)
    assert _nested(rollup(calls, rows, ["model"])) == _want(parents, usage)
    assert seen  # the by-string matching did run


def test_no_value_is_matched_by_string_without_a_collision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls, rows, parents, usage = _tree(2_000, seed=3)
    seen = _spy_exact_matches(monkeypatch)
    assert _nested(rollup(calls, rows, ["model"])) == _want(parents, usage)
    assert seen == []


@pytest.mark.parametrize("seed", range(3))
def test_the_argsort_fallback_equals_the_packed_sort(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 50, size=1_000).astype(np.int64)
    packed = rollup_module._sort_keys(keys, 6)
    monkeypatch.setattr(rollup_module, "_WORD_BITS", 0)
    fallback = rollup_module._sort_keys(keys, 6)
    order = np.argsort(keys, kind="stable")
    for got in (packed, fallback):
        assert got[0].dtype == keys.dtype
        assert got[0].tolist() == keys[order].tolist() and got[1].tolist() == order.tolist()
    wide = rng.integers(0, 2**63, size=1_000, dtype=np.uint64) * np.uint64(2)  # 64-bit keys
    sorted_wide, order_wide = rollup_module._sort_keys(wide, 64)
    assert order_wide.tolist() == np.argsort(wide, kind="stable").tolist()
    assert sorted_wide.tolist() == np.sort(wide).tolist()
