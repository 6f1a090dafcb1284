"""Tiny literal traces for the engine's rule tests."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import polars as pl

from engine import schema as s
from engine.trace_usage import price_table

PROJECT = "e/p"
T0 = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def call(
    call_id: str,
    parent: str | None = None,
    usage: Any = None,
    *,
    started: dt.datetime = T0,
    ended: dt.datetime | None = T0,
    summary: Any = "from-usage",
    **extra: Any,
) -> dict[str, Any]:
    """One finished call of trace ``t`` in ``PROJECT``; ``usage`` becomes ``summary.usage``."""
    if summary == "from-usage":
        summary = None if usage is None else {"usage": usage}
    return {
        s.PROJECT_ID: PROJECT,
        s.ID: call_id,
        s.TRACE_ID: "t",
        s.PARENT_ID: parent,
        s.OP_NAME: "op",
        s.STARTED_AT: started,
        s.ENDED_AT: ended,
        s.SUMMARY: None if summary is None else json.dumps(summary),
        **extra,
    }


def frame(*calls: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(calls), schema_overrides={k: s.CALL_SCHEMA[k] for k in calls[0]})


def prices(*rows: dict[str, Any]) -> pl.DataFrame:
    """Only these price rows (no shipped defaults), in stored order."""
    full = [
        {
            s.LLM_ID: r["llm_id"],
            s.PRICING_LEVEL: r.get("level", "default"),
            s.PRICING_LEVEL_ID: r.get("level_id", "default"),
            s.PROVIDER_ID: "p",
            s.EFFECTIVE_DATE: r.get("date", T0 - dt.timedelta(days=1)),
            s.PROMPT_PRICE: r.get("prompt", 0.0),
            s.COMPLETION_PRICE: r.get("completion", 0.0),
            s.CACHE_READ_PRICE: r.get("cache_read", 0.0),
            s.CACHE_CREATION_PRICE: r.get("cache_creation", 0.0),
            s.PRICE_SEQ: i,
        }
        for i, r in enumerate(rows)
    ]
    return price_table(pl.DataFrame(full, schema=s.PRICE_SCHEMA), default=s.empty(s.PRICE_SCHEMA))
