"""Wire models of Weave's usage endpoints (weave 0.53.12 ``trace_server_interface``).

Field names, defaults and ``$``-aliases match Weave so generated clients work. ``$expr`` is
kept as raw JSON here and parsed by :mod:`engine.query.parse`, which reports errors with
their JSON path instead of pydantic's union noise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr
from typing_extensions import TypedDict

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

Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]  # engine.schema.INT64_MIN/MAX
"""A request integer that fits the store's BIGINT columns (422 otherwise)."""


class UnknownFields:
    """The unknown fields of one request, as dotted paths (``filter.trace_id``).

    Filled while a request is validated inside :func:`collect_unknown_fields`: every
    :class:`LenientModel` that has unknown fields, or children with some, puts its whole
    list here, and the outermost model is validated last, so the list ends up the
    request's. ``seen`` lets models skip the walk over their children when nothing was
    unknown, which is almost always.
    """

    def __init__(self) -> None:
        self.seen = 0
        self.paths: list[str] = []


_UNKNOWN: ContextVar[UnknownFields | None] = ContextVar("unknown_fields", default=None)


@contextmanager
def collect_unknown_fields() -> Iterator[UnknownFields]:
    """Collect the unknown fields of the requests validated in this context.

    Examples
    --------
    >>> with collect_unknown_fields() as unknown:
    ...     _ = TraceUsageReq.model_validate({"project_id": "e/p", "filter": {"trace_id": []}})
    >>> unknown.paths
    ['filter.trace_id']
    """
    sink = UnknownFields()
    token = _UNKNOWN.set(sink)
    try:
        yield sink
    finally:
        _UNKNOWN.reset(token)


def active_unknown_fields() -> UnknownFields | None:
    """The sink of the innermost :func:`collect_unknown_fields`, if one is active (for
    readers that validate a request in parts and name its unknown fields themselves)."""
    return _UNKNOWN.get()


def _children(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    """``(path, model)`` for the models held by a field: itself, list items, dict values."""
    if isinstance(value, BaseModel):
        yield name, value
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _children(f"{name}[{i}]", item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _children(f"{name}.{key}", item)


def _no_additional_properties(schema: dict[str, Any]) -> None:
    schema.pop("additionalProperties", None)


class LenientModel(BaseModel):
    """A request model that ignores unknown fields, as Weave's do, but names them.

    Unknown fields are accepted (``extra="allow"``) only to be listed, then dropped: they
    never reach ``model_dump`` or the store. With :func:`collect_unknown_fields` active the
    request's list of paths is kept, for the service's ``Warning`` header and log line.
    """

    # documented as Weave documents it: unknown fields are not part of the schema
    model_config = ConfigDict(
        extra="allow", populate_by_name=True, json_schema_extra=_no_additional_properties
    )
    _unknown_fields: tuple[str, ...] = PrivateAttr(default=())

    def model_post_init(self, context: Any, /) -> None:
        """Drop the unknown fields, noting their paths (a post-init, not a validator, so
        that error locations name the model, not a wrapper)."""
        extra = self.__pydantic_extra__
        sink = _UNKNOWN.get()
        own = list(extra) if extra else []
        if extra:
            extra.clear()
        if sink is None or not (own or sink.seen):
            return
        sink.seen += len(own)
        found = own + [
            f"{path}.{field}"
            for name in type(self).model_fields
            for path, child in _children(name, getattr(self, name))
            for field in getattr(child, "_unknown_fields", ())
        ]
        if found:
            self._unknown_fields = tuple(found)
            sink.paths = found


class CallsFilter(LenientModel):
    op_names: list[WireStr] | None = None
    input_refs: list[WireStr] | None = None
    output_refs: list[WireStr] | None = None
    parent_ids: list[WireStr] | None = None
    trace_ids: list[WireStr] | None = None
    call_ids: list[WireStr] | None = None
    thread_ids: list[WireStr] | None = None
    turn_ids: list[WireStr] | None = None
    trace_roots_only: bool | None = None
    wb_user_ids: list[WireStr] | None = None
    wb_run_ids: list[WireStr] | None = None


class Query(BaseModel):
    """``{"$expr": <operation>}``; the operation tree is validated by the query parser."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    expr_: dict[str, Any] = Field(alias="$expr")


class _UsageReqBase(LenientModel):
    project_id: WireStr
    include_costs: bool = Field(
        default=False, description="If true, include cost calculations in the usage."
    )
    limit: Int64 = Field(
        default=10_000,
        description="Maximum number of calls to process. Acts as a safety limit to prevent "
        "unbounded memory usage.",
    )
    summary_usage: WireStr | None = Field(
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

    call_ids: list[WireStr] = Field(
        description="Root call IDs to aggregate. Each result key corresponds to one input call ID."
    )


class LLMUsageSchema(TypedDict, total=False):
    """The counters a client reports per model under ``summary.usage`` (Weave's shape)."""

    prompt_tokens: int | None
    input_tokens: int | None
    completion_tokens: int | None
    output_tokens: int | None
    requests: int | None
    total_tokens: int | None
    cache_creation_input_tokens: int | None
    cache_read_input_tokens: int | None


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
