"""Project price endpoints: ``/cost/create``, ``/cost/query``, ``/cost/purge``.

Project prices are few rows per project, so ``/cost/query`` evaluates its ``$expr`` on
them in Python, with the reference's ClickHouse-like comparison rules (NULL propagates,
numbers never equal strings, date literals compared as dates); purging is by id only, as
in the reference.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter

from engine import schema as s
from engine.errors import InvalidRequestError, QueryParseError
from service.deps import PrincipalDep, StoreDep
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
            s.EFFECTIVE_DATE: _utc(cost.effective_date) if cost.effective_date else now,
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


@router.post("/cost/query")
def cost_query(req: CostQueryReq, store: StoreDep, principal: PrincipalDep) -> CostQueryRes:
    """This project's prices, filtered, sorted and paged as asked."""
    principal.check(req.project_id)
    for name, value in (("limit", req.limit), ("offset", req.offset)):
        if value is not None and value < 0:
            raise InvalidRequestError(f"{name} must be non-negative", path=name)
    rows = store.project_price_rows(req.project_id)
    if req.query is not None:
        rows = [r for r in rows if _truthy(_evaluate(req.query.expr_, r, "query.$expr"))]
    for clause in reversed(req.sort_by or []):
        _field(rows[0] if rows else {}, clause.field, "sort_by")
        present = [r for r in rows if r.get(clause.field) is not None]
        missing = [r for r in rows if r.get(clause.field) is None]
        present.sort(key=lambda r, f=clause.field: r[f], reverse=clause.direction == "desc")
        rows = present + missing
    rows = rows[req.offset or 0 :]
    if req.limit is not None:
        rows = rows[: req.limit]
    fields = req.fields or list(CostQueryOutput.model_fields)
    return CostQueryRes(results=[CostQueryOutput(**{f: r.get(f) for f in fields}) for r in rows])


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


# --- a small evaluator of Weave's query language over price rows ---------------------------
def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _truthy(value: Any) -> bool:
    return value is not None and bool(value)


def _field(row: dict[str, Any], name: Any, path: str) -> Any:
    if not isinstance(name, str) or name not in PRICE_ROW_FIELDS:
        raise QueryParseError(f"Unknown field: {name}", path=path)
    return row.get(name)


def _as_datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    if isinstance(value, str):
        try:
            return _utc(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _compare(lhs: Any, rhs: Any, op: str) -> bool | None:
    if lhs is None or rhs is None:
        return None
    if isinstance(lhs, dt.datetime) != isinstance(rhs, dt.datetime):
        other = _as_datetime(rhs if isinstance(lhs, dt.datetime) else lhs)
        if other is None:
            return None
        lhs, rhs = (lhs, other) if isinstance(lhs, dt.datetime) else (other, rhs)
    lhs, rhs = (int(v) if isinstance(v, bool) else v for v in (lhs, rhs))
    if isinstance(lhs, int | float) != isinstance(rhs, int | float):
        return None
    try:
        return {
            "$eq": lhs == rhs,
            "$gt": lhs > rhs,
            "$gte": lhs >= rhs,
            "$lt": lhs < rhs,
            "$lte": lhs <= rhs,
        }[op]
    except TypeError:
        return None


def _convert(value: Any, to: str) -> Any:
    if to == "exists":
        return value is not None
    if value is None:
        return None
    try:
        if to == "int":
            return int(float(value))
        if to == "double":
            return float(value)
        if to == "bool":
            return bool(value)
    except (TypeError, ValueError):
        return None
    return str(value)


def _evaluate(node: Any, row: dict[str, Any], path: str) -> Any:
    if not isinstance(node, dict) or len(node) != 1:
        raise QueryParseError("an operation is an object with one $-key", path=path)
    ((op, arg),) = node.items()
    here = f"{path}.{op}"
    if op == "$literal":
        return arg
    if op == "$getField":
        return _field(row, arg, here)
    if op in ("$and", "$or"):
        if not isinstance(arg, list) or not arg:
            raise QueryParseError(f"{op} takes a non-empty list", path=here)
        values = [_truthy(_evaluate(a, row, f"{here}[{i}]")) for i, a in enumerate(arg)]
        return all(values) if op == "$and" else any(values)
    if op == "$not":
        if not isinstance(arg, list) or len(arg) != 1:
            raise QueryParseError("$not takes one operand", path=here)
        inner = _evaluate(arg[0], row, f"{here}[0]")
        return None if inner is None else not _truthy(inner)
    if op in ("$eq", "$gt", "$gte", "$lt", "$lte"):
        if not isinstance(arg, list) or len(arg) != 2:
            raise QueryParseError(f"{op} takes 2 operands", path=here)
        lhs, rhs = (_evaluate(a, row, f"{here}[{i}]") for i, a in enumerate(arg))
        return _compare(lhs, rhs, op)
    if op == "$in":
        if not isinstance(arg, list) or len(arg) != 2 or not isinstance(arg[1], list):
            raise QueryParseError("$in takes an operand and a list", path=here)
        lhs = _evaluate(arg[0], row, f"{here}[0]")
        options = [_evaluate(a, row, f"{here}[1][{i}]") for i, a in enumerate(arg[1])]
        return None if lhs is None else any(_compare(lhs, o, "$eq") for o in options)
    if op == "$contains":
        if not isinstance(arg, dict) or "input" not in arg or "substr" not in arg:
            raise QueryParseError("$contains takes input and substr", path=here)
        hay = _evaluate(arg["input"], row, f"{here}.input")
        needle = _evaluate(arg["substr"], row, f"{here}.substr")
        if not isinstance(hay, str) or not isinstance(needle, str):
            return False
        if arg.get("case_insensitive"):
            return needle.lower() in hay.lower()
        return needle in hay
    if op == "$convert":
        if not isinstance(arg, dict) or "input" not in arg or "to" not in arg:
            raise QueryParseError("$convert takes input and to", path=here)
        return _convert(_evaluate(arg["input"], row, f"{here}.input"), arg["to"])
    raise QueryParseError(f"unknown operator {op}", path=here)
