"""Raw ``$expr`` JSON -> IR, with the JSON path of every problem.

Follows the wire grammar of Weave's ``interface/query.py`` as pydantic validates it: an
operator object is read by its first recognised ``$``-key (in the order Weave's unions list
them) and other keys are ignored. The request is size-checked by an iterative walk before
any recursive descent, so hostile nesting fails fast with :class:`QueryTooComplexError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import QueryParseError, QueryTooComplexError
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

MAX_DEPTH = 64
MAX_NODES = 20_000

_OPERAND_KEYS = ("$literal", "$getField", "$convert", "$size")
_OPERATION_KEYS = (
    "$and",
    "$or",
    "$not",
    "$eq",
    "$gt",
    "$lt",
    "$gte",
    "$lte",
    "$in",
    "$contains",
)
_CASTS: tuple[CastTo, ...] = ("double", "string", "int", "bool", "exists")
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


def parse_query(expr: Any, where: str = "query.$expr") -> Node:
    """Parse the value of ``query.$expr`` into the IR.

    Examples
    --------
    >>> parse_query({"$eq": [{"$getField": "op_name"}, {"$literal": "predict"}]})
    Compare(op='eq', left=GetField(name='op_name'), right=Literal(value='predict'))
    """
    check_size(expr, where)
    return _node(expr, where, _OPERATION_KEYS)


def check_size(expr: Any, where: str) -> None:
    """Reject documents nested deeper than ``MAX_DEPTH`` operators or larger than
    ``MAX_NODES`` values, without recursion."""
    stack: list[tuple[Any, int]] = [(expr, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise QueryTooComplexError(f"query has more than {MAX_NODES} nodes", path=where)
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                raise QueryTooComplexError(
                    f"query is nested deeper than {MAX_DEPTH} levels", path=where
                )
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((v, depth) for v in value)


def _node(raw: Any, where: str, keys: tuple[str, ...]) -> Node:
    if not isinstance(raw, dict):
        raise QueryParseError(f"expected an operator object, got {_kind(raw)}", path=where)
    for key in keys:
        if key in raw:
            return _PARSERS[key](raw[key], f"{where}.{key}")
    allowed = ", ".join(keys)
    found = ", ".join(map(repr, raw)) or "nothing"
    raise QueryParseError(f"unknown operator {found}; expected one of {allowed}", path=where)


def _operand(raw: Any, where: str) -> Node:
    return _node(raw, where, _OPERAND_KEYS + _OPERATION_KEYS)


def _list(raw: Any, where: str, what: str) -> list[Any]:
    if not isinstance(raw, list | tuple):
        raise QueryParseError(f"{what} takes a list, got {_kind(raw)}", path=where)
    return list(raw)


def _fixed(raw: Any, where: str, what: str, n: int) -> list[Any]:
    items = _list(raw, where, what)
    if len(items) != n:
        raise QueryParseError(f"{what} takes {n} operand(s), got {len(items)}", path=where)
    return items


def _text(raw: str, where: str) -> str:
    """``raw`` if it is valid text; a lone surrogate (JSON ``"\\ud800"``) cannot be matched,
    stored or echoed."""
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as err:
        raise QueryParseError(
            f"a lone surrogate at character {err.start} is not valid text", path=where
        ) from None
    return raw


def _literal(raw: Any, where: str) -> Node:
    if isinstance(raw, str):
        return Literal(_text(raw, where), where)
    if raw is None or isinstance(raw, bool | int | float):
        return Literal(raw, where)
    raise QueryParseError(
        f"$literal must be a string, number, boolean or null, got {_kind(raw)}", path=where
    )


def _get_field(raw: Any, where: str) -> Node:
    if not isinstance(raw, str):
        raise QueryParseError(f"$getField takes a field name string, got {_kind(raw)}", path=where)
    return GetField(_text(raw, where), where)


def _spec(raw: Any, where: str, what: str, required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise QueryParseError(f"{what} takes an object, got {_kind(raw)}", path=where)
    for key in required:
        if key not in raw:
            raise QueryParseError(f"{what} needs {key!r}", path=where)
    return raw


def _convert(raw: Any, where: str) -> Node:
    spec = _spec(raw, where, "$convert", ("input", "to"))
    if spec["to"] not in _CASTS:
        allowed = ", ".join(_CASTS)
        raise QueryParseError(f"$convert 'to' must be one of {allowed}", path=f"{where}.to")
    return Convert(_operand(spec["input"], f"{where}.input"), spec["to"], where)


def _size(raw: Any, where: str) -> Node:
    return Size(_operand(raw, where), where)


def _bool_list(cls: type[And] | type[Or], what: str) -> Callable[[Any, str], Node]:
    def parse(raw: Any, where: str) -> Node:
        items = _list(raw, where, what)
        if not items:
            raise QueryParseError(f"{what} needs at least one operand", path=where)
        return cls(tuple(_operand(v, f"{where}[{i}]") for i, v in enumerate(items)), where)

    return parse


def _not(raw: Any, where: str) -> Node:
    (item,) = _fixed(raw, where, "$not", 1)
    return Not(_operand(item, f"{where}[0]"), where)


def _compare(op: Any) -> Callable[[Any, str], Node]:
    def parse(raw: Any, where: str) -> Node:
        left, right = _fixed(raw, where, f"${op}", 2)
        return Compare(op, _operand(left, f"{where}[0]"), _operand(right, f"{where}[1]"), where)

    return parse


def _in(raw: Any, where: str) -> Node:
    left, options = _fixed(raw, where, "$in", 2)
    items = _list(options, f"{where}[1]", "$in's second operand")
    return In(
        _operand(left, f"{where}[0]"),
        tuple(_operand(v, f"{where}[1][{i}]") for i, v in enumerate(items)),
        where,
    )


def _contains(raw: Any, where: str) -> Node:
    spec = _spec(raw, where, "$contains", ("input", "substr"))
    return Contains(
        _operand(spec["input"], f"{where}.input"),
        _operand(spec["substr"], f"{where}.substr"),
        _lax_bool(spec.get("case_insensitive"), f"{where}.case_insensitive"),
        where,
    )


def _lax_bool(raw: Any, where: str) -> bool:
    """pydantic's lax ``bool | None`` (absent and null are false)."""
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, int | float) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
        return raw.lower() in _TRUE
    raise QueryParseError(f"expected a boolean, got {raw!r}", path=where)


def _kind(raw: Any) -> str:
    return "null" if raw is None else type(raw).__name__


_PARSERS: dict[str, Callable[[Any, str], Node]] = {
    "$literal": _literal,
    "$getField": _get_field,
    "$convert": _convert,
    "$size": _size,
    "$and": _bool_list(And, "$and"),
    "$or": _bool_list(Or, "$or"),
    "$not": _not,
    "$eq": _compare("eq"),
    "$gt": _compare("gt"),
    "$lt": _compare("lt"),
    "$gte": _compare("gte"),
    "$lte": _compare("lte"),
    "$in": _in,
    "$contains": _contains,
}
