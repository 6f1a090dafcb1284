"""Wire models of Weave's read API (weave 0.53.12 ``CallsQueryReq``, ``CallsQueryStatsReq``).

Field names and defaults match Weave so its client's requests validate unchanged. Options
that need data this service does not keep (feedback, storage sizes, ref expansion) are
accepted when off and rejected with a 400 by :mod:`engine.calls_query` when on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.models import CallsFilter, Int64, Query, WireStr


class _Lenient(BaseModel):
    """Weave's request models ignore unknown fields."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class SortBy(_Lenient):
    """One ORDER BY term: a call field (dotted paths into the JSON columns) and a direction."""

    field: WireStr
    direction: Literal["asc", "desc"]


class _Unsupported(_Lenient):
    """Options Weave's client sends, off by default; the engine refuses them when on."""

    include_feedback: bool | None = False
    include_storage_size: bool | None = False
    include_total_storage_size: bool | None = False
    expand_columns: list[str] | None = None


class CallsQueryReq(_Unsupported):
    """Which calls to list, in which order, and which of their columns."""

    project_id: str
    filter: CallsFilter | None = None
    query: Query | None = None
    sort_by: list[SortBy] | None = Field(
        default=None,
        description="Default: started_at, id ascending; an empty list keeps store order.",
    )
    limit: Int64 | None = Field(default=None, description="None or <= 0: every selected call.")
    offset: Int64 | None = None
    columns: list[WireStr] | None = Field(
        default=None,
        description="Top-level call fields to return (dotted paths read as their column); "
        "id, trace_id, project_id, op_name and started_at are always returned.",
    )
    include_costs: bool | None = Field(
        default=False, description="If true, summary.weave.costs holds each model's cost."
    )


class CallsQueryStatsReq(_Unsupported):
    """How many calls a filter and query select."""

    project_id: str
    filter: CallsFilter | None = None
    query: Query | None = None
    limit: Int64 | None = None


class CallsQueryStatsRes(BaseModel):
    count: int
    has_more: bool = False
    total_storage_size_bytes: int | None = None


class ProjectInfo(BaseModel):
    """A project the caller may read, with its number of calls (deleted ones included)."""

    project_id: str
    calls: int


class ProjectsRes(BaseModel):
    projects: list[ProjectInfo]
