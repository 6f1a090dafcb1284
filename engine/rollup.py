"""Descendant rollup: each call's usage plus all of its descendants', per usage group.

Semantics are the reference's Kahn order (``aggregate_usage_with_descendants``): a call
passes its total to its parent once all of its children have, so a call on a parent cycle
(self-parents included) never passes its total up, while trees hanging below a cycle still
roll into it. Since every call has at most one parent, a cycle has no ancestors outside
itself; cutting the parent link of every call on a cycle therefore leaves a forest whose
plain subtree sums *are* the Kahn result.

How it computes, in O(log depth) vectorized rounds however deep the trace is (a per-level
loop costs a round per level, which a 100,000-deep chain cannot afford):

1. Pointer doubling (``anc_{k+1} = anc_k[anc_k]``) finds the calls that never reach a root;
   the ancestors ``2^k`` up of those land on cycles, which are then cut.
2. Doubling again gives subtree sizes bottom-up
   (``size_{k+1}(c) = size_k(c) + sum of size_k(w) over w with anc_k(w) = c``) and preorder
   positions top-down (a call's position is the sum of its ancestors' sibling offsets).
3. In preorder every subtree is one contiguous range, so a subtree sum is a difference of
   prefix sums over usage rows sorted by (group, position). Counters are integers, so the
   differences are exact; costs are priced after the rollup from these exact sums.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from engine import schema as s

_IDX = "__idx"
_GROUP = "__group"


def rollup(calls: pl.DataFrame, rows: pl.DataFrame, group_keys: list[str]) -> pl.DataFrame:
    """Sum ``rows`` over each call's subtree, per distinct value of ``group_keys``.

    Parameters
    ----------
    calls
        The selected calls: unique ``id`` and ``parent_id`` (a parent outside ``calls``
        ends the chain).
    rows
        ``id``, the ``group_keys`` columns and integer metric columns; ``id`` in ``calls``.
    group_keys
        Columns that keep rows apart (e.g. ``["model"]``).

    Returns
    -------
    One row per (call, group) whose subtree holds at least one row of that group, with the
    summed metrics.

    Examples
    --------
    >>> calls = pl.DataFrame({"id": ["r", "a", "b"], "parent_id": [None, "r", "a"]})
    >>> rows = pl.DataFrame({"id": ["a", "b"], "model": ["m", "m"], "n": [1, 2]})
    >>> rollup(calls, rows, ["model"]).sort("id").rows()
    [('a', 'm', 3), ('b', 'm', 2), ('r', 'm', 3)]
    """
    metrics = [c for c in rows.columns if c != s.ID and c not in group_keys]
    out_schema = {s.ID: pl.String(), **{k: rows.schema[k] for k in group_keys}}
    out_schema |= {m: pl.Int64() for m in metrics}
    if calls.height == 0 or rows.height == 0:
        return pl.DataFrame(schema=out_schema)

    ids = calls.get_column(s.ID)
    index = pl.DataFrame({s.ID: ids, _IDX: pl.int_range(calls.height, eager=True)})
    parent = _parent_index(calls, index)
    start, end = _preorder(parent)
    positions = index.with_columns(pl.Series("__pos", start))

    groups = rows.select(group_keys).unique(maintain_order=True).with_row_index(_GROUP)
    keyed = (
        rows.join(positions, on=s.ID, how="inner")
        .join(groups, on=group_keys, how="left", nulls_equal=True)
        .with_columns(
            (pl.col(_GROUP).cast(pl.Int64) * calls.height + pl.col("__pos")).alias("__key")
        )
        .sort("__key")
    )
    key = keyed.get_column("__key").to_numpy()
    sums = np.zeros((len(key) + 1, len(metrics)), dtype=np.int64)
    for j, name in enumerate(metrics):
        np.cumsum(keyed.get_column(name).to_numpy(), out=sums[1:, j])

    n = calls.height
    all_idx = np.arange(n, dtype=np.int64)
    parts = []
    for g in range(groups.height):
        lo = np.searchsorted(key, g * n + start, side="left")
        hi = np.searchsorted(key, g * n + end, side="right")
        hit = hi > lo
        if not hit.any():
            continue
        totals = sums[hi[hit]] - sums[lo[hit]]
        parts.append(
            pl.DataFrame(
                {
                    _IDX: all_idx[hit],
                    _GROUP: np.full(int(hit.sum()), g, dtype=np.uint32),
                    **{name: totals[:, j] for j, name in enumerate(metrics)},
                }
            )
        )
    if not parts:
        return pl.DataFrame(schema=out_schema)
    return (
        pl.concat(parts)
        .with_columns(pl.col(_IDX).cast(pl.UInt32), pl.col(_GROUP).cast(pl.UInt32))
        .join(index.with_columns(pl.col(_IDX).cast(pl.UInt32)), on=_IDX)
        .join(groups.with_columns(pl.col(_GROUP).cast(pl.UInt32)), on=_GROUP)
        .select(list(out_schema))
        .cast(out_schema)
    )


def _parent_index(calls: pl.DataFrame, index: pl.DataFrame) -> np.ndarray:
    """Row index of each call's parent within ``calls``; -1 for roots and outside parents."""
    parents = calls.select(pl.col(s.PARENT_ID).alias(s.ID)).join(
        index, on=s.ID, how="left", maintain_order="left"
    )
    return parents.get_column(_IDX).cast(pl.Int64).fill_null(-1).to_numpy().copy()


def _jump(anc: np.ndarray) -> np.ndarray:
    """``anc[anc]``, keeping -1 (no ancestor) as -1."""
    return np.where(anc >= 0, anc[np.maximum(anc, 0)], -1)


def _cut_cycles(parent: np.ndarray) -> None:
    """Detach, in place, every call that lies on a parent cycle."""
    n = len(parent)
    anc = parent
    for _ in range(max(1, int(n).bit_length())):  # 2**rounds >= n
        if not (anc >= 0).any():
            return
        anc = _jump(anc)
    stuck = np.flatnonzero(anc >= 0)
    if len(stuck) == 0:
        return
    # After >= n steps a call that never reaches a root sits on its cycle; walking up
    # 1, 2, 4, ... steps from those calls covers each whole cycle.
    on_cycle = np.zeros(n, dtype=bool)
    on_cycle[anc[stuck]] = True
    step = parent.copy()
    for _ in range(max(1, int(n).bit_length()) + 1):
        members = np.flatnonzero(on_cycle)
        on_cycle[step[members]] = True
        step = _jump(step)
    parent[on_cycle] = -1


def _preorder(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last preorder position of each call's subtree (cycles are cut first)."""
    _cut_cycles(parent)
    n = len(parent)
    size = np.ones(n, dtype=np.int64)
    anc = parent
    while (anc >= 0).any():
        has = anc >= 0
        size = size + np.bincount(anc[has], weights=size[has], minlength=n).astype(np.int64)
        anc = _jump(anc)

    order = np.argsort(parent, kind="stable")
    sorted_parent = parent[order]
    before = np.cumsum(size[order]) - size[order]  # sizes of all earlier rows in this order
    first = np.searchsorted(sorted_parent, sorted_parent, side="left")
    offset = np.empty(n, dtype=np.int64)
    offset[order] = before - before[first] + (sorted_parent >= 0)

    start = offset
    anc = parent
    while (anc >= 0).any():
        start = start + np.where(anc >= 0, start[np.maximum(anc, 0)], 0)
        anc = _jump(anc)
    return start, start + size - 1
