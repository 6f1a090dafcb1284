"""Big trees hand the rollup's independent NumPy steps to two threads, and small ones search
many groups' ranges in one pass; the answer must be the one of the single-threaded path one
group at a time, cycles, orphans and costs' price groups included."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from engine import rollup as rollup_module
from engine.rollup import rollup


def _random_forest(seed: int, n: int = 3_000) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Random parents (earlier calls, some unknown ids, some cycles) and 0-2 usage rows per
    call over a few (model, price) groups."""
    rng = np.random.default_rng(seed)
    ids = [f"call-{i}" for i in range(n)]
    parent = (rng.random(n) * np.arange(n)).astype(np.int64)
    parent[rng.random(n) < 0.05] = -1  # roots
    cyclic = rng.choice(n, size=20, replace=False)
    parent[cyclic] = rng.choice(n, size=20)  # may point forward: cycles and self-parents
    parents = [ids[p] if p >= 0 else None for p in parent]
    parents[:5] = ["elsewhere"] * 5  # parents outside the calls end the chain
    calls = pl.DataFrame({"id": ids, "parent_id": parents})
    owner = rng.choice(n, size=int(1.2 * n))
    rows = pl.DataFrame(
        {
            "id": [ids[i] for i in owner],
            "model": rng.choice(["a", "b", "c", "d"], size=len(owner)),
            "price": rng.choice([0, 1], size=len(owner)),
            "tokens": rng.integers(0, 10**9, size=len(owner)),
            "requests": rng.integers(0, 3, size=len(owner)),
        }
    )
    return calls, rows


@pytest.mark.parametrize("seed", range(6))
def test_threaded_rollup_equals_the_single_threaded_one(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, rows = _random_forest(seed)
    monkeypatch.setattr(rollup_module, "_THREADED_FROM", 10**9)
    alone = rollup(calls, rows, ["model", "price"])
    monkeypatch.setattr(rollup_module, "_THREADED_FROM", 0)
    threaded = rollup(calls, rows, ["model", "price"])
    assert alone.height > calls.height  # several groups per call: a real test
    assert threaded.equals(alone)


@pytest.mark.parametrize("groups_per_pass", [1, 3, 8])
def test_range_search_passes_of_any_size_give_one_answer(
    groups_per_pass: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small traces search all their groups' ranges in one pass, big ones a group at a time;
    a last pass with fewer groups included, every split gives the same answer."""
    calls, rows = _random_forest(7)
    monkeypatch.setattr(rollup_module, "_THREADED_FROM", 10**9)
    whole = rollup(calls, rows, ["model", "price"])
    monkeypatch.setattr(rollup_module, "_PASS_ENTRIES", groups_per_pass * calls.height)
    split = rollup(calls, rows, ["model", "price"])
    assert whole.height > calls.height
    assert split.equals(whole)
