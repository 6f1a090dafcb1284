"""SQL of the store's call upsert: one statement list per kind of staged part.

``write_parts`` stages the merged parts as the Arrow view ``staged_parts`` with a
:data:`KIND` column (:func:`part_kind`); each kind's statements then write only its rows.
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
# what a MERGE returns of each row it wrote: the trace id its usage rows must carry
_WRITTEN = "calls.project_id, calls.id, calls.trace_id, calls.ended_at IS NOT NULL AS ended"
WRITTEN_SCHEMA = {
    s.PROJECT_ID: pl.String,
    s.ID: pl.String,
    s.TRACE_ID: pl.String,
    "ended": pl.Boolean,
}
_SIDES = {"both": (*START_COLUMNS, *END_COLUMNS), "start": START_COLUMNS, "end": END_COLUMNS}


BEFORE, WRITTEN = "before", "written"  # what a statement's rows are (see _upsert_sql)


def _upsert_sql(kind: str) -> list[tuple[str, str | None]]:
    """Statements that upsert the staged parts of one kind (one part per key), each with
    what its rows are: :data:`BEFORE`, the project and trace a stored call had before the
    write, for every row a complete part replaces and every call a start part moves to
    another trace (the old trace's cached answers must go too); :data:`WRITTEN`, the
    :data:`_WRITTEN` row of each call a MERGE wrote.

    A complete part replaces its row: delete and insert, far cheaper in DuckDB than an
    update of every column. A start (end) part sets only the start (end) columns of a
    stored row; ``both`` sets the two sides and keeps ``deleted_at``.
    """
    parts = f"(SELECT * FROM staged_parts WHERE {KIND} = '{kind}') p"
    key = "calls.project_id = p.project_id AND calls.id = p.id"
    if kind == "complete":
        return [
            (
                f"DELETE FROM calls USING {parts} WHERE {key} "
                "RETURNING calls.project_id, calls.trace_id",
                BEFORE,
            ),
            (f"INSERT INTO calls ({_CALL_COLS}) SELECT {_CALL_COLS} FROM {parts}", None),
        ]
    sets = ", ".join(f"{c} = p.{c}" for c in _SIDES[kind])
    values = ", ".join(f"p.{c}" for c in s.CALL_SCHEMA)
    merge = (
        f"MERGE INTO calls USING {parts} ON {key} "
        f"WHEN MATCHED THEN UPDATE SET {sets} "
        f"WHEN NOT MATCHED THEN INSERT ({_CALL_COLS}) VALUES ({values}) "
        f"RETURNING {_WRITTEN}"
    )
    if s.TRACE_ID not in _SIDES[kind]:
        return [(merge, WRITTEN)]
    # a MERGE returns only the new values: a start sent again with another trace id is
    # found before it
    moved = (
        f"SELECT calls.project_id, calls.trace_id FROM calls JOIN {parts} ON {key} "
        "WHERE calls.trace_id IS DISTINCT FROM p.trace_id"
    )
    return [(moved, BEFORE), (merge, WRITTEN)]


UPSERTS = {kind: _upsert_sql(kind) for kind in ("complete", *_SIDES)}


def part_kind() -> pl.Expr:
    """Which upsert a merged part takes (:data:`UPSERTS` key), as the :data:`KIND` column."""
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
