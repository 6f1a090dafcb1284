"""Descendant rollup: each call's usage plus all of its descendants', per usage group.

Semantics are the reference's Kahn order (``aggregate_usage_with_descendants``): a call
passes its total to its parent once all of its children have, so a call on a parent cycle
(self-parents included) never passes its total up, while trees hanging below a cycle still
roll into it. Since every call has at most one parent, a cycle has no ancestors outside
itself; cutting the parent link of every call on a cycle therefore leaves a forest whose
plain subtree sums *are* the Kahn result.

How it computes, in O(log depth) vectorized rounds however deep the trace is (a per-level
loop costs a round per level, which a 100,000-deep chain cannot afford):

1. Ids become row numbers by sorting 64-bit hashes; a value matches the id its hash sorts
   next to when both of two independent 64-bit hashes agree. The rare values whose
   neighbours differ only in the bits the sort drops are matched by string instead.
2. Pointer doubling (``anc_{k+1} = anc_k[anc_k]``, a sentinel row standing for "no
   parent") finds the calls that never reach a root; the cycles they end on are cut.
3. The same ancestor tables give subtree sizes bottom-up
   (``size_{k+1}(c) = size_k(c) + sum of size_k(w) over w with anc_k(w) = c``) and preorder
   positions top-down (a call's position is the sum of its ancestors' sibling offsets).
4. In preorder every subtree is one contiguous range, so a subtree sum is a difference of
   prefix sums over usage rows sorted by (group, position); dense per-(group, position)
   row counts give each range's bounds without a search. Counters are integers, so the
   differences are exact (even where a prefix sum wraps, as long as the sum itself fits
   64 bits, which :mod:`engine.overflow` checks); costs are priced after the rollup from
   these exact sums.

Sorting is by one plain ``np.sort`` of 64-bit words wherever possible
(:func:`_sort_keys`), which is several times faster than ``np.argsort``.
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
_PASS_ENTRIES = 1 << 16  # (group, call) entries per pass of the range search, unthreaded
_SEEDS = (1, 2)  # two independent 64-bit hashes
_WORD_BITS = 64  # a packed sort key is one uint64: a key's bits and a position's must fit


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
    ids = calls.get_column(s.ID)
    first, parent, row_call = _locate(ids, calls.get_column(s.PARENT_ID), row_ids)
    repeated = np.flatnonzero(first != np.arange(len(ids)))  # ids equal to an earlier one
    if len(repeated):
        repeated_id = ids[int(repeated[0])]
        raise InputDataError(f"call id {repeated_id!r} appears more than once in the calls frame")
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
    groups, row_group = _group_index(pl.DataFrame([rows.get_column(k) for k in group_keys]))
    if n == 0 or rows.height == 0:
        return _empty(groups, metrics)

    start, size = preorder.result() if preorder else _preorder(tree.parent)
    width = groups.height
    # usage rows sorted by (group, preorder position of their call), as one key per row
    sorted_key, row_order = _sort_keys(row_group * n + start[row_call], (width * n).bit_length())
    call_at = np.empty(n, dtype=np.int64)  # the call at each preorder position
    call_at[start] = np.arange(n)
    subtree_end = np.arange(n) + size[call_at]  # one past the last position of each subtree
    group_start = np.searchsorted(sorted_key, np.arange(width + 1) * n)  # and the end
    # groups per pass: a few hundred calls' groups go at once, a big trace's one at a time
    # (a pass's arrays hold groups * n entries; the threads take one group each)
    per_pass = 1 if threaded else min(width, max(1, _PASS_ENTRIES // n))
    # for the j-th group of a pass, at entry j * n + p: the end of the subtree at position
    # p in that group's entries, and the answer row of (call at p, group j) less the first
    ends = (np.arange(0, per_pass * n, n)[:, None] + subtree_end).ravel()
    answer_at = (call_at * width + np.arange(per_pass)[:, None]).ravel()

    def ranges(first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted-row ranges ``[lo, hi)`` of the groups from ``first`` (``per_pass`` of
        them) under each call whose subtree has some, and their answer rows as
        ``call * width + g``."""
        entries = (min(first + per_pass, width) - first) * n
        offset = group_start[first]
        before = np.zeros(entries + 1, dtype=np.int64)  # the pass's rows before each entry
        positions = sorted_key[offset : group_start[first + entries // n]] - first * n
        np.cumsum(np.bincount(positions, minlength=entries), out=before[1:])
        lo, hi = before[:-1], before[ends[:entries]]
        with_rows = np.flatnonzero(hi > lo)  # (group, position) whose subtree has such rows
        return lo[with_rows] + offset, hi[with_rows] + offset, answer_at[with_rows] + first

    passes = range(0, width, per_pass)
    los, his, answer_rows = zip(*workers.map_all(ranges, passes, threaded), strict=True)
    # the ranges come in (group, position) order; the answer is in (call, group) order
    answer, to_answer = _sort_keys(np.concatenate(answer_rows), (n * width).bit_length())
    lo, hi = np.concatenate(los)[to_answer], np.concatenate(his)[to_answer]

    def total(name: str) -> np.ndarray:
        """``name`` summed over each answer row's range: a difference of prefix sums."""
        prefix = np.zeros(len(row_order) + 1, dtype=np.int64)
        np.cumsum(rows.get_column(name).to_numpy()[row_order], out=prefix[1:])
        return np.subtract(prefix[hi], prefix[lo])

    totals = dict(zip(metrics, workers.map_all(total, metrics, threaded), strict=True))
    return Rolled(answer // width, answer % width, groups, totals)


def _empty(groups: pl.DataFrame, metrics: list[str]) -> Rolled:
    none = np.zeros(0, dtype=np.int64)
    return Rolled(none, none, groups, {name: none for name in metrics})


def _run_starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array begins (a boolean mask)."""
    starts = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    return starts


def _sort_keys(keys: np.ndarray, key_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keys[order], order)`` with ``order = np.argsort(keys, kind="stable")``, for 64-bit
    non-negative integer keys below ``2**key_bits``.

    When a key and a position fit in one 64-bit word, one plain sort of the words (key in
    the high bits, position in the low ones) gives both at once.

    Examples
    --------
    >>> _sort_keys(np.array([3, 1, 3, 0]), 2)
    (array([0, 1, 3, 3]), array([3, 1, 0, 2]))
    """
    bits = max(1, len(keys).bit_length())
    if key_bits + bits > _WORD_BITS:
        order = np.argsort(keys, kind="stable")
        return keys[order], order
    packed = keys.view(np.uint64) << np.uint64(bits)  # a new array: ``keys`` stays
    packed |= np.arange(len(keys), dtype=np.uint64)
    packed.sort()
    order = (packed & np.uint64((1 << bits) - 1)).astype(np.int64)
    packed >>= np.uint64(bits)
    return packed.view(keys.dtype), order


_HASHES = (pl.col("v").hash(_SEEDS[0]).alias("hash"), pl.col("v").hash(_SEEDS[1]).alias("check"))
_NULLS = pl.col("v").is_null().alias("null")


def _locate(ids: pl.Series, *queries: pl.Series) -> list[np.ndarray]:
    """For each value of ``ids``, then of each of ``queries``: the row of the first id equal
    to it, -1 when there is none (and for nulls among the queries).

    Equal values hash equally, so sorted by hash each value sits in a run with the ids equal
    to it, ids first (a stable sort, ids before queries). The sort keeps a hash's high bits
    (the low ones make room for a position in one 64-bit word); a value matches its run's
    first id when a second, independent 64-bit hash agrees too: a false match needs both
    to collide, about 1e-19 per request at 1,000,000 calls. A run holding an id and a value
    that is not confirmed, or two ids, is matched by string: different values sharing the
    kept bits (about one request in nine at 1,000,000 calls has such a run) or repeated ids.
    Both hashes (and the nulls, when a query has some) come from one Polars query.
    """
    n = len(ids)
    series = (ids, *queries)
    total = sum(len(x) for x in series)
    values = pl.concat([x.cast(pl.String).alias("v") for x in series], rechunk=False)
    with_nulls = any(x.null_count() for x in queries)
    hashed = (
        values.to_frame().select(*_HASHES, _NULLS)
        if with_nulls
        else values.to_frame().select(*_HASHES)
    )
    shift = max(1, total.bit_length())  # low bits of the hash dropped for the position
    kept = hashed.get_column("hash").to_numpy() >> np.uint64(shift)
    sorted_hash, value_at = _sort_keys(kept, 64 - shift)
    check = hashed.get_column("check").to_numpy()
    run_start = _run_starts(sorted_hash)
    run = np.cumsum(run_start) - 1  # the run of each sorted entry
    found = np.empty(total, dtype=np.int64)  # each value's run's first entry: an id, if any
    found[value_at] = value_at[np.flatnonzero(run_start)][run]
    found[found >= n] = -1
    asked = found[n:]
    clash = found[:n] != np.arange(n)  # an earlier id in the same run
    unconfirmed = (check[n:] != check[np.maximum(asked, 0)]) & (asked >= 0)
    if clash.any() or unconfirmed.any():
        doubtful = np.concatenate([clash, unconfirmed])
        bad_run = np.zeros(run[-1] + 1, dtype=bool)
        bad_run[run[doubtful[value_at]]] = True
        members = value_at[bad_run[run]]
        found[members] = _match_by_value(values, members, n)
    if with_nulls:  # a null asks for nothing (null ids stay: two of them are repeated)
        found[n:][hashed.get_column("null").to_numpy()[n:]] = -1
    bounds = np.cumsum([len(x) for x in series])
    return [found[lo:hi] for lo, hi in zip([0, *bounds[:-1]], bounds, strict=True)]


def _match_by_value(values: pl.Series, members: np.ndarray, n: int) -> np.ndarray:
    """:func:`_locate` for the values at ``members`` (rows below ``n`` are ids), by an
    exact join among them (nulls equal, as repeated ids)."""
    picked = pl.DataFrame({"v": values.gather(members), _IDX: members})
    first_ids = picked.filter(pl.col(_IDX) < n).group_by("v").agg(pl.col(_IDX).min())
    found = picked.select("v").join(
        first_ids, on="v", how="left", nulls_equal=True, maintain_order="left"
    )
    return found.get_column(_IDX).fill_null(-1).to_numpy()


def _group_index(keys: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """Distinct rows of ``keys`` (nulls equal) and each row's index among them."""
    m = keys.height
    if m == 0:
        return keys, np.zeros(0, dtype=np.int64)
    shift = max(1, m.bit_length())  # low bits dropped for the position
    hashed = keys.hash_rows(_SEEDS[0]).to_numpy() >> np.uint64(shift)
    sorted_hash, order = _sort_keys(hashed, 64 - shift)
    new = _run_starts(sorted_hash)
    first = order[new]  # one row of each distinct hash
    index = np.empty(m, dtype=np.int64)
    index[order] = np.cumsum(new) - 1
    check = keys.hash_rows(_SEEDS[1]).to_numpy()
    if (check[first][index] == check).all():  # no two distinct keys share a hash
        return keys[pl.Series(first.astype(np.uint32))], index  # an index Series: quickest
    groups = keys.unique(maintain_order=True, keep="first")  # a handful of rows: join them
    joined = keys.join(
        groups.with_row_index(_IDX),
        on=keys.columns,
        how="left",
        nulls_equal=True,
        maintain_order="left",
    )
    return groups, joined.get_column(_IDX).cast(pl.Int64).to_numpy().copy()


def _ancestors(up: np.ndarray) -> list[np.ndarray] | None:
    """``[anc_0, anc_1, ...]`` until every call reaches the sentinel; None on a cycle."""
    n = len(up) - 1
    tables: list[np.ndarray] = []
    anc = up
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
    size = np.ones(n + 1, dtype=np.int64)
    size[n] = 0
    for anc in tables:
        # bincount adds in float64, exactly here: every sum is an integer of at most n
        size += np.bincount(anc, weights=size, minlength=n + 1).astype(np.int64)
        size[n] = 0
    # calls grouped by parent (row order within): each sibling's offset in its parent's
    # subtree is 1 (the parent itself; roots have none) plus the earlier siblings' sizes
    parent_of, order = _sort_keys(up[:n], n.bit_length())
    sizes = size[order]
    before = np.cumsum(sizes) - sizes  # sizes of all earlier calls in this order
    # ``before`` never decreases, so its running maximum at first siblings is the value at
    # the first sibling of each call's own parent
    first_sibling = np.maximum.accumulate(np.where(_run_starts(parent_of), before, 0))
    start = np.zeros(n + 1, dtype=np.int64)
    start[order] = before - first_sibling + (parent_of != n)
    for anc in tables:
        start += start[anc]
    return start[:n], size[:n]
