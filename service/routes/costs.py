"""Project price endpoints: ``/cost/create``, ``/cost/query``, ``/cost/purge``.

``/cost/query`` reads the same query language as ``/trace/usage``: the project's price rows
become a frame and :func:`engine.query.table.query_table` filters, sorts and pages it.
Purging is by id only, as in the reference, read from the same parsed query.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
from fastapi import APIRouter

from engine import schema as s
from engine.errors import InvalidRequestError
from engine.query import Node, parse_query
from engine.query.ast import Compare, GetField, In, Literal, Or
from engine.query.table import query_table
from service.deps import PrincipalDep, StoreDep
from service.parts import as_utc
from service.store import PRICE_ROW_FIELDS
from service.wire import (
    CostCreateReq,
    CostCreateRes,
    CostPurgeReq,
    CostPurgeRes,
    CostQueryOutput,
    CostQueryReq,
    CostQueryRes,
)

router = APIRouter(tags=["costs"])

PURGE_ONLY_BY_ID = "Can only purge costs by specifying one or more cost ids"
_ID = GetField("id")


@router.post("/cost/create")
def cost_create(req: CostCreateReq, store: StoreDep, principal: PrincipalDep) -> CostCreateRes:
    """Append project-level prices; each gets a new id."""
    principal.check(req.project_id)
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            s.PRICING_LEVEL: s.PROJECT_LEVEL,
            s.PRICING_LEVEL_ID: req.project_id,
            s.PROVIDER_ID: cost.provider_id or "default",
            s.LLM_ID: llm_id,
            s.EFFECTIVE_DATE: as_utc(cost.effective_date) or now,
            s.PROMPT_PRICE: cost.prompt_token_cost,
            s.COMPLETION_PRICE: cost.completion_token_cost,
            s.CACHE_READ_PRICE: cost.cache_read_input_token_cost,
            s.CACHE_CREATION_PRICE: cost.cache_creation_input_token_cost,
            "prompt_token_cost_unit": cost.prompt_token_cost_unit or "USD",
            "completion_token_cost_unit": cost.completion_token_cost_unit or "USD",
            "created_by": req.wb_user_id or principal.user,
            "created_at": now,
        }
        for llm_id, cost in req.costs.items()
    ]
    return CostCreateRes(ids=store.add_prices(rows))


_DATES = (s.EFFECTIVE_DATE, "created_at")
PRICE_ROWS = pl.Schema(
    {
        name: pl.Float64() if name in s.PRICES else s.TIMESTAMP if name in _DATES else pl.String()
        for name in PRICE_ROW_FIELDS
    }
)
"""The columns of a project's price rows, as ``/cost/query`` reads them."""


@router.post("/cost/query")
def cost_query(req: CostQueryReq, store: StoreDep, principal: PrincipalDep) -> CostQueryRes:
    """This project's prices, filtered, sorted and paged as asked."""
    principal.check(req.project_id)
    rows = pl.LazyFrame(store.project_price_rows(req.project_id), schema=PRICE_ROWS)
    picked = query_table(
        rows,
        req.query.expr_ if req.query is not None else None,
        [(clause.field, clause.direction == "desc") for clause in req.sort_by or []],
        req.offset,
        req.limit,
    )
    fields = req.fields or list(CostQueryOutput.model_fields)
    return CostQueryRes(
        results=[CostQueryOutput(**{f: r.get(f) for f in fields}) for r in picked.to_dicts()]
    )


@router.post("/cost/purge")
def cost_purge(req: CostPurgeReq, store: StoreDep, principal: PrincipalDep) -> CostPurgeRes:
    """Remove this project's prices named by id (``$eq``, ``$in`` or ``$or`` of ``$eq``)."""
    principal.check(req.project_id)
    store.purge_prices(req.project_id, purge_ids(parse_query(req.query.expr_)))
    return CostPurgeRes()


def purge_ids(query: Node) -> list[str]:
    """The cost ids a parsed purge query names; anything but ids is a 400, as the reference.

    >>> purge_ids(parse_query({"$in": [{"$getField": "id"}, [{"$literal": "c1"}]]}))
    ['c1']
    """
    if isinstance(query, Or):
        return [i for item in query.items for i in _ids(item, in_allowed=False)]
    return _ids(query, in_allowed=True)


def _ids(node: Node, in_allowed: bool) -> list[str]:
    if isinstance(node, Compare) and node.op == "eq" and node.left == _ID:
        options: tuple[Node, ...] = (node.right,)
    elif isinstance(node, In) and in_allowed and node.left == _ID:
        options = node.items
    else:
        raise InvalidRequestError(PURGE_ONLY_BY_ID, path="query.$expr")
    ids = [o.value for o in options if isinstance(o, Literal) and isinstance(o.value, str)]
    if len(ids) != len(options):
        raise InvalidRequestError(PURGE_ONLY_BY_ID, path="query.$expr")
    return ids
