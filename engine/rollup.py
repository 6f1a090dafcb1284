"""Descendant rollup: each call's usage plus all of its descendants', per usage group.

Semantics are the reference's Kahn order (``aggregate_usage_with_descendants``): a call
passes its total to its parent once all of its children have, so a call on a parent cycle
(self-parents included) never passes its total up, while trees hanging below a cycle still
roll into it. Since every call has at most one parent, a cycle has no ancestors outside
itself; cutting the parent link of every call on a cycle therefore leaves a forest whose
plain subtree sums *are* the Kahn result.

How it computes, in O(log depth) vectorized rounds however deep the trace is (a per-level
loop costs a round per level, which a 100,000-deep chain cannot afford):

1. Ids become row numbers by sorting 64-bit hashes (a second, independent hash confirms
   every match; any collision falls back to exact joins).
2. Pointer doubling (``anc_{k+1} = anc_k[anc_k]``, a sentinel row standing for "no
   parent") finds the calls that never reach a root; the cycles they end on are cut.
3. The same ancestor tables give subtree sizes bottom-up
   (``size_{k+1}(c) = size_k(c) + sum of size_k(w) over w with anc_k(w) = c``) and preorder
   positions top-down (a call's position is the sum of its ancestors' sibling offsets).
4. In preorder every subtree is one contiguous range, so a subtree sum is a difference of
   prefix sums over usage rows sorted by (group, position); dense per-(group, position)
   row counts give each range's bounds without a search. Counters are integers, so the
   differences are exact; costs are priced after the rollup from these exact sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from engine import schema as s
from engine import workers
from engine.errors import InputDataError

_IDX = "__idx"
_THREADED_FROM = 20_000  # calls; below this, handing work to threads costs more than it saves
_SEEDS = (1, 2)  # two independent 64-bit hashes


@dataclass(frozen=True)
class Rolled:
    """A rollup by row number: ``call[i]`` (row in ``calls``), ``group[i]`` (row in
    ``groups``) and ``totals[i]``, sorted by call then group."""

    call: np.ndarray
    group: np.ndarray
    groups: pl.DataFrame
    totals: dict[str, np.ndarray]

    def frame(self, ids: pl.Series) -> pl.DataFrame:
        """The rollup as a frame: ``id``, the group keys and the summed metrics."""
        return pl.DataFrame(
            [
                ids.gather(self.call).alias(s.ID),
                *self.groups.gather(self.group).get_columns(),
                *(pl.Series(name, sums) for name, sums in self.totals.items()),
            ]
        )


def rollup(calls: pl.DataFrame, rows: pl.DataFrame, group_keys: list[str]) -> pl.DataFrame:
    """Sum ``rows`` over each call's subtree, per distinct value of ``group_keys``.

    Parameters
    ----------
    calls
        The selected calls: unique ``id`` and ``parent_id`` (a parent outside ``calls``
        ends the chain).
    rows
        ``id``, the ``group_keys`` columns and integer metric columns; rows whose ``id`` is
        not in ``calls`` are ignored.
    group_keys
        Columns that keep rows apart (e.g. ``["model"]``).

    Returns
    -------
    One row per (call, group) whose subtree holds at least one row of that group, with the
    summed metrics, in the order of ``calls``.

    Examples
    --------
    >>> calls = pl.DataFrame({"id": ["r", "a", "b"], "parent_id": [None, "r", "a"]})
    >>> rows = pl.DataFrame({"id": ["a", "b"], "model": ["m", "m"], "n": [1, 2]})
    >>> rollup(calls, rows, ["model"]).rows()
    [('r', 'm', 3), ('a', 'm', 3), ('b', 'm', 2)]
    """
    return rollup_rows(calls, rows, group_keys).frame(calls.get_column(s.ID))


@dataclass(frozen=True)
class Tree:
    """Calls and usage rows by row number: each call's parent and each row's call (-1:
    none among the calls)."""

    parent: np.ndarray
    row_call: np.ndarray


def index_tree(calls: pl.DataFrame, row_ids: pl.Series) -> Tree:
    """Row numbers of each call's parent and of each usage row's call.

    Raises ``InputDataError`` when an id appears twice in ``calls``.
    """
    parent, row_call = _locate(calls.get_column(s.ID), calls.get_column(s.PARENT_ID), row_ids)
    return Tree(parent, row_call)


def rollup_rows(
    calls: pl.DataFrame, rows: pl.DataFrame, group_keys: list[str], tree: Tree | None = None
) -> Rolled:
    """:func:`rollup` by row number, for callers that keep working in ``calls`` order;
    ``tree`` is :func:`index_tree` of these calls and rows when the caller has it."""
    metrics = [c for c in rows.columns if c != s.ID and c not in group_keys]
    n = calls.height
    tree = tree or index_tree(calls, rows.get_column(s.ID))
    row_call = tree.row_call
    threaded = n >= _THREADED_FROM
    preorder = workers.submit(_preorder, tree.parent) if threaded else None  # meanwhile, group
    keep = row_call >= 0
    if not keep.all():
        rows, row_call = rows.filter(pl.Series(keep)), row_call[keep]
    groups, row_group = _group_index(rows.select(group_keys))
    if n == 0 or rows.height == 0:
        return _empty(groups, metrics)

    start, size = preorder.result() if preorder else _preorder(tree.parent)
    width = groups.height
    key = row_group * n + start[row_call]
    order = _argsort(key, int(width * n).bit_length())
    at = np.empty(n, dtype=np.int64)  # the call at each preorder position
    at[start] = np.arange(n)
    ends = np.arange(1, n + 1) + size[at] - 1  # one past each position's subtree
    first_row = np.searchsorted(key[order], np.arange(width + 1) * n)

    def ranges(g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row ranges of group ``g`` under each call whose subtree has some, and the
        (call, group) pairs they belong to (one group at a time keeps arrays at n)."""
        positions = key[order[first_row[g] : first_row[g + 1]]] - g * n
        before = np.zeros(n + 1, dtype=np.int64)  # the group's rows before each position
        np.cumsum(np.bincount(positions, minlength=n), out=before[1:])
        hi = before[ends]
        hit = np.flatnonzero(hi > before[:-1])  # positions whose subtree has such rows
        return before[hit] + first_row[g], hi[hit] + first_row[g], at[hit] * width + g

    los, his, hits = zip(*workers.map_all(ranges, range(width), threaded), strict=True)
    lo, hi = np.concatenate(los), np.concatenate(his)
    # answer order is (call, group): the permutation from (group, position) order
    pairs = np.concatenate(hits)
    perm = _argsort(pairs, int(n * width).bit_length())
    pairs = pairs[perm]

    hi, lo = hi[perm], lo[perm]

    def total(name: str) -> np.ndarray:
        sums = np.zeros(len(key) + 1, dtype=np.int64)
        np.cumsum(rows.get_column(name).to_numpy()[order], out=sums[1:])
        return np.subtract(sums[hi], sums[lo])

    totals = dict(zip(metrics, workers.map_all(total, metrics, threaded), strict=True))
    return Rolled(pairs // width, pairs % width, groups, totals)


def _empty(groups: pl.DataFrame, metrics: list[str]) -> Rolled:
    none = np.zeros(0, dtype=np.int64)
    return Rolled(none, none, groups, {name: none for name in metrics})


def _locate(ids: pl.Series, *queries: pl.Series) -> list[np.ndarray]:
    """Row of each query value in ``ids`` (unique), -1 when absent or null.

    Sorts 64-bit hashes with each value's position packed into the low bits (one plain
    sort instead of an argsort); within a run of equal hashes the ids come first, so each
    run's first entry is its id. A second, independent 64-bit hash confirms every match;
    a collision anywhere falls back to exact joins.
    """
    n = len(ids)
    series = (ids, *queries)
    total = sum(len(x) for x in series)
    bits = np.uint64(max(1, total.bit_length()))
    values = pl.concat([x.cast(pl.String).alias("v") for x in series], rechunk=False)
    hashed = values.to_frame().select(  # both hashes at once: Polars runs them in parallel
        pl.col("v").hash(_SEEDS[0]).alias("first"), pl.col("v").hash(_SEEDS[1]).alias("check")
    )
    packed = hashed.get_column("first").to_numpy(writable=True)
    packed >>= bits
    packed <<= bits
    packed |= np.arange(total, dtype=np.uint64)
    packed.sort()
    pos = (packed & np.uint64((1 << int(bits)) - 1)).astype(np.int64)
    packed >>= bits
    new = np.ones(total, dtype=bool)
    np.not_equal(packed[1:], packed[:-1], out=new[1:])
    runs = np.flatnonzero(new)
    owner = np.repeat(pos[runs], np.diff(runs, append=total))  # each run's first entry
    if ((owner != pos) & (pos < n)).any():  # two ids share a hash: maybe the same id
        return _exact(ids, queries)
    owner[owner >= n] = -1
    found = np.empty(total, dtype=np.int64)
    found[pos] = owner
    offset = 0
    for x in series:
        if x.null_count():
            found[offset + x.is_null().arg_true().to_numpy()] = -1
        offset += len(x)
    asked = found[n:]
    check = hashed.get_column("check").to_numpy()
    if ((check[n:] != check[np.maximum(asked, 0)]) & (asked >= 0)).any():
        return _exact(ids, queries)
    return np.split(asked, np.cumsum([len(q) for q in queries[:-1]]))


def _exact(ids: pl.Series, queries: tuple[pl.Series, ...]) -> list[np.ndarray]:
    """:func:`_locate` by joins, after making sure that the ids are unique."""
    repeated = ids.filter(ids.is_duplicated())
    if repeated.len():
        raise InputDataError(f"call id {repeated[0]!r} appears more than once in the calls frame")
    return [_join_index(ids, q) for q in queries]


def _join_index(ids: pl.Series, query: pl.Series) -> np.ndarray:
    """Exact (slower) :func:`_locate`, used only when two hashes collide."""
    index = pl.DataFrame({s.ID: ids, _IDX: pl.int_range(len(ids), eager=True)})
    found = query.alias(s.ID).to_frame().join(index, on=s.ID, how="left", maintain_order="left")
    return found.get_column(_IDX).cast(pl.Int64).fill_null(-1).to_numpy().copy()


def _group_index(keys: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """Distinct rows of ``keys`` (nulls equal) and each row's index among them."""
    m = keys.height
    if m == 0:
        return keys, np.zeros(0, dtype=np.int64)
    bits = max(1, m.bit_length())
    hashed = keys.hash_rows(_SEEDS[0]).to_numpy() >> np.uint64(bits)  # room for positions
    order = _argsort(hashed, 64 - bits)
    ordered = hashed[order]
    new = np.ones(m, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    first = order[new]  # one row of each distinct hash
    index = np.empty(m, dtype=np.int64)
    index[order] = np.cumsum(new) - 1
    check = keys.hash_rows(_SEEDS[1]).to_numpy()
    if (check[first][index] == check).all():  # no two distinct keys share a hash
        return keys[first], index
    groups = keys.unique(maintain_order=True, keep="first")
    joined = keys.join(
        groups.with_row_index(_IDX),
        on=keys.columns,
        how="left",
        nulls_equal=True,
        maintain_order="left",
    )
    return groups, joined.get_column(_IDX).cast(pl.Int64).to_numpy().copy()


def _argsort(keys: np.ndarray, key_bits: int) -> np.ndarray:
    """``np.argsort(keys)`` (stable) for non-negative keys of ``key_bits`` bits: one plain
    sort of each key with its position packed into the low bits, when both fit in 64."""
    n = len(keys)
    bits = max(1, n.bit_length())
    if key_bits + bits > 64:
        return np.argsort(keys, kind="stable")
    packed = keys.astype(np.uint64) << np.uint64(bits)
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    return (packed & np.uint64((1 << bits) - 1)).astype(np.int64)


def _ancestors(up: np.ndarray) -> list[np.ndarray] | None:
    """``[anc_0, anc_1, ...]`` until every call reaches the sentinel; None on a cycle."""
    n = len(up) - 1
    tables, anc = [], up
    for _ in range(max(1, n.bit_length())):  # 2**rounds >= n steps
        if (anc[:n] == n).all():
            return tables
        tables.append(anc)
        anc = anc[anc]
    return tables if (anc[:n] == n).all() else None


def _cut_cycles(up: np.ndarray) -> None:
    """Detach, in place, every call that lies on a parent cycle."""
    n = len(up) - 1
    anc = up
    rounds = max(1, n.bit_length())
    for _ in range(rounds):
        anc = anc[anc]
    # After >= n steps a call that never reaches a root sits on its cycle; walking up
    # 1, 2, 4, ... steps from those calls covers each whole cycle.
    on_cycle = np.zeros(n + 1, dtype=bool)
    on_cycle[anc[np.flatnonzero(anc[:n] != n)]] = True
    step = up.copy()
    for _ in range(rounds + 1):
        members = np.flatnonzero(on_cycle)
        on_cycle[step[members]] = True
        step = step[step]
    on_cycle[n] = False
    up[on_cycle] = n


def _preorder(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Preorder position and subtree size of each call (cycles are cut first)."""
    n = len(parent)
    up = np.append(np.where(parent >= 0, parent, n), n)  # row n: the sentinel "no parent"
    tables = _ancestors(up)
    if tables is None:
        _cut_cycles(up)
        tables = _ancestors(up) or []
    size = np.ones(n + 1)
    size[n] = 0
    for anc in tables:
        size += np.bincount(anc, weights=size, minlength=n + 1)
        size[n] = 0
    order = _argsort(up[:n], n.bit_length())
    ordered = up[order]
    sizes = size[order]
    before = np.cumsum(sizes) - sizes  # sizes of all earlier rows in this order
    new = np.ones(n, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    # ``before`` never decreases, so the running maximum of its value at each first
    # sibling is the value at the first sibling of each row's own parent
    start = np.zeros(n + 1)
    start[order] = before - np.maximum.accumulate(np.where(new, before, 0)) + (ordered != n)
    for anc in tables:
        start += start[anc]
    return start[:n].astype(np.int64), size[:n].astype(np.int64)
