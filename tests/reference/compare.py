"""One assert for usage answers: tokens exactly, costs to 1e-9 relative."""

from __future__ import annotations

import math
from typing import Any

COST_FIELDS = (
    "prompt_tokens_total_cost",
    "completion_tokens_total_cost",
    "cache_read_input_tokens_total_cost",
    "cache_creation_input_tokens_total_cost",
)


def assert_same_usage(ours: dict[str, Any], ref: dict[str, Any], context: str = "") -> None:
    """``ours`` and ``ref`` are ``TraceUsageRes``-shaped dicts."""
    assert ours["unfinished_call_ids"] == ref["unfinished_call_ids"], context
    assert list(ours["call_usage"]) == list(ref["call_usage"]), context
    for call_id, models in ref["call_usage"].items():
        mine = ours["call_usage"][call_id]
        assert set(mine) == set(models), f"{context} call {call_id}: {mine} != {models}"
        for model, usage in models.items():
            for field, want in usage.items():
                got = mine[model][field]
                where = f"{context} call {call_id} model {model} {field}"
                if field in COST_FIELDS and want is not None:
                    assert got is not None and math.isclose(
                        got, want, rel_tol=1e-9, abs_tol=1e-15
                    ), f"{where}: {got} != {want}"
                else:
                    assert got == want, f"{where}: {got} != {want}"
