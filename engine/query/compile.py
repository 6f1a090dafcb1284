"""IR -> one Polars predicate, with the reference's typing and NULL rules.

The reference (weave 0.53.12 ``_compile_calls_query``) evaluates each operand to a Python
value and compares with ClickHouse semantics (``_ch_compare``): a NULL side gives NULL,
numbers (bools count as 0/1) compare with numbers, a number against anything else is NULL,
and other mismatched types are unequal and unordered. Here every operand compiles to a
:class:`~engine.query.values.Val` whose ``kind`` is that Python type, so those rules are
decided once at compile time and each row only runs vectorised expressions.

The compiled size is linear in the query: each rule reads each operand's expression once,
or binds it to a helper column first (:meth:`Ctx.bind`), so nesting never copies a subtree.
Field names go to the context's resolver (``ctx.fields``): calls and price rows share this
compiler.
"""

from __future__ import annotations

import datetime as dt
from functools import singledispatch
from typing import Any

import polars as pl

from engine import schema as s
from engine.errors import QueryParseError, UnsupportedQueryError
from engine.query.ast import (
    And,
    CastTo,
    Compare,
    Contains,
    Convert,
    GetField,
    In,
    Literal,
    Node,
    Not,
    Or,
    Size,
)
from engine.query.casts import cast_text
from engine.query.fields import Ctx
from engine.query.render import to_python_str
from engine.query.values import NUMERIC, Kind, Val

_NULL_BOOL = pl.lit(None, pl.Boolean)


def compile_predicate(node: Node, ctx: Ctx) -> pl.Expr:
    """The rows a query keeps: its value must be truthy (NULL, 0, '' and false are not).

    Examples
    --------
    >>> from engine.query.parse import parse_query
    >>> ctx = Ctx()
    >>> pred = compile_predicate(parse_query({"$not": [{"$getField": "op_name"}]}), ctx)
    >>> frame = pl.LazyFrame({"op_name": ["a", "", None]})
    >>> ctx.apply(frame).filter(pred).collect()["op_name"].to_list()
    ['']
    """
    return truthy(to_val(node, ctx))


def to_val(node: Node, ctx: Ctx) -> Val:
    """The compiled value of ``node``; every node counts towards the compiled size."""
    ctx.charge(1, getattr(node, "where", ""))
    return _to_val(node, ctx)


@singledispatch
def _to_val(node: Node, ctx: Ctx) -> Val:
    raise UnsupportedQueryError(f"unsupported query node {type(node).__name__}")


@_to_val.register
def _(node: Literal, ctx: Ctx) -> Val:
    if ctx.fields.orm_literals and isinstance(node.value, bool):
        return literal(int(node.value), node.where)
    return literal(node.value, node.where)


@_to_val.register
def _(node: GetField, ctx: Ctx) -> Val:
    return ctx.fields.resolve(node.name, ctx, node.where)


@_to_val.register
def _(node: Convert, ctx: Ctx) -> Val:
    inner = to_val(node.input, ctx)
    if node.to == "exists":
        return Val(inner.expr.is_not_null(), Kind.BOOL)
    return cast_text(ctx.bind(to_python_str(ctx.bound(inner))), node.to)


@_to_val.register
def _(node: Size, ctx: Ctx) -> Val:
    inner = to_val(node.input, ctx)
    if inner.kind is Kind.STR:
        return Val(inner.expr.str.len_chars().cast(pl.Int64), Kind.INT)
    if inner.kind is Kind.LIST:
        return Val(inner.expr.list.len().cast(pl.Int64), Kind.INT)
    if inner.kind is Kind.NULL:
        return Val(pl.lit(None, pl.Int64), Kind.INT)
    raise UnsupportedQueryError(
        f"$size takes a string or a list, not a {inner.kind.value}", path=node.where
    )


@_to_val.register
def _(node: And, ctx: Ctx) -> Val:
    if len(node.items) == 1:
        return to_val(node.items[0], ctx)
    return Val(pl.all_horizontal([truthy(to_val(i, ctx)) for i in node.items]), Kind.BOOL)


@_to_val.register
def _(node: Or, ctx: Ctx) -> Val:
    if len(node.items) == 1:
        return to_val(node.items[0], ctx)
    return Val(pl.any_horizontal([truthy(to_val(i, ctx)) for i in node.items]), Kind.BOOL)


@_to_val.register
def _(node: Not, ctx: Ctx) -> Val:
    return Val(falsy(to_val(node.item, ctx)), Kind.BOOL)


@_to_val.register
def _(node: Compare, ctx: Ctx) -> Val:
    if node.op == "eq" and isinstance(node.right, Literal) and node.right.value is None:
        return Val(to_val(node.left, ctx).expr.is_null(), Kind.BOOL)
    left, right = node.left, node.right
    dated = _datetime_literals(node, ctx)
    if dated is not None:
        lhs = dated[0] if dated[0] is not None else to_val(left, ctx)
        rhs = dated[1] if dated[1] is not None else to_val(right, ctx)
    else:
        lhs = _operand(left, _literal_cast(right), ctx)
        rhs = _operand(right, _literal_cast(left), ctx)
    return Val(compare(lhs, rhs, node.op, ctx), Kind.BOOL)


@_to_val.register
def _(node: In, ctx: Ctx) -> Val:
    casts = {_literal_cast(item) for item in node.items}
    shared: CastTo | None = None
    if casts == {"int", "double"}:
        shared = "double"
    elif len(casts) == 1:
        shared = casts.pop()
    lhs = ctx.bound(_operand(node.left, shared, ctx))
    literals = [item for item in node.items if isinstance(item, Literal)]
    if len(literals) == len(node.items):
        ctx.charge(1, node.where)
        hit = _in_literals(lhs, [_in_int64(item.value, item.where) for item in literals])
    else:
        items = [to_val(item, ctx) for item in node.items]
        hits = [compare(lhs, item, "eq", ctx).fill_null(False) for item in items]
        hit = pl.any_horizontal(hits) if hits else pl.lit(False)
    return Val(pl.when(lhs.expr.is_not_null()).then(hit), Kind.BOOL)


@_to_val.register
def _(node: Contains, ctx: Ctx) -> Val:
    haystack, needle = to_val(node.input, ctx), to_val(node.substr, ctx)
    if ctx.fields.orm_literals and needle.kind in NUMERIC:
        raise UnsupportedQueryError(
            "$contains takes a text substr, not a number (use $convert)", path=node.where
        )
    if haystack.kind is not Kind.STR or needle.kind is not Kind.STR:
        return Val(pl.lit(False), Kind.BOOL)
    h, n = haystack.expr, needle.expr
    if node.case_insensitive:
        h, n = h.str.to_lowercase(), n.str.to_lowercase()
    return Val(h.str.contains(n, literal=True).fill_null(False), Kind.BOOL)


# --- helpers -----------------------------------------------------------------------------


def literal(value: Any, where: str = "") -> Val:
    """A ``$literal`` as a typed constant."""
    if value is None:
        return Val(pl.lit(None), Kind.NULL)
    if isinstance(value, bool):
        return Val(pl.lit(value, pl.Boolean), Kind.BOOL)
    if isinstance(value, int):
        return Val(pl.lit(_in_int64(value, where), pl.Int64), Kind.INT)
    if isinstance(value, float):
        return Val(pl.lit(value, pl.Float64), Kind.FLOAT)
    return Val(pl.lit(value, pl.String), Kind.STR)


def _in_int64(value: Any, where: str) -> Any:
    """``value``, unless it is an integer outside int64 (the reference's ClickHouse type)."""
    out_of_range = isinstance(value, int) and not s.INT64_MIN <= value <= s.INT64_MAX
    if out_of_range and not isinstance(value, bool):
        raise UnsupportedQueryError(f"integer literal {value} is outside int64", path=where)
    return value


def truthy(val: Val) -> pl.Expr:
    """SQL WHERE truthiness: NULL, 0, false, '' and [] filter out (Python ``bool()``)."""
    e = val.expr
    if val.kind is Kind.BOOL:
        out = e
    elif val.kind in (Kind.INT, Kind.FLOAT):
        out = e != 0
    elif val.kind is Kind.STR:
        out = e.str.len_bytes() > 0
    elif val.kind is Kind.LIST:
        out = e.list.len() > 0
    elif val.kind is Kind.DATETIME:
        out = e.is_not_null()
    else:
        return pl.lit(False)
    return out.fill_null(False)


def falsy(val: Val) -> pl.Expr:
    """``$not``: NULL stays NULL, else ``not bool(value)``; reads ``val.expr`` once."""
    e = val.expr
    if val.kind is Kind.BOOL:
        return ~e
    if val.kind in (Kind.INT, Kind.FLOAT):
        return e == 0
    if val.kind is Kind.STR:
        return e.str.len_bytes() == 0
    if val.kind is Kind.LIST:
        return e.list.len() == 0
    if val.kind is Kind.DATETIME:
        return pl.when(e.is_not_null()).then(pl.lit(False))
    return _NULL_BOOL


def _literal_cast(node: Node) -> CastTo | None:
    """The cast a JSON field takes when compared with this literal."""
    if not isinstance(node, Literal):
        return None
    if isinstance(node.value, bool):
        return "bool"
    if isinstance(node.value, int):
        return "int"
    if isinstance(node.value, float):
        return "double"
    return None


def _operand(node: Node, cast: CastTo | None, ctx: Ctx) -> Val:
    """An operand, with a JSON field cast as the literal on the other side asks."""
    if cast is not None and isinstance(node, GetField) and ctx.fields.is_json(node.name):
        ctx.charge(1, node.where)
        return cast_text(ctx.fields.resolve(node.name, ctx, node.where).expr, cast)
    return to_val(node, ctx)


def _datetime_literals(node: Compare, ctx: Ctx) -> tuple[Val | None, Val | None] | None:
    """Literal sides turned into datetimes when the other side is a datetime column."""
    sides = (node.left, node.right)
    if not any(isinstance(n, GetField) and ctx.fields.is_datetime(n.name) for n in sides):
        return None
    out: list[Val | None] = [None, None]
    for i, n in enumerate(sides):
        if isinstance(n, Literal):
            when = datetime_literal(n.value, n.where)
            if when is not None:
                out[i] = Val(pl.lit(when, s.TIMESTAMP), Kind.DATETIME)
    return (out[0], out[1]) if out != [None, None] else None


def datetime_literal(value: Any, where: str = "") -> dt.datetime | None:
    """Unix seconds or an ISO date(time) string as a UTC datetime, else None."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    except (OverflowError, OSError, ValueError) as err:
        raise QueryParseError(f"timestamp {value!r} is out of range", path=where) from err
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


_CMP = {
    "eq": lambda a, b: a == b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def compare(lhs: Val, rhs: Val, op: str, ctx: Ctx) -> pl.Expr:
    """``_ch_compare``: typed comparison with NULL propagation."""
    if Kind.NULL in (lhs.kind, rhs.kind):
        return _NULL_BOOL
    if lhs.kind in NUMERIC and rhs.kind in NUMERIC:
        return _numeric(lhs, rhs, op, ctx)
    if lhs.kind in NUMERIC or rhs.kind in NUMERIC:
        return _NULL_BOOL
    a, b = lhs.expr, rhs.expr
    if lhs.kind is rhs.kind:
        if lhs.kind is Kind.LIST:
            # "\0" sorts first, so joined text orders as the lists do
            a, b = a.list.join("\x00"), b.list.join("\x00")
        return _CMP[op](a, b)
    if op == "eq":  # str vs datetime vs list: unequal, never ordered
        return pl.when(a.is_not_null() & b.is_not_null()).then(pl.lit(False))
    return _NULL_BOOL


def _numeric(lhs: Val, rhs: Val, op: str, ctx: Ctx) -> pl.Expr:
    if Kind.FLOAT not in (lhs.kind, rhs.kind):
        return _CMP[op](lhs.expr.cast(pl.Int64), rhs.expr.cast(pl.Int64))
    # NaN is unequal and unordered in Python; Polars orders it last
    a, b = ctx.bind(lhs.expr).cast(pl.Float64), ctx.bind(rhs.expr).cast(pl.Float64)
    return pl.when(a.is_nan() | b.is_nan()).then(pl.lit(False)).otherwise(_CMP[op](a, b))


def _in_literals(lhs: Val, values: list[Any]) -> pl.Expr:
    """``$in`` over literals as one ``is_in``; a value of another type never matches."""
    if lhs.kind in NUMERIC:
        numbers = [v for v in values if isinstance(v, int | float) and v is not None]
        if not numbers:
            return pl.lit(False)
        if lhs.kind is not Kind.FLOAT and all(isinstance(v, int) for v in numbers):
            return lhs.expr.cast(pl.Int64).is_in([int(v) for v in numbers]).fill_null(False)
        return lhs.expr.cast(pl.Float64).is_in([float(v) for v in numbers]).fill_null(False)
    if lhs.kind is Kind.STR:
        texts = [v for v in values if isinstance(v, str)]
        return lhs.expr.is_in(texts).fill_null(False) if texts else pl.lit(False)
    return pl.lit(False)
