"""Project price endpoints: ``/cost/create``, ``/cost/query``, ``/cost/purge``.

``/cost/query`` reads the same query language as ``/trace/usage``: the project's price rows
become a frame and :func:`engine.query.table.query_table` filters, sorts and pages it.
Purging is by id only, as in the reference.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
from fastapi import APIRouter

from engine import schema as s
from engine.errors import InvalidRequestError
from engine.query.table import query_table
from service.deps import PrincipalDep, StoreDep
from service.parts import _utc
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
            s.EFFECTIVE_DATE: _utc(cost.effective_date) or now,
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
    store.purge_prices(req.project_id, purge_ids(req.query.expr_))
    return CostPurgeRes()


def purge_ids(expr: dict[str, Any]) -> list[str]:
    """The cost ids a purge query names; anything but ids gets a 400, as the reference."""
    if not isinstance(expr, dict) or len(expr) != 1:
        raise InvalidRequestError(PURGE_ONLY_BY_ID, path="query.$expr")
    ((op, arg),) = expr.items()
    if op == "$or" and isinstance(arg, list):
        return [i for item in arg for i in _id_condition(item, "$eq")]
    if op in ("$eq", "$in"):
        return _id_condition(expr, op)
    raise InvalidRequestError(PURGE_ONLY_BY_ID, path="query.$expr")


def _id_condition(expr: Any, op: str) -> list[str]:
    arg = expr.get(op) if isinstance(expr, dict) and len(expr) == 1 else None
    if not isinstance(arg, list) or len(arg) != 2 or arg[0] != {"$getField": "id"}:
        raise InvalidRequestError(PURGE_ONLY_BY_ID, path="query.$expr")
    literals = [arg[1]] if op == "$eq" else arg[1]
    if not isinstance(literals, list):
        raise InvalidRequestError(PURGE_ONLY_BY_ID, path="query.$expr")
    ids = [
        lit.get("$literal") if isinstance(lit, dict) and len(lit) == 1 else None for lit in literals
    ]
    if not all(isinstance(i, str) for i in ids):
        raise InvalidRequestError(PURGE_ONLY_BY_ID, path="query.$expr")
    return ids
