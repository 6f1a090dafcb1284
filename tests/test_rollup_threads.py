"""Big trees hand the rollup's independent NumPy steps to two threads; the answer must be
the one the single-threaded path gives, cycles, orphans and costs' price groups included."""

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
