"""ClickHouse-style casts of a ``JSON_VALUE`` string (the reference's ``_ch_cast_json_value``).

Each cast reads its text once as a column would be read: callers hand in a helper column
or a constant-size expression, never a nested operand (see :meth:`Ctx.bind`).
"""

from __future__ import annotations

import polars as pl

from engine.query.values import Kind, Val

# every character Python's str.strip() removes
PY_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())


def _stripped(text: pl.Expr) -> pl.Expr:
    return text.str.strip_chars(PY_WHITESPACE)


def cast_int(text: pl.Expr) -> pl.Expr:
    """``toInt64OrNull``: an optionally signed run of digits, else null."""
    t = _stripped(text)
    return pl.when(t.str.contains(r"^[+-]?[0-9]+$")).then(t.cast(pl.Int64, strict=False))


def cast_float(text: pl.Expr) -> pl.Expr:
    """``toFloat64OrNull`` as Python's ``float()``: underscores between digits allowed."""
    t = _stripped(text)
    bad_underscore = t.str.contains(r"(^|[^0-9])_|_([^0-9]|$)")
    return (
        pl.when(~bad_underscore)
        .then(t.str.replace_all("_", "", literal=True))
        .cast(pl.Float64, strict=False)
    )


def cast_bool(text: pl.Expr) -> pl.Expr:
    """``'true'`` -> 1, ``'false'`` -> 0, else an integer 0..255, else null."""
    number = cast_int(text)
    return (
        pl.when(text == "true")
        .then(pl.lit(1, pl.Int64))
        .when(text == "false")
        .then(pl.lit(0, pl.Int64))
        .when((number >= 0) & (number <= 255))
        .then(number)
    )


def cast_text(text: pl.Expr, to: str) -> Val:
    """A string cast the way the reference casts JSON values (``_ch_cast_json_value``).

    >>> pl.select(cast_text(pl.lit(" 12 "), "int").expr).item()
    12
    """
    if to == "int":
        return Val(cast_int(text), Kind.INT)
    if to == "double":
        return Val(cast_float(text), Kind.FLOAT)
    if to == "bool":
        return Val(cast_bool(text), Kind.INT)
    return Val(text, Kind.STR)
