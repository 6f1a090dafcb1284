"""A slow, obvious model of the rollup: a dict walk over each call's descendants.

It defines the answer independently of both the engine and the reference: a call's total is
its own usage plus the totals of its children, where a child counts only if it can reach a
root by following parents within the selection (calls on a parent cycle never can).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

TOKENS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def own_usage(counters: dict[str, int]) -> dict[str, int]:
    prompt = counters.get("prompt_tokens", 0) + counters.get("input_tokens", 0)
    completion = counters.get("completion_tokens", 0) + counters.get("output_tokens", 0)
    total = counters.get("total_tokens", 0) or prompt + completion
    return {
        "requests": counters.get("requests", 0),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "cache_read_input_tokens": counters.get("cache_read_input_tokens", 0),
        "cache_creation_input_tokens": counters.get("cache_creation_input_tokens", 0),
    }


def rollup(parents: dict[str, str | None], usage: dict[str, dict[str, dict[str, int]]]):
    """``{call: {model: tokens}}`` for calls ``parents`` (id -> parent id) with int usage."""
    parent = {c: p for c, p in parents.items() if p in parents}
    on_cycle = set()
    for start in parents:
        seen, node = [], start
        while node is not None and node not in seen:
            seen.append(node)
            node = parent.get(node)
        if node is not None:  # walked into a loop: mark it
            on_cycle.update(seen[seen.index(node) :])
    children: dict[str, list[str]] = defaultdict(list)
    for c, p in parent.items():
        if c not in on_cycle:
            children[p].append(c)
    out: dict[str, dict[str, dict[str, int]]] = {}
    for call in parents:
        total: dict[str, dict[str, int]] = {}
        stack = [call]
        while stack:
            node = stack.pop()
            for model, counters in usage.get(node, {}).items():
                tokens = own_usage(counters)
                if not any(tokens.values()):
                    continue
                acc = total.setdefault(model, dict.fromkeys(TOKENS, 0))
                for k in TOKENS:
                    acc[k] += tokens[k]
            stack.extend(children.get(node, []))
        out[call] = total
    return out


def strip_costs(answer: dict[str, Any]) -> dict[str, Any]:
    """An engine answer's call_usage with only the token fields."""
    return {
        c: {m: {k: v for k, v in u.items() if k in TOKENS} for m, u in models.items()}
        for c, models in answer["call_usage"].items()
    }
