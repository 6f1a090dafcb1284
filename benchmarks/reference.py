"""The reference side: weave 0.53.12's in-memory trace server and rollup, fed our traces.

The weave wheel lacks ``model_providers``, which its server imports; a tiny stand-in module
is installed first. Calls go straight into the server's ``_calls`` (setup, not timed) and
its price table is replaced by the shipped one, so both sides price with the same rows.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import types
from typing import Any

import orjson
import polars as pl

from benchmarks.generate import Trace, reference_calls
from engine import schema as s

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network for price maps


def _install_provider_stub() -> None:
    name = "weave.trace_server.model_providers.model_providers"
    if name in sys.modules:
        return
    stub = types.ModuleType(name)
    stub.VERTEX_PROVIDER_NAMES = ()  # type: ignore[attr-defined]
    stub.LLMModelProviderInfo = type("LLMModelProviderInfo", (), {})  # type: ignore[attr-defined]
    stub.read_model_to_provider_info_map = lambda *a, **k: {}  # type: ignore[attr-defined]
    sys.modules[name] = stub


_install_provider_stub()

from weave.trace_server import in_memory_trace_server as ims  # noqa: E402
from weave.trace_server import trace_server_interface as tsi  # noqa: E402
from weave.trace_server import usage_utils  # noqa: E402

_FAR_FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def usage_calls(trace: Trace) -> list[usage_utils.UsageCall]:
    """The input of ``aggregate_usage_with_descendants``: id, parent and parsed summary."""
    rows = trace.calls.select(s.ID, s.PARENT_ID, s.SUMMARY).iter_rows()
    return [
        usage_utils.UsageCall(id=i, parent_id=p, summary=None if t is None else orjson.loads(t))
        for i, p, t in rows
    ]


def aggregate(calls: list[usage_utils.UsageCall]) -> dict[str, dict[str, Any]]:
    """The reference rollup core (token counts only, as the rollup benchmark compares)."""
    return usage_utils.aggregate_usage_with_descendants(calls, include_costs=False)


def make_server(traces: list[Trace], prices: pl.DataFrame) -> ims.InMemoryTraceServer:
    """An ``InMemoryTraceServer`` holding ``traces`` and exactly the rows of ``prices``."""
    server = ims.InMemoryTraceServer()
    for trace in traces:
        for call in reference_calls(trace):
            rec = ims._CallRec(
                project_id=call[s.PROJECT_ID],
                id=call[s.ID],
                trace_id=call[s.TRACE_ID],
                parent_id=call[s.PARENT_ID],
                thread_id=None,
                turn_id=None,
                op_name=call[s.OP_NAME],
                display_name=None,
                started_at=call[s.STARTED_AT],
                attributes=call[s.ATTRIBUTES] or {},
                inputs=call[s.INPUTS] or {},
                input_refs=[],
                wb_user_id=None,
                wb_run_id=None,
                wb_run_step=None,
                otel_dump=None,
                expire_at=_FAR_FUTURE,
                ended_at=call[s.ENDED_AT],
                exception=None,
                output=call[s.OUTPUT],
                output_refs=[],
                summary=call[s.SUMMARY],
                wb_run_step_end=None,
                deleted_at=None,
            )
            server._calls[rec.project_id, rec.id] = rec
    server._llm_token_prices = [
        {
            "id": f"price-{row[s.PRICE_SEQ]}",
            "pricing_level": row[s.PRICING_LEVEL],
            "pricing_level_id": row[s.PRICING_LEVEL_ID],
            "provider_id": row[s.PROVIDER_ID],
            "llm_id": row[s.LLM_ID],
            "effective_date": row[s.EFFECTIVE_DATE].isoformat(),
            **{name: row[name] for name in s.PRICES},
            "prompt_token_cost_unit": "USD",
            "completion_token_cost_unit": "USD",
            "created_by": "bench",
            "created_at": "2024-01-01T00:00:00+00:00",
        }
        for row in prices.iter_rows(named=True)
    ]
    return server


def trace_usage(server: ims.InMemoryTraceServer, req: dict[str, Any]) -> tsi.TraceUsageRes:
    """The reference's in-process ``trace_usage``: request model in, response model out."""
    return server.trace_usage(tsi.TraceUsageReq.model_validate(req))
