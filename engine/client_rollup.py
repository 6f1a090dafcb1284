"""``summary_usage="auto"``: count usage that a client already rolled up only once.

Weave's SDK stores, on a call with children, the sum of its children's usage instead of
its own. A selected call that has at least one selected child and whose stored usage equals
the sum of its selected children's stored usage -- every model, every raw counter -- is such
a client rollup, and contributes nothing of its own; the descendant rollup then restores
the same totals from the children.
"""

from __future__ import annotations

import polars as pl

from engine import schema as s

_KEYS = [s.ID, s.MODEL]


def _nonzero(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.filter(pl.any_horizontal(pl.col(c) != 0 for c in s.RAW_COUNTERS))


def drop_client_rollups(raw: pl.LazyFrame, calls: pl.LazyFrame) -> pl.LazyFrame:
    """``raw`` usage rows without those of calls whose usage is their children's sum.

    ``raw`` is in ``USAGE_SCHEMA``; ``calls`` holds the selected ``id`` and ``parent_id``.

    Examples
    --------
    >>> calls = pl.LazyFrame({"id": ["p", "c"], "parent_id": [None, "p"]})
    >>> raw = pl.LazyFrame({"id": ["p", "c"], "model": ["m", "m"]}).with_columns(
    ...     **{c: pl.lit(2, pl.Int64) for c in s.RAW_COUNTERS})
    >>> drop_client_rollups(raw, calls).collect().get_column("id").to_list()
    ['c']
    """
    own = _nonzero(raw)
    children = calls.filter(pl.col(s.PARENT_ID) != pl.col(s.ID)).join(
        calls.select(s.ID), left_on=s.PARENT_ID, right_on=s.ID, how="semi"
    )
    child_sums = _nonzero(
        own.join(children.select(s.ID, s.PARENT_ID), on=s.ID)
        .group_by(s.PARENT_ID, s.MODEL)
        .agg(pl.col(c).sum() for c in s.RAW_COUNTERS)
        .rename({s.PARENT_ID: s.ID})
    )
    parents = children.select(pl.col(s.PARENT_ID).alias(s.ID)).unique()
    differs = (
        own.join(parents, on=s.ID, how="semi")
        .join(child_sums, on=_KEYS, how="full", coalesce=True, suffix="_children")
        .filter(
            pl.any_horizontal(
                pl.col(c).fill_null(0) != pl.col(f"{c}_children").fill_null(0)
                for c in s.RAW_COUNTERS
            )
        )
        .select(s.ID)
    )
    rolled_up = parents.join(differs, on=s.ID, how="anti")
    return raw.join(rolled_up, on=s.ID, how="anti")
