"""Seeded generators of random traces and price tables for differential tests."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from engine import schema as s

PROJECT = "entity/project"
OTHER_PROJECT = "entity/other"
MODELS = ["gpt-4o", "claude-3-5-sonnet", "gemini-1.5-pro", "llama-3", "unpriced-model"]
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _counter(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.55:
        return rng.randint(0, 500)
    if roll < 0.65:
        return str(rng.randint(0, 90))  # numeric string: int() accepts it
    if roll < 0.70:
        return rng.choice([" 7 ", "-3", "+5", "1_000"])
    if roll < 0.75:
        return rng.choice([2.0, -1.0])
    if roll < 0.80:
        return rng.choice([True, False, None])
    return 0


def random_usage(rng: random.Random) -> Any:
    """A ``summary.usage`` value the reference accepts (it fails a request whose usage values
    are not integers to pydantic: unit tests cover those)."""
    usage: dict[str, Any] = {}
    for model in rng.sample(MODELS, rng.randint(0, 3)):
        entry = {name: _counter(rng) for name in rng.sample(s.RAW_COUNTERS, rng.randint(0, 8))}
        usage[model] = entry
    return usage


def random_calls(
    rng: random.Random, n_traces: int = 3, max_calls: int = 25
) -> list[dict[str, Any]]:
    """Calls of a few traces: trees, orphans, cycles, self-parents, deleted and foreign calls."""
    calls: list[dict[str, Any]] = []
    for t in range(n_traces):
        trace_id = f"trace-{t}"
        ids = [f"c{t}-{i}" for i in range(rng.randint(1, max_calls))]
        for i, call_id in enumerate(ids):
            roll = rng.random()
            if i == 0:
                parent = None
            elif roll < 0.80:
                parent = ids[rng.randrange(i)]
            elif roll < 0.85:
                parent = call_id  # self-parent
            elif roll < 0.90:
                parent = ids[rng.randrange(i, len(ids))]  # may close a cycle
            elif roll < 0.95:
                parent = f"missing-{i}"  # parent outside the selection
            else:
                parent = None
            started = T0 + dt.timedelta(days=rng.randint(-400, 400), seconds=rng.randint(0, 99))
            if rng.random() < 0.1:
                started = T0  # ties on started_at exercise the id tie-break
            summary: dict[str, Any] | None = {"usage": random_usage(rng)}
            if rng.random() < 0.1:
                summary = None
            elif rng.random() < 0.1:
                summary = {"other": 1}
            call = {
                "project_id": PROJECT if rng.random() > 0.05 else OTHER_PROJECT,
                "id": call_id,
                "trace_id": trace_id,
                "parent_id": parent,
                "op_name": rng.choice(
                    [
                        "weave-trace-internal:///cHJvamVjdA/op/agent:abc",
                        "openai.chat.completions.create",
                        "tool",
                    ]
                ),
                "started_at": started,
                "ended_at": None if rng.random() < 0.2 else started + dt.timedelta(seconds=3),
                "summary": summary,
                "deleted_at": T0 if rng.random() < 0.04 else None,
            }
            if rng.random() < 0.03:
                call["op_name"] = None  # an end-only call: never selectable
            calls.append(call)
    rng.shuffle(calls)
    return calls


def random_prices(rng: random.Random) -> list[dict[str, Any]]:
    """Default and project rows with past, future and tied effective dates."""
    prices = []
    for model in MODELS[:-1]:
        for _ in range(rng.randint(0, 3)):
            level = rng.choice(["default", "default", "project", "project-other"])
            level_id = {"default": "default", "project": PROJECT}.get(level, OTHER_PROJECT)
            prices.append(
                {
                    "llm_id": model,
                    "pricing_level": "default" if level == "default" else "project",
                    "pricing_level_id": level_id,
                    "provider_id": "p",
                    "effective_date": T0 + dt.timedelta(days=rng.choice([-500, -100, 0, 50, 300])),
                    "prompt_token_cost": rng.choice([1e-6, 2.5e-6, 0.0, 3e-5]),
                    "completion_token_cost": rng.choice([2e-6, 1e-5]),
                    "cache_read_input_token_cost": rng.choice([0.0, 5e-7]),
                    "cache_creation_input_token_cost": rng.choice([0.0, 1.25e-6]),
                }
            )
    return prices
