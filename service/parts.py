"""Wire calls -> part rows: what a start, an end or a complete call writes, and merging.

A *part* (:data:`PART_SCHEMA`) is one row of call columns plus the ``complete`` flag: a
start part carries the start columns, an end part the end columns, a complete part the
whole call (it replaces what is stored). As the reference at write time, credentials are
redacted from inputs and attributes, JSON columns serialized and refs extracted. Used by
the ingest routes, the importer and the store; nothing here touches storage.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from typing import Any

import orjson
import polars as pl

from engine import schema as s
from engine.refs import input_refs, output_refs

COMPLETE = "complete"  # part flag: the row is the whole call (replaces what is stored)
_ROW = "_row"  # row numbers while merging
PART_SCHEMA: dict[str, pl.DataType] = {**s.CALL_SCHEMA, COMPLETE: pl.Boolean()}
_ORJSON = orjson.OPT_NON_STR_KEYS

START_COLUMNS = (
    s.TRACE_ID,
    s.PARENT_ID,
    s.THREAD_ID,
    s.TURN_ID,
    s.OP_NAME,
    s.DISPLAY_NAME,
    s.STARTED_AT,
    s.ATTRIBUTES,
    s.INPUTS,
    s.INPUT_REFS,
    s.WB_USER_ID,
    s.WB_RUN_ID,
    s.WB_RUN_STEP,
)
END_COLUMNS = (s.ENDED_AT, s.EXCEPTION, s.OUTPUT, s.OUTPUT_REFS, s.SUMMARY, s.WB_RUN_STEP_END)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return orjson.dumps(value, option=_ORJSON).decode()
    except TypeError:  # integers past 64 bits: the standard library writes them
        return json.dumps(value)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Aware UTC datetime; a naive one is read as UTC (as the reference does)."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


_REDACTED = "REDACTED"
_CREDENTIAL_NAMES = frozenset(
    {
        "authheaders",
        "authorization",
        "authtoken",
        "awsaccesskey",
        "awsaccesskeyid",
        "bearertoken",
        "vertexcredentials",
        "webhookkey",
        "webhooksecret",
    }
)
_CREDENTIAL_SUFFIXES = (
    "accesstoken",
    "apikey",
    "apitoken",
    "clientsecret",
    "privatekey",
    "refreshtoken",
    "secretaccesskey",
    "secretkey",
    "sessiontoken",
)


@lru_cache(maxsize=4096)
def _is_credential_name(key: str) -> bool:
    name = key.replace("_", "").replace("-", "").lower()
    return name in _CREDENTIAL_NAMES or name.endswith(_CREDENTIAL_SUFFIXES)


def redact_credentials(value: Any) -> Any:
    """``value`` with non-empty strings under credential-like keys replaced, as Weave's
    server does to inputs and attributes at ingest (the stored call never holds them).

    Examples
    --------
    >>> redact_credentials({"openai_api_key": "sk-1", "X-API-Key": "", "keywords": "k"})
    {'openai_api_key': 'REDACTED', 'X-API-Key': '', 'keywords': 'k'}
    """
    if isinstance(value, dict):
        return {
            k: (
                _REDACTED
                if isinstance(k, str) and isinstance(v, str) and v and _is_credential_name(k)
                else redact_credentials(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_credentials(v) for v in value]
    return value


def call_part(call: dict[str, Any], *, start: bool, end: bool) -> dict[str, Any]:
    """One part row (:data:`PART_SCHEMA`) from a Weave call given as Python values.

    ``start``/``end`` say which sides ``call`` carries; both make a complete part that
    replaces the stored call. As the reference at write time, credentials are redacted
    from inputs and attributes, JSON columns serialized, and refs extracted from inputs and
    output.
    """
    row: dict[str, Any] = dict.fromkeys(PART_SCHEMA)
    row[s.PROJECT_ID], row[s.ID] = call[s.PROJECT_ID], call[s.ID]
    row[COMPLETE] = start and end
    if start:
        for name in START_COLUMNS:
            row[name] = call.get(name)
        inputs = redact_credentials(call.get(s.INPUTS))
        attributes = redact_credentials(call.get(s.ATTRIBUTES))
        row[s.ATTRIBUTES], row[s.INPUTS] = _json(attributes), _json(inputs)
        row[s.INPUT_REFS] = input_refs(inputs if isinstance(inputs, dict) else None)
    if end:
        for name in END_COLUMNS:
            row[name] = call.get(name)
        output = call.get(s.OUTPUT)
        row[s.OUTPUT], row[s.SUMMARY] = _json(output), _json(call.get(s.SUMMARY))
        row[s.OUTPUT_REFS] = output_refs(output)
        if not start:
            row[s.STARTED_AT] = call.get(s.STARTED_AT)  # kept only while no start is stored
    if start and end:
        row[s.DELETED_AT] = call.get(s.DELETED_AT)
    elif start:
        row[s.OUTPUT_REFS] = []  # what a fresh row holds until its end arrives
    else:
        row[s.ATTRIBUTES], row[s.INPUTS], row[s.INPUT_REFS] = "{}", "{}", []
    for name in s.DATETIME_COLUMNS:
        row[name] = as_utc(row[name])
    return row


PARTS_PER_SLICE = 2_000


def parts_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Part rows from :func:`call_part` as one :data:`PART_SCHEMA` frame.

    Built :data:`PARTS_PER_SLICE` rows at a time: one Polars call over a whole 30 MB batch
    holds the GIL for most of a second, which stalls the event loop (``/health``) even
    though ingest runs on a worker thread.
    """
    if len(rows) <= PARTS_PER_SLICE:
        return pl.DataFrame(rows, schema=PART_SCHEMA, orient="row")
    return concat_parts(
        [
            pl.DataFrame(rows[at : at + PARTS_PER_SLICE], schema=PART_SCHEMA, orient="row")
            for at in range(0, len(rows), PARTS_PER_SLICE)
        ]
    )


def concat_parts(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Part frames as one, in order, without copying them (no frame: no part).

    Examples
    --------
    >>> concat_parts([]).height
    0
    """
    return pl.concat(frames, rechunk=False) if frames else parts_frame([])


def merge_parts(parts: pl.DataFrame) -> pl.DataFrame:
    """One row per ``(project_id, id)`` equal to applying ``parts`` in order.

    Start columns come from the last part carrying a start, end columns from the last part
    carrying an end; a call with no start part keeps the ``started_at`` of its first end.

    Examples
    --------
    >>> t = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    >>> parts = parts_frame([
    ...     call_part({"project_id": "p", "id": "a", "ended_at": t}, start=False, end=True),
    ...     call_part({"project_id": "p", "id": "a", "op_name": "op", "started_at": t},
    ...               start=True, end=False),
    ... ])
    >>> merge_parts(parts).select("op_name", "ended_at").rows()
    [('op', datetime.datetime(2025, 1, 1, 0, 0, tzinfo=zoneinfo.ZoneInfo(key='UTC')))]
    """
    key = [s.PROJECT_ID, s.ID]
    if not parts.select(pl.struct(key).is_duplicated().any()).item():
        return parts
    parts = parts.rechunk()  # a gather across chunks copies the strings it takes; from one,
    # the string views share their buffers (a 30 MB batch of 256-item chunks: 42 -> 13 MB)
    has_start = pl.col(COMPLETE) | pl.col(s.OP_NAME).is_not_null()
    has_end = pl.col(COMPLETE) | pl.col(s.ENDED_AT).is_not_null()
    # a side no part carries keeps the first part's placeholders, as a single write would;
    # each side is gathered from one row per call, so no string is copied
    row = pl.col(_ROW)
    picks = (
        parts.with_row_index(_ROW)
        .group_by(key, maintain_order=True)
        .agg(
            *(
                pl.when(has.any()).then(row.filter(has).last()).otherwise(row.first()).alias(side)
                for side, has in (("_start", has_start), ("_end", has_end))
            ),
            pl.col(s.DELETED_AT).filter(pl.col(COMPLETE)).last(),
            pl.col(COMPLETE).any(),
        )
    )
    merged = pl.concat(
        [
            picks.drop("_start", "_end"),
            parts.select(START_COLUMNS)[picks.get_column("_start")],
            parts.select(END_COLUMNS)[picks.get_column("_end")],
        ],
        how="horizontal",
    )
    return merged.select(list(PART_SCHEMA)).cast(PART_SCHEMA)
