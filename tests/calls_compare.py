"""One comparison of ``CallSchema`` answers, ours against the reference's.

Costs compare to 1e-9 relative; the price row's ``created_at``/``created_by`` are not
compared (this server's price table does not carry them; the reference dates its default
rows at start-up) and ``effective_date`` compares as a point in time.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

UNCOMPARED_COST_FIELDS = ("created_at", "created_by")


def _when(value: Any) -> Any:
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def _costs(call: dict[str, Any]) -> dict[str, Any] | None:
    weave = (call.get("summary") or {}).get("weave") or {}
    costs = weave.pop("costs", None)
    if costs is None:
        return None
    out = {}
    for model, row in costs.items():
        row = {k: v for k, v in row.items() if k not in UNCOMPARED_COST_FIELDS}
        row["effective_date"] = _when(row.get("effective_date"))
        out[model] = row
    return out


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)
    return a == b


def assert_same_calls(ours: list[dict[str, Any]], ref: list[dict[str, Any]], context: str) -> None:
    """Same calls in the same order, field by field; ``expire_at`` is not compared."""
    assert [c["id"] for c in ours] == [c["id"] for c in ref], context
    for mine, theirs in zip(ours, ref, strict=True):
        mine, theirs = dict(mine), dict(theirs)
        for call in (mine, theirs):
            call.pop("expire_at", None)
            for name in ("started_at", "ended_at", "deleted_at"):
                call[name] = _when(call.get(name))
        my_costs, their_costs = _costs(mine), _costs(theirs)
        diff = {k: (mine.get(k), theirs.get(k)) for k in mine.keys() | theirs.keys()
                if mine.get(k) != theirs.get(k)}  # fmt: skip
        assert not diff, f"{context}: call {mine['id']}: (ours, reference) {diff}"
        assert (my_costs is None) == (their_costs is None), f"{context}: costs of {mine['id']}"
        if my_costs is not None:
            assert my_costs.keys() == their_costs.keys(), f"{context}: {mine['id']}"
            for model, row in my_costs.items():
                other = their_costs[model]
                assert row.keys() == other.keys(), f"{context}: {mine['id']} {model}"
                bad = [k for k in row if not _close(row[k], other[k])]
                assert not bad, f"{context}: {mine['id']} {model} {bad}: {row} != {other}"
