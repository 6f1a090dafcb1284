"""Whether two ``/trace/usage`` answers agree: tokens exactly, costs to 1e-9 relative.

A benchmark that times two sides is only meaningful if both computed the same answer, so
every benchmark checks its first answers with :func:`difference` before timing.
"""

from __future__ import annotations

import math
from typing import Any

from engine import schema as s


def difference(ours: dict[str, Any], ref: dict[str, Any]) -> str | None:
    """The first difference between two ``TraceUsageRes``-shaped dicts, or None.

    Examples
    --------
    >>> a = {"call_usage": {"c": {"m": {"requests": 1}}}, "unfinished_call_ids": []}
    >>> difference(a, a) is None
    True
    >>> difference(a, {**a, "unfinished_call_ids": ["c"]})
    'unfinished_call_ids differ'
    """
    if ours["unfinished_call_ids"] != ref["unfinished_call_ids"]:
        return "unfinished_call_ids differ"
    if list(ours["call_usage"]) != list(ref["call_usage"]):
        return "call ids (or their order) differ"
    for call_id, models in ref["call_usage"].items():
        mine = ours["call_usage"][call_id]
        if set(mine) != set(models):
            return f"call {call_id}: models {sorted(mine)} != {sorted(models)}"
        for model, usage in models.items():
            for field, want in usage.items():
                got = mine[model].get(field)
                if not _same(field, got, want):
                    return f"call {call_id} model {model} {field}: {got} != {want}"
    return None


def _same(field: str, got: Any, want: Any) -> bool:
    if field in s.COSTS and want is not None and got is not None:
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-15)
    return got == want


def rollup_difference(
    ours: dict[str, dict[str, dict[str, int]]], ref: dict[str, Any]
) -> str | None:
    """The first difference between rolled-up token counts, ``{call: {model: {field: n}}}``,
    and ``aggregate_usage_with_descendants``' answer (calls with no usage may be absent)."""
    for call_id, models in ref.items():
        mine = ours.get(call_id, {})
        if set(mine) != set(models):
            return f"call {call_id}: models {sorted(mine)} != {sorted(models)}"
        for model, usage in models.items():
            for field in s.TOKENS:
                if mine[model][field] != getattr(usage, field):
                    return f"call {call_id} model {model} {field}"
    extra = set(ours) - set(ref)
    return f"calls {sorted(extra)[:3]} only in ours" if extra else None
