"""Compiled operands: a Polars expression plus the Python type its rows would have.

The reference evaluates each operand to a Python value and lets that value's type decide
how it compares, prints and casts. :class:`Kind` carries that type at compile time, so the
compiler picks each rule once and rows only run vectorised expressions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import polars as pl


class Kind(Enum):
    """The Python type a reference value has, which decides how it compares."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DATETIME = "datetime"
    LIST = "list"
    NULL = "null"


NUMERIC = frozenset({Kind.INT, Kind.FLOAT, Kind.BOOL})


@dataclass(frozen=True)
class Val:
    """A compiled operand: an expression and the kind of value it yields per row."""

    expr: pl.Expr
    kind: Kind


def kind_of(dtype: pl.DataType) -> Kind:
    """The kind of a column's values, for tables whose columns are plain typed values.

    >>> kind_of(pl.Float64()), kind_of(pl.Datetime("us", "UTC"))
    (<Kind.FLOAT: 'float'>, <Kind.DATETIME: 'datetime'>)
    """
    if dtype == pl.String:
        return Kind.STR
    if dtype == pl.Boolean:
        return Kind.BOOL
    if dtype.is_integer():
        return Kind.INT
    if dtype.is_float():
        return Kind.FLOAT
    if isinstance(dtype, pl.Datetime):
        return Kind.DATETIME
    if isinstance(dtype, pl.List):
        return Kind.LIST
    return Kind.NULL
