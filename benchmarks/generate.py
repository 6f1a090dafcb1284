"""Seeded generators of agent-shaped traces, vectorized so a 1,000,000-call trace is cheap.

Three shapes, all one trace each:

* ``agent`` -- what an agent framework logs: a root run fanning out into steps and tools
  (a random recursive tree over the container calls, so the root is wide and depth grows
  like ``log n``), LLM calls as leaves with one or two models each (OpenAI-style and
  Anthropic-style counters, one unpriced fine-tune), and about 1% of calls still running.
* ``chain`` -- every call is the only child of the previous one (depth ``n``).
* ``bushy`` -- a complete 8-ary tree (depth ``log_8 n``).

Each trace comes as the canonical frame (:data:`engine.schema.CALL_SCHEMA`, JSON columns as
text), the usage rows the store extracts at ingest (:data:`engine.schema.USAGE_SCHEMA`), and,
on demand, the Python values the reference's in-memory server stores.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import polars as pl

from engine import schema as s
from engine.usage import usage_from_json

PROJECT = "bench/agents"
T0 = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
KINDS = ("agent", "chain", "bushy")
# (model, anthropic-style counters?, weight); the last one has no price row
MODELS = (
    ("gpt-4o", False, 0.30),
    ("gpt-4o-mini", False, 0.25),
    ("claude-sonnet-4-20250514", True, 0.25),
    ("claude-3-5-haiku-20241022", True, 0.10),
    ("gemini-1.5-pro", False, 0.07),
    ("acme/fine-tuned-llama", False, 0.03),
)
_LLM, _TOOL, _STEP = 0, 1, 2
_OPS = {
    _LLM: "openai.chat.completions.create",
    _TOOL: "weave-trace-internal:///YmVuY2gvYWdlbnRz/op/search_tool:v3",
    _STEP: "weave-trace-internal:///YmVuY2gvYWdlbnRz/op/Agent.step:v7",
}
_ROOT_OP = "weave-trace-internal:///YmVuY2gvYWdlbnRz/op/Agent.run:v7"


@dataclass(frozen=True)
class Trace:
    """One generated trace: its id, canonical call frame and extracted usage rows."""

    kind: str
    trace_id: str
    calls: pl.DataFrame
    usage: pl.DataFrame

    @property
    def size(self) -> int:
        """Number of calls."""
        return self.calls.height

    def request(self, include_costs: bool) -> dict[str, Any]:
        """The ``/trace/usage`` request body for this trace."""
        return {
            "project_id": PROJECT,
            "filter": {"trace_ids": [self.trace_id]},
            "include_costs": include_costs,
            "limit": self.size,  # the default (10,000) would cut big traces short
        }


def generate(kind: str, n: int, seed: int = 0) -> Trace:
    """A seeded ``kind`` trace of ``n`` calls (``n >= 1``).

    Examples
    --------
    >>> t = generate("chain", 3)
    >>> t.calls.get_column("parent_id").to_list() == [None, *t.calls["id"][:2]]
    True
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    rng = np.random.default_rng([seed, n, KINDS.index(kind)])
    trace_id = f"{seed:08x}-{KINDS.index(kind):04x}-7000-8000-{n:012x}"
    if kind == "agent":
        roles, parent = _agent_tree(rng, n)
    else:
        parent = np.arange(-1, n - 1) if kind == "chain" else (np.arange(n) - 1) // 8
        roles = np.where(np.arange(n) % 3 == 2, _LLM, _STEP)
    roles[0] = _STEP
    calls = _calls_frame(rng, trace_id, roles, parent)
    return Trace(kind, trace_id, calls, usage_from_json(calls.select(s.ID, s.SUMMARY)))


def _agent_tree(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Roles and parent indices: each call hangs under a random earlier step or tool."""
    roles = rng.choice([_LLM, _TOOL, _STEP], size=n, p=[0.6, 0.25, 0.15])
    roles[0] = _STEP
    containers = np.flatnonzero(roles != _LLM)
    before = np.searchsorted(containers, np.arange(n), side="left")  # containers < i
    pick = (rng.random(n) * np.maximum(before, 1)).astype(np.int64)
    parent = containers[np.minimum(pick, np.maximum(before - 1, 0))]
    parent[rng.random(n) < 0.05] = 0  # the root also calls tools and models directly
    parent[0] = -1
    return roles, parent


def _calls_frame(
    rng: np.random.Generator, trace_id: str, roles: np.ndarray, parent: np.ndarray
) -> pl.DataFrame:
    n = len(roles)
    ids = pl.Series(s.ID, [f"{trace_id[:18]}{i:018x}" for i in range(n)], dtype=pl.String)
    start_us = np.arange(n, dtype=np.int64) * 1_000 + rng.integers(0, 1_000, n)
    running = rng.random(n) < 0.01
    ops = np.array([_OPS[_LLM], _OPS[_TOOL], _OPS[_STEP]], dtype=object)[roles]
    ops[0] = _ROOT_OP
    frame = pl.DataFrame(
        {
            s.PROJECT_ID: pl.repeat(PROJECT, n, eager=True),
            s.ID: ids,
            s.TRACE_ID: pl.repeat(trace_id, n, eager=True),
            s.PARENT_ID: ids.gather(np.maximum(parent, 0)).scatter(
                np.flatnonzero(parent < 0), None
            ),
            s.OP_NAME: pl.Series(ops, dtype=pl.String),
            "__start": start_us,
            "__running": running,
            s.SUMMARY: _summaries(rng, roles),
        }
    ).with_columns(
        (pl.lit(T0) + pl.duration(microseconds=pl.col("__start"))).alias(s.STARTED_AT),
    )
    return frame.with_columns(
        pl.when(~pl.col("__running"))
        .then(pl.col(s.STARTED_AT) + pl.duration(milliseconds=800))
        .alias(s.ENDED_AT),
        pl.concat_str(pl.lit('{"step":'), pl.col("__start").cast(pl.String), pl.lit("}")).alias(
            s.INPUTS
        ),
        pl.lit('{"status":"ok"}').alias(s.OUTPUT),
        pl.lit("{}").alias(s.ATTRIBUTES),
    ).pipe(lambda f: s.conform(f.lazy(), s.CALL_SCHEMA, "calls").collect())


_WEAVE = '{"weave":{"status":"success"}}'
CACHE_FIELDS = ("cache_read_input_tokens", "cache_creation_input_tokens")


def _fields(prompt: str, completion: str, extra: tuple[str, ...], cols: Any) -> pl.Expr:
    """``":{"requests":1,...}`` for one usage entry, counters read from ``cols``."""
    names = (prompt, completion, *extra)
    parts: list[pl.Expr] = [pl.lit('":{"requests":1')]
    for name, col in zip(names, cols, strict=True):
        parts += [pl.lit(f',"{name}":'), pl.col(col).cast(pl.String)]
    return pl.concat_str(*parts, pl.lit("}"))


def _summaries(rng: np.random.Generator, roles: np.ndarray) -> pl.Series:
    """``summary`` JSON text: one or two models' usage on LLM calls, none elsewhere."""
    n = len(roles)
    llm = np.flatnonzero(roles == _LLM)
    two = rng.random(len(llm)) < 0.15
    owner = np.concatenate([llm, llm[two]])
    m = len(owner)
    weights = np.array([w for *_, w in MODELS])
    model = rng.choice(len(MODELS), size=m, p=weights / weights.sum())
    prompt = rng.integers(50, 8_000, m)
    completion = rng.integers(1, 1_500, m)
    cached = np.where(rng.random(m) < 0.4, rng.integers(0, 50, m) * 64, 0)
    written = np.where(rng.random(m) < 0.1, rng.integers(1, 20, m) * 64, 0)
    anthropic = np.array([a for _, a, _ in MODELS])[model]
    names = pl.Series([name for name, *_ in MODELS])
    entries = pl.DataFrame(
        {
            "owner": owner,
            "model": names.gather(model),
            "anthropic": anthropic,
            "p": prompt,
            "c": completion,
            "t": prompt + completion,
            "r": cached,
            "w": written,
        }
    ).select(
        "owner",
        pl.concat_str(
            pl.lit('"'),
            "model",
            pl.when("anthropic")
            .then(_fields("input_tokens", "output_tokens", CACHE_FIELDS, ("p", "c", "r", "w")))
            .otherwise(
                _fields("prompt_tokens", "completion_tokens", ("total_tokens",), ("p", "c", "t"))
            ),
        ).alias("entry"),
    )
    per_call = entries.group_by("owner").agg(pl.col("entry").str.join(","))
    return (
        pl.DataFrame({"owner": np.arange(n), "__null": rng.random(n) < 0.1})
        .join(per_call, on="owner", how="left", maintain_order="left")
        .select(
            pl.when(pl.col("entry").is_not_null())
            .then(pl.concat_str(pl.lit('{"usage":{'), "entry", pl.lit("}," + _WEAVE[1:])))
            .when(~pl.col("__null"))
            .then(pl.lit(_WEAVE))
            .alias(s.SUMMARY)
        )
        .to_series()
    )


def reference_calls(trace: Trace) -> list[dict[str, Any]]:
    """The trace as the Python values the reference server stores (JSON columns parsed)."""
    rows = trace.calls.select(
        s.PROJECT_ID,
        s.ID,
        s.TRACE_ID,
        s.PARENT_ID,
        s.OP_NAME,
        s.STARTED_AT,
        s.ENDED_AT,
        *s.JSON_COLUMNS,
    ).to_dicts()
    for row in rows:
        for name in s.JSON_COLUMNS:
            text = row[name]
            row[name] = None if text is None else orjson.loads(text)
    return rows
