"""SQL of the store's call upsert.

``write_parts`` stages the merged parts (one per call) as Arrow views with a :data:`KIND`
column (:func:`part_kind`). :data:`STORED` looks up which of them are stored already; the
others are appended by :data:`INSERT_NEW`, and the stored ones are written over by their
kind's :data:`UPDATES`. DuckDB writes an append to the file as its row groups fill, so a big
batch of new calls is not held in memory until the commit, as a MERGE's would be.
"""

from __future__ import annotations

import polars as pl

from engine import schema as s
from service.parts import COMPLETE, END_COLUMNS, START_COLUMNS

_CALL_COLS = ", ".join(s.CALL_SCHEMA)
USAGE_COLS = ", ".join((s.ID, s.MODEL, *s.RAW_COUNTERS))
PRICE_COLS = (
    s.LLM_ID,
    s.PRICING_LEVEL,
    s.PRICING_LEVEL_ID,
    s.PROVIDER_ID,
    s.EFFECTIVE_DATE,
    *s.PRICES,
    s.PRICE_SEQ,
)
KIND = "_kind"
_KEY = "calls.project_id = p.project_id AND calls.id = p.id"
# which staged calls are stored, as they are before the write (``staged_ids``: their keys)
STORED = (
    "SELECT calls.project_id, calls.id, calls.trace_id, calls.ended_at IS NOT NULL "
    f"FROM calls JOIN staged_ids p ON {_KEY}"
)
STORED_TRACE, STORED_ENDED = "stored_trace_id", "stored_ended"
STORED_SCHEMA = {
    s.PROJECT_ID: pl.String,
    s.ID: pl.String,
    STORED_TRACE: pl.String,
    STORED_ENDED: pl.Boolean,
}
INSERT_NEW = f"INSERT INTO calls ({_CALL_COLS}) SELECT {_CALL_COLS} FROM staged_new"
_SIDES = {"both": (*START_COLUMNS, *END_COLUMNS), "start": START_COLUMNS, "end": END_COLUMNS}


def _update_sql(kind: str) -> list[str]:
    """Statements that write the staged parts of one kind (``staged_stored``) over their
    stored rows.

    A complete part replaces its row: delete and insert, far cheaper in DuckDB than an
    update of every column. A start (end) part sets only the start (end) columns of a
    stored row; ``both`` sets the two sides and keeps ``deleted_at``.
    """
    parts = f"(SELECT * FROM staged_stored WHERE {KIND} = '{kind}') p"
    if kind == "complete":
        return [
            f"DELETE FROM calls USING {parts} WHERE {_KEY}",
            f"INSERT INTO calls ({_CALL_COLS}) SELECT {_CALL_COLS} FROM {parts}",
        ]
    sets = ", ".join(f"{c} = p.{c}" for c in _SIDES[kind])
    return [f"UPDATE calls SET {sets} FROM {parts} WHERE {_KEY}"]


UPDATES = {kind: _update_sql(kind) for kind in ("complete", *_SIDES)}


def part_kind() -> pl.Expr:
    """How a merged part is written over a stored row (:data:`UPDATES` key), as the
    :data:`KIND` column."""
    has_start, has_end = pl.col(s.OP_NAME).is_not_null(), pl.col(s.ENDED_AT).is_not_null()
    return (
        pl.when(pl.col(COMPLETE))
        .then(pl.lit("complete"))
        .when(has_start & has_end)
        .then(pl.lit("both"))
        .when(has_start)
        .then(pl.lit("start"))
        .otherwise(pl.lit("end"))
        .alias(KIND)
    )
