"""Wire models of Weave's usage endpoints (weave 0.53.12 ``trace_server_interface``).

Field names, defaults and ``$``-aliases match Weave so generated clients work. ``$expr`` is
kept as raw JSON here and parsed by :mod:`engine.query.parse`, which reports errors with
their JSON path instead of pydantic's union noise.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

SummaryUsageMode = Literal["own", "auto"]
SUMMARY_USAGE_MODES: tuple[str, ...] = ("own", "auto")


def _encodable(value: str) -> str:
    """Reject lone surrogates (JSON's ``"\\ud800"``): no store, log or answer can encode them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"a lone surrogate at character {err.start} is not valid text") from None
    return value


WireStr = Annotated[str, AfterValidator(_encodable)]
"""A request string that can be stored and echoed: valid UTF-8 text (422 otherwise)."""

Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
"""A request integer that fits the store's BIGINT columns (422 otherwise)."""


class _Lenient(BaseModel):
    """Weave's request models ignore unknown fields (``BaseModelStrict``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class CallsFilter(_Lenient):
    op_names: list[str] | None = None
    input_refs: list[str] | None = None
    output_refs: list[str] | None = None
    parent_ids: list[str] | None = None
    trace_ids: list[str] | None = None
    call_ids: list[str] | None = None
    thread_ids: list[str] | None = None
    turn_ids: list[str] | None = None
    trace_roots_only: bool | None = None
    wb_user_ids: list[str] | None = None
    wb_run_ids: list[str] | None = None


class Query(BaseModel):
    """``{"$expr": <operation>}``; the operation tree is validated by the query parser."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    expr_: dict[str, Any] = Field(alias="$expr")


class _UsageReqBase(_Lenient):
    project_id: str
    include_costs: bool = Field(
        default=False, description="If true, include cost calculations in the usage."
    )
    limit: int = Field(
        default=10_000,
        description="Maximum number of calls to process. Acts as a safety limit to prevent "
        "unbounded memory usage.",
    )
    summary_usage: str | None = Field(
        default=None,
        description="Extension. 'own' (default, as Weave) adds every call's stored "
        "summary.usage; 'auto' skips parents whose stored usage is exactly the sum of their "
        "children's (client-side rollups, as the Weave SDK writes them).",
    )


class TraceUsageReq(_UsageReqBase):
    """Request to compute per-call usage for a trace, with descendant rollup."""

    filter: CallsFilter | None = Field(
        default=None,
        description="Filter to select calls. Typically use trace_ids to get all calls in a trace.",
    )
    query: Query | None = Field(
        default=None, description="Additional query conditions for filtering calls."
    )


class CallsUsageReq(_UsageReqBase):
    """Request to compute aggregated usage for multiple root calls."""

    call_ids: list[str] = Field(
        description="Root call IDs to aggregate. Each result key corresponds to one input call ID."
    )


class LLMAggregatedUsage(BaseModel):
    """Aggregated usage metrics for a specific LLM."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    prompt_tokens_total_cost: float | None = None
    completion_tokens_total_cost: float | None = None
    cache_read_input_tokens_total_cost: float | None = None
    cache_creation_input_tokens_total_cost: float | None = None


class TraceUsageRes(BaseModel):
    """Per-call usage metrics, each including descendant contributions."""

    call_usage: dict[str, dict[str, LLMAggregatedUsage]] = Field(default_factory=dict)
    unfinished_call_ids: list[str] = Field(default_factory=list)


class CallsUsageRes(BaseModel):
    """Aggregated usage metrics per requested root call."""

    call_usage: dict[str, dict[str, LLMAggregatedUsage]] = Field(default_factory=dict)
    unfinished_call_ids: list[str] = Field(default_factory=list)
