"""The live reference: weave 0.53.12's in-memory trace server, fed exactly our test data.

Calls are inserted as the server's own records (bypassing its pydantic ingest, which would
coerce or reject the malformed usage values the engine must also handle), and its price
table is replaced by ours, so both sides see the same calls and the same prices.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import sys
import types
from typing import Any

import polars as pl

from engine import schema as s

INTERNAL_SCHEME = "weave-trace-internal:///"
PUBLIC_SCHEME = "weave:///"


def _install_provider_stub() -> None:
    name = "weave.trace_server.model_providers.model_providers"
    if name in sys.modules:
        return
    stub = types.ModuleType(name)
    stub.VERTEX_PROVIDER_NAMES = ()

    class LLMModelProviderInfo:  # noqa: D401 - stand-in for the missing wheel module
        """Stand-in."""

    stub.LLMModelProviderInfo = LLMModelProviderInfo
    stub.read_model_to_provider_info_map = lambda *a, **k: {}
    sys.modules[name] = stub


_install_provider_stub()

from weave.shared.trace_server_interface_util import extract_refs_from_values  # noqa: E402
from weave.trace_server import in_memory_trace_server as ims  # noqa: E402
from weave.trace_server import trace_server_interface as tsi  # noqa: E402


def reference_refs(values: Any) -> list[str]:
    """Refs as the reference extracts them from input or output values."""
    return extract_refs_from_values(values)


def _output_values(output: Any) -> list[Any]:
    return list(output.values()) if isinstance(output, dict) else [output]


def make_server(calls: list[dict[str, Any]], prices: list[dict[str, Any]]) -> Any:
    """An ``InMemoryTraceServer`` holding ``calls`` (Python values) and exactly ``prices``."""
    server = ims.InMemoryTraceServer()
    for call in calls:
        inputs = copy.deepcopy(call.get("inputs") or {})
        rec = ims._CallRec(
            project_id=call["project_id"],
            id=call["id"],
            trace_id=call.get("trace_id"),
            parent_id=call.get("parent_id"),
            thread_id=call.get("thread_id"),
            turn_id=call.get("turn_id"),
            op_name=call.get("op_name"),
            display_name=call.get("display_name"),
            started_at=call.get("started_at"),
            attributes=copy.deepcopy(call.get("attributes") or {}),
            inputs=inputs,
            input_refs=reference_refs(list(inputs.values())),
            wb_user_id=call.get("wb_user_id"),
            wb_run_id=call.get("wb_run_id"),
            wb_run_step=call.get("wb_run_step"),
            otel_dump=None,
            expire_at=dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
            ended_at=call.get("ended_at"),
            exception=call.get("exception"),
            output=copy.deepcopy(call.get("output")),
            output_refs=reference_refs(_output_values(call.get("output"))),
            summary=copy.deepcopy(call.get("summary")),
            wb_run_step_end=call.get("wb_run_step_end"),
            deleted_at=call.get("deleted_at"),
        )
        server._calls[rec.project_id, rec.id] = rec
    server._llm_token_prices = [
        {
            "id": f"price-{i}",
            "pricing_level": p["pricing_level"],
            "pricing_level_id": p["pricing_level_id"],
            "provider_id": p.get("provider_id", "default"),
            "llm_id": p["llm_id"],
            "effective_date": p["effective_date"].isoformat(),
            "prompt_token_cost": p["prompt_token_cost"],
            "completion_token_cost": p["completion_token_cost"],
            "cache_read_input_token_cost": p.get("cache_read_input_token_cost", 0.0),
            "cache_creation_input_token_cost": p.get("cache_creation_input_token_cost", 0.0),
            "prompt_token_cost_unit": "USD",
            "completion_token_cost_unit": "USD",
            "created_by": "test",
            "created_at": "2024-01-01T00:00:00+00:00",
        }
        for i, p in enumerate(prices)
    ]
    if not any(p["pricing_level"] == "default" for p in prices):
        # a sentinel default row keeps the server from seeding its own default table
        server._llm_token_prices.append(_sentinel_price())
    return server


def _sentinel_price() -> dict[str, Any]:
    return {
        "id": "sentinel",
        "pricing_level": "default",
        "pricing_level_id": "default",
        "provider_id": "default",
        "llm_id": "\0none",
        "effective_date": "2000-01-01T00:00:00+00:00",
        "prompt_token_cost": 0.0,
        "completion_token_cost": 0.0,
        "cache_read_input_token_cost": 0.0,
        "cache_creation_input_token_cost": 0.0,
        "prompt_token_cost_unit": "USD",
        "completion_token_cost_unit": "USD",
        "created_by": "test",
        "created_at": "2000-01-01T00:00:00+00:00",
    }


def reference_trace_usage(server: Any, req: dict[str, Any]) -> dict[str, Any]:
    """The reference's ``trace_usage`` answer as plain Python objects."""
    return server.trace_usage(tsi.TraceUsageReq.model_validate(req)).model_dump()


def reference_calls_usage(server: Any, req: dict[str, Any]) -> dict[str, Any]:
    """The reference's ``calls_usage`` answer as plain Python objects."""
    return server.calls_usage(tsi.CallsUsageReq.model_validate(req)).model_dump()


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def to_frame(calls: list[dict[str, Any]], refs=reference_refs) -> pl.DataFrame:
    """The same calls as a canonical-schema frame (JSON columns as text)."""
    rows = []
    for call in calls:
        row = {name: call.get(name) for name in s.CALL_SCHEMA}
        for name in s.JSON_COLUMNS:
            row[name] = _dump(call.get(name))
        row[s.INPUT_REFS] = refs(list((call.get("inputs") or {}).values()))
        row[s.OUTPUT_REFS] = refs(_output_values(call.get("output")))
        rows.append(row)
    return pl.DataFrame(rows, schema=s.CALL_SCHEMA, orient="row")


def to_price_frame(prices: list[dict[str, Any]]) -> pl.DataFrame:
    """The same prices as a ``PRICE_SCHEMA`` frame, in stored order."""
    rows = [
        {
            s.LLM_ID: p["llm_id"],
            s.PRICING_LEVEL: p["pricing_level"],
            s.PRICING_LEVEL_ID: p["pricing_level_id"],
            s.PROVIDER_ID: p.get("provider_id", "default"),
            s.EFFECTIVE_DATE: p["effective_date"],
            **{name: p.get(name, 0.0) for name in s.PRICES},
            s.PRICE_SEQ: i,
        }
        for i, p in enumerate(prices)
    ]
    return pl.DataFrame(rows, schema=s.PRICE_SCHEMA, orient="row")


def reference_selected_ids(calls: list[dict[str, Any]], req: dict[str, Any]) -> list[str]:
    """Ids of the calls the reference selects for a TraceUsageReq-shaped ``req``, in order."""
    return list(reference_trace_usage(make_server(calls, []), req)["call_usage"])
