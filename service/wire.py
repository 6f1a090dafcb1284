"""Request and response models of the ingest, price, object and file endpoints.

Field names, types and defaults follow weave 0.53.12's ``trace_server_interface`` so that
Weave's own client and generated clients talk to this service unchanged. Like Weave's
models, requests ignore unknown fields (the service names them in a ``Warning`` header).
Strings are :data:`~engine.models.WireStr` and integers :data:`~engine.models.Int64`, so
what cannot be stored is a 422 naming the field. ``SummaryInsertMap`` coerces usage counters as
Weave does (``"12"`` -> 12, ``3.5`` rejected) and drops unknown keys inside a usage entry.
"""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_serializer, with_config
from typing_extensions import TypedDict

from engine.models import Int64, LenientModel, LLMUsageSchema, Query, WireStr

WB_USER_ID_DESCRIPTION = "Do not set directly. Server will automatically populate this field."


class BaseModelStrict(LenientModel):
    """Weave's request base: unknown additive fields are ignored (and named in a warning)."""


@with_config(ConfigDict(extra="allow"))
class ExtraKeysTypedDict(TypedDict):
    pass


class TraceStatus(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    RUNNING = "running"
    DESCENDANT_ERROR = "descendant_error"


class SummaryInsertMap(ExtraKeysTypedDict, total=False):
    usage: dict[str, LLMUsageSchema]
    status_counts: dict[TraceStatus, int]


# --- calls ---------------------------------------------------------------------------------
class StartedCallSchemaForInsert(BaseModelStrict):
    project_id: WireStr
    id: WireStr | None = None  # generated when absent
    op_name: WireStr
    display_name: WireStr | None = None
    trace_id: WireStr | None = None  # generated when absent
    parent_id: WireStr | None = None
    thread_id: WireStr | None = None
    turn_id: WireStr | None = None
    started_at: datetime.datetime
    attributes: dict[str, Any]
    inputs: dict[str, Any]
    otel_dump: dict[str, Any] | None = None
    wb_user_id: WireStr | None = Field(None, description=WB_USER_ID_DESCRIPTION)
    wb_run_id: WireStr | None = None
    wb_run_step: Int64 | None = None


class EndedCallSchemaForInsert(BaseModelStrict):
    project_id: WireStr
    id: WireStr
    trace_id: WireStr | None = None
    is_eval: bool | None = None
    ended_at: datetime.datetime
    started_at: datetime.datetime | None = None
    exception: WireStr | None = None
    output: Any | None = None
    summary: SummaryInsertMap
    wb_run_step_end: Int64 | None = None

    @field_serializer("summary")
    def serialize_typed_dicts(self, v: dict[str, Any]) -> dict[str, Any]:
        return dict(v)


class EndedCallSchemaForInsertWithStartedAt(EndedCallSchemaForInsert):
    """Weave's deprecated alias, still what its v2 ``call/end`` sends."""


class CompletedCallSchemaForInsert(BaseModelStrict):
    """A call already finished when it is inserted (``calls/complete``)."""

    project_id: WireStr
    id: WireStr
    trace_id: WireStr
    op_name: WireStr
    started_at: datetime.datetime
    ended_at: datetime.datetime
    display_name: WireStr | None = None
    parent_id: WireStr | None = None
    thread_id: WireStr | None = None
    turn_id: WireStr | None = None
    attributes: dict[str, Any]
    inputs: dict[str, Any]
    output: Any | None = None
    summary: SummaryInsertMap
    otel_dump: dict[str, Any] | None = None
    exception: WireStr | None = None
    wb_user_id: WireStr | None = Field(None, description=WB_USER_ID_DESCRIPTION)
    wb_run_id: WireStr | None = None
    wb_run_step: Int64 | None = None
    wb_run_step_end: Int64 | None = None

    @field_serializer("attributes", "summary", when_used="unless-none")
    def serialize_typed_dicts(self, v: dict[str, Any]) -> dict[str, Any]:
        return dict(v)


class CallStartReq(BaseModelStrict):
    start: StartedCallSchemaForInsert


class CallStartRes(BaseModel):
    id: str
    trace_id: str


class CallEndReq(BaseModelStrict):
    end: EndedCallSchemaForInsert


class CallEndRes(BaseModel):
    pass


class CallBatchStartMode(BaseModelStrict):
    mode: WireStr = "start"
    req: CallStartReq


class CallBatchEndMode(BaseModelStrict):
    mode: WireStr = "end"
    req: CallEndReq


class CallCreateBatchReq(BaseModelStrict):
    batch: list[CallBatchStartMode | CallBatchEndMode]


class CallCreateBatchRes(BaseModel):
    res: list[CallStartRes | CallEndRes]


class CallsUpsertCompleteReq(BaseModelStrict):
    """A batch of completed calls."""

    batch: list[CompletedCallSchemaForInsert]


class CallsUpsertCompleteRes(BaseModel):
    pass


class CallStartV2Req(BaseModelStrict):
    start: StartedCallSchemaForInsert


class CallStartV2Res(BaseModel):
    id: str
    trace_id: str


class CallEndV2Req(BaseModelStrict):
    end: EndedCallSchemaForInsertWithStartedAt


class CallEndV2Res(BaseModel):
    pass


class CallsDeleteReq(BaseModelStrict):
    project_id: WireStr
    call_ids: list[WireStr]
    wb_user_id: WireStr | None = Field(None, description=WB_USER_ID_DESCRIPTION)


class CallsDeleteRes(BaseModel):
    num_deleted: int = Field(..., description="The number of calls deleted")


# --- prices --------------------------------------------------------------------------------
class SortBy(BaseModelStrict):
    field: WireStr
    direction: Literal["asc", "desc"]


class CostCreateInput(BaseModelStrict):
    """A price per token; NaN, infinities and numbers past float range (``1e400``) are 422s,
    as they would print as ``null`` costs."""

    prompt_token_cost: FiniteFloat
    completion_token_cost: FiniteFloat
    cache_read_input_token_cost: FiniteFloat = 0
    cache_creation_input_token_cost: FiniteFloat = 0
    prompt_token_cost_unit: WireStr | None = Field(
        "USD", description="The unit of the cost for the prompt tokens"
    )
    completion_token_cost_unit: WireStr | None = Field(
        "USD", description="The unit of the cost for the completion tokens"
    )
    effective_date: datetime.datetime | None = Field(
        None,
        description="The date after which the cost is effective for, will default to the "
        "current date if not provided",
    )
    provider_id: WireStr | None = Field(
        None,
        description="The provider of the LLM, e.g. 'openai' or 'mistral'. If not provided, "
        "the provider_id will be set to 'default'",
    )


class CostCreateReq(BaseModelStrict):
    project_id: WireStr = Field(examples=["entity/project"])
    costs: dict[WireStr, CostCreateInput]
    wb_user_id: WireStr | None = Field(None, description=WB_USER_ID_DESCRIPTION)


class CostCreateRes(BaseModel):
    """``(cost_id, llm_id)`` pairs, in request order."""

    ids: list[tuple[str, str]]


class CostQueryReq(BaseModelStrict):
    project_id: WireStr = Field(examples=["entity/project"])
    fields: list[WireStr] | None = Field(default=None)
    query: Query | None = None
    sort_by: list[SortBy] | None = None
    limit: Int64 | None = Field(default=None, examples=[10])
    offset: Int64 | None = Field(default=None, examples=[0])


class CostQueryOutput(BaseModel):
    id: str | None = Field(default=None, examples=["2341-asdf-asdf"])
    llm_id: str | None = Field(default=None, examples=["gpt4"])
    prompt_token_cost: float | None = Field(default=None, examples=[1.0])
    completion_token_cost: float | None = Field(default=None, examples=[1.0])
    cache_read_input_token_cost: float | None = Field(default=None, examples=[1.0])
    cache_creation_input_token_cost: float | None = Field(default=None, examples=[1.0])
    prompt_token_cost_unit: str | None = Field(default=None, examples=["USD"])
    completion_token_cost_unit: str | None = Field(default=None, examples=["USD"])
    effective_date: datetime.datetime | None = Field(
        default=None, examples=["2024-01-01T00:00:00Z"]
    )
    provider_id: str | None = Field(default=None, examples=["openai"])


class CostQueryRes(BaseModel):
    results: list[CostQueryOutput]


class CostPurgeReq(BaseModelStrict):
    project_id: WireStr = Field(examples=["entity/project"])
    query: Query


class CostPurgeRes(BaseModel):
    pass


# --- objects and files ---------------------------------------------------------------------
class ObjSchemaForInsert(BaseModelStrict):
    project_id: WireStr
    object_id: WireStr
    val: Any
    builtin_object_class: WireStr | None = None
    set_base_object_class: WireStr | None = Field(exclude=True, default=None, deprecated=True)
    expected_digest: WireStr | None = Field(
        None,
        description="Client-computed digest for server-side validation. "
        "If provided, the server will verify it matches the server-computed digest.",
    )
    wb_user_id: WireStr | None = Field(None, description=WB_USER_ID_DESCRIPTION)

    def model_post_init(self, context: Any, /) -> None:
        """Weave's backward compatibility: ``set_base_object_class`` fills the new field."""
        super().model_post_init(context)
        legacy = self.__dict__.get("set_base_object_class")
        if legacy is not None and self.builtin_object_class is None:
            self.builtin_object_class = legacy


class ObjCreateReq(BaseModelStrict):
    obj: ObjSchemaForInsert


class ObjCreateRes(BaseModel):
    digest: str
    object_id: str | None = None


class FileCreateReq(BaseModelStrict):
    project_id: WireStr
    name: WireStr
    content: bytes
    expected_digest: WireStr | None = Field(
        None, description="Client-computed file digest for server-side validation."
    )


class FileCreateRes(BaseModel):
    digest: str
