"""``$getField`` -> typed Polars expressions over the canonical call columns.

Dynamic fields read JSON text as the reference reads it (``_ch_json_value``): missing and
null read as ``''``, strings unquoted, booleans ``true``/``false``, numbers as Python prints
them with integral floats losing ``.0``, objects and arrays as ``json.dumps`` minified text
(non-ASCII escaped). Each distinct (column, path) is extracted once per request into a
helper column (:class:`Ctx`), whatever number of predicates read it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import polars as pl

from engine import schema as s
from engine.errors import QueryTooComplexError, UnsupportedQueryError


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


@dataclass
class Ctx:
    """Helper columns of one request, added in stages before the filter and dropped after."""

    stages: list[dict[str, pl.Expr]] = field(default_factory=lambda: [{}, {}, {}])
    _keys: dict[tuple, str] = field(default_factory=dict)

    def helper(self, stage: int, key: tuple, build: Callable[[], pl.Expr]) -> pl.Expr:
        """The helper column for ``key``, built on first use."""
        name = self._keys.get(key)
        if name is None:
            name = f"__q{len(self._keys)}"
            self._keys[key] = name
            self.stages[stage][name] = build().alias(name)
        return pl.col(name)

    @property
    def names(self) -> list[str]:
        return list(self._keys.values())

    def apply(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """``frame`` with every helper column, stage by stage."""
        for stage in self.stages:
            if stage:
                frame = frame.with_columns(*stage.values())
        return frame


JSON_FIELDS = (s.INPUTS, s.OUTPUT, s.ATTRIBUTES, s.SUMMARY)
DATETIME_FIELDS = frozenset({s.STARTED_AT, s.ENDED_AT, s.DELETED_AT})
_PLAIN: dict[str, Kind] = {
    **{
        c: Kind.STR
        for c in (
            s.ID,
            s.PROJECT_ID,
            s.TRACE_ID,
            s.PARENT_ID,
            s.THREAD_ID,
            s.TURN_ID,
            s.OP_NAME,
            s.DISPLAY_NAME,
            s.EXCEPTION,
            s.WB_USER_ID,
            s.WB_RUN_ID,
        )
    },
    **{c: Kind.DATETIME for c in DATETIME_FIELDS},
    s.WB_RUN_STEP: Kind.INT,
    s.WB_RUN_STEP_END: Kind.INT,
    s.INPUT_REFS: Kind.LIST,
    s.OUTPUT_REFS: Kind.LIST,
}
_WEAVE_PREFIX = "summary.weave."
_REF_SCHEMES = ("weave-trace-internal:///", "weave:///")
_MAX_INDEX_PARTS = 6
# every character Python's str.strip() removes
PY_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())


def is_json_field(name: str) -> bool:
    """True for a dynamic field (a JSON column or a path into one), not summary.weave.*."""
    if name.startswith(_WEAVE_PREFIX):
        return False
    return any(name == c or name.startswith(c + ".") for c in JSON_FIELDS)


def is_datetime_field(name: str) -> bool:
    return name in DATETIME_FIELDS


def resolve(name: str, ctx: Ctx, where: str) -> Val:
    """The value of ``$getField: name``; raises for fields the reference rejects."""
    if name.startswith(_WEAVE_PREFIX):
        return _weave_field(name[len(_WEAVE_PREFIX) :], ctx, where)
    for column in JSON_FIELDS:
        if name == column or name.startswith(column + "."):
            parts = split_path(name[len(column) + 1 :]) if name != column else []
            return Val(json_value(column, parts, ctx, where), Kind.STR)
    if name.startswith(("feedback.", "annotation_queue_items.")):
        raise UnsupportedQueryError(
            f"field {name!r}: feedback and annotation queues are not part of this data",
            path=where,
        )
    kind = _PLAIN.get(name)
    if kind is None:
        raise UnsupportedQueryError(f"field {name!r} is not allowed", path=where)
    return Val(pl.col(name), kind)


def split_path(path: str) -> list[str]:
    r"""Split on dots not escaped by a backslash; ``\.`` reads as a dot.

    >>> split_path(r"a\.b.c")
    ['a.b', 'c']
    """
    return [p.replace(r"\.", ".") for p in re.split(r"(?<!\\)\.", path)]


def _weave_field(name: str, ctx: Ctx, where: str) -> Val:
    if name == "status":
        errors = cast_int(json_value(s.SUMMARY, ["status_counts", "error"], ctx, where))
        expr = (
            pl.when(pl.col(s.EXCEPTION).is_not_null())
            .then(pl.lit("error"))
            .when(errors.fill_null(0) > 0)
            .then(pl.lit("descendant_error"))
            .when(pl.col(s.ENDED_AT).is_null())
            .then(pl.lit("running"))
            .otherwise(pl.lit("success"))
        )
        return Val(expr, Kind.STR)
    if name == "latency_ms":
        return Val(_epoch_ms(s.ENDED_AT) - _epoch_ms(s.STARTED_AT), Kind.INT)
    if name == "trace_name":
        return Val(_trace_name(), Kind.STR)
    raise UnsupportedQueryError(
        f"summary field {name!r} is not allowed; supported: latency_ms, status, trace_name",
        path=where,
    )


def _epoch_ms(column: str) -> pl.Expr:
    """``int(dt.timestamp() * 1000)``, float rounding included."""
    seconds = pl.col(column).dt.epoch("us").cast(pl.Float64) / 1e6
    return (seconds * 1000).cast(pl.Int64)


def _trace_name() -> pl.Expr:
    op = pl.col(s.OP_NAME)
    is_ref = op.str.starts_with(_REF_SCHEMES[0]) | op.str.starts_with(_REF_SCHEMES[1])
    name = op.str.split("/").list.last().str.extract(r"^([^:]*):", 1).fill_null("")
    display = pl.col(s.DISPLAY_NAME)
    return (
        pl.when(display.is_not_null() & (display != ""))
        .then(display)
        .when(is_ref)
        .then(name)
        .otherwise(op)
    )


# --- JSON_VALUE --------------------------------------------------------------------------


def json_value(column: str, parts: list[str], ctx: Ctx, where: str) -> pl.Expr:
    """``JSON_VALUE`` of ``column`` at ``parts`` as the reference renders it (never null)."""
    return ctx.helper(2, ("json", column, tuple(parts)), lambda: _render(column, parts, ctx, where))


def _steps(parts: list[str], where: str) -> list[list[str | int]]:
    """Each path's alternatives: a key always, a list index when ``int()`` reads one."""
    steps: list[list[str | int]] = []
    for part in parts:
        if "\\" in part:
            raise UnsupportedQueryError(
                f"JSON keys with a backslash are not supported ({part!r})", path=where
            )
        options: list[str | int] = [part]
        try:
            index = int(part)
        except ValueError:
            index = -1
        if index >= 0:
            options.append(index)
        steps.append(options)
    if sum(len(o) > 1 for o in steps) > _MAX_INDEX_PARTS:
        raise QueryTooComplexError(
            f"a field path may have at most {_MAX_INDEX_PARTS} numeric parts", path=where
        )
    return steps


def _combos(steps: list[list[str | int]]) -> list[tuple[str | int, ...]]:
    combos: list[tuple[str | int, ...]] = [()]
    for options in steps:
        combos = [(*c, o) for c in combos for o in options]
    return combos


def _jsonpath(combo: tuple[str | int, ...]) -> str:
    out = "$"
    for step in combo:
        out += f"[{step}]" if isinstance(step, int) else "['" + step.replace("'", "\\'") + "']"
    return out


def _render(column: str, parts: list[str], ctx: Ctx, where: str) -> pl.Expr:
    doc = pl.col(column)
    matches, strings, exact = [], [], []
    for combo in _combos(_steps(parts, where)):
        path = _jsonpath(combo)
        m = ctx.helper(0, ("m", column, combo), lambda p=path: doc.str.json_path_match(p))
        matches.append(m)
        strings.append(
            ctx.helper(
                0,
                ("s", column, combo),
                lambda p=path: doc.str.json_path_match(p + "[?(@ >= '')]"),
            )
        )
        if not any(isinstance(step, int) for step in combo):
            exact.append(
                ctx.helper(1, ("n", column, combo), lambda c=combo, m=m: _exact(doc, c, m))
            )
    m = pl.coalesce(matches)
    is_str = pl.coalesce(strings).is_not_null()
    number = pl.coalesce([*exact, m])
    return (
        pl.when(m.is_null())
        .then(pl.lit(""))
        .when(is_str)
        .then(m)
        .when(m.str.starts_with("{") | m.str.starts_with("["))
        .then(_python_json(m))
        .when(m.is_in(["true", "false"]))
        .then(m)
        .otherwise(_python_number(number, m))
    )


def _exact(doc: pl.Expr, combo: tuple[str | int, ...], match: pl.Expr) -> pl.Expr:
    """The exact text of a numeric leaf reached by keys only.

    json_path_match may round floats of 16+ digits or large exponents (its parser is not
    exact); only those rows are decoded again by json_decode, which is. A decoded value far
    from the matched one (a duplicate key) is dropped.
    """
    dtype: pl.DataType = pl.String()
    for step in reversed(combo):
        dtype = pl.Struct({str(step): dtype})
    mantissa = match.str.replace(r"[eE].*$", "").str.replace_all(r"[^0-9]", "")
    digits = mantissa.str.strip_chars_start("0").str.len_chars()
    exponent = match.str.extract(r"[eE][+-]?([0-9]+)$", 1).cast(pl.Int64, strict=False)
    inexact = match.str.contains(r"^-?[0-9]") & ((digits > 15) | (exponent.fill_null(0) > 22))
    out = pl.when(inexact).then(doc).str.json_decode(dtype)
    for _ in combo:  # renamed first: a key such as "*" or "^a$" would read as a pattern
        out = out.struct.rename_fields(["v"]).struct.field("v")
    near = match.cast(pl.Float64, strict=False)
    got = out.cast(pl.Float64, strict=False)
    return pl.when((got - near).abs() <= near.abs() * 1e-9).then(out)


def _python_number(text: pl.Expr, serde: pl.Expr) -> pl.Expr:
    """A JSON number as the reference prints it: ints as is, integral floats as ints,
    other floats as ``repr``. ``serde`` (json_path_match's text) tells ints from floats."""
    is_int = ~serde.str.contains(r"[.eE]")
    return (
        pl.when(is_int)
        .then(text.str.replace(r"^-0$", "0"))
        .otherwise(float_to_python(text.cast(pl.Float64, strict=False), text))
    )


def float_to_python(x: pl.Expr, huge: pl.Expr | None = None) -> pl.Expr:
    """``str(int(x))`` when ``x`` is integral, else ``repr(x)`` (the reference's renderings).

    Integral floats from 2**127 up print as ``huge`` (default: Polars' text), not exactly.
    """
    integral = x.is_finite() & (x == x.floor())
    digits = x.cast(pl.Int128, strict=False).cast(pl.String)
    return (
        pl.when(x.is_nan())
        .then(pl.lit("nan"))
        .when(integral)
        .then(pl.coalesce(digits, huge if huge is not None else x.cast(pl.String)))
        .otherwise(_repr_float(x.cast(pl.String)))
    )


def _repr_float(text: pl.Expr) -> pl.Expr:
    """Polars float text -> Python ``repr``: they differ only below 1e-4."""
    return (
        text.str.replace(r"e-(\d)$", "e-0$1")
        .str.replace(r"^(-?)0\.0000(\d)(\d+)$", "${1}${2}.${3}e-05")
        .str.replace(r"^(-?)0\.0000(\d)$", "${1}${2}e-05")
    )


_JSON_STRING = r'"(?:[^"\\]|\\.)*"'


def _python_json(text: pl.Expr) -> pl.Expr:
    """serde's minified JSON -> ``json.dumps(v, separators=(",", ":"))``.

    Numbers outside strings are re-formatted (a marker after each skipped string is
    removed again) and characters from DEL up are escaped as ``\\uXXXX``. Each fix runs
    only on the rows that may need it.
    """
    small_exp = _only_where(
        text,
        "e-",
        lambda t: (
            t.str.replace_all(f"({_JSON_STRING})|e-(\\d)([^\\d])", "${1}\x01e-${2}${3}")
            .str.replace_all('"\x01e-', '"', literal=True)
            .str.replace_all("\x01e-", "e-0", literal=True)
        ),
    )
    fixed = _only_where(
        small_exp,
        "0.0000",
        lambda t: (
            t.str.replace_all(
                f"({_JSON_STRING})|([,:\\[]-?)0\\.0000(\\d)(\\d*)", "${1}\x01${2}\x02${3}.${4}e-05"
            )
            .str.replace_all('"\x01\x02.e-05', '"', literal=True)
            .str.replace_all("\x01([^\x02]*)\x02(\\d)\\.e-05", "${1}${2}e-05")
            .str.replace_all("\x01([^\x02]*)\x02", "${1}")
        ),
    )
    # ASCII runs stay whole; each wider character becomes one token to escape
    wide = pl.when(fixed.str.contains("[^\x00-\x7e]")).then(fixed)
    tokens = wide.str.extract_all("[\x00-\x7e]+|[^\x00-\x7e]")
    escaped = tokens.list.eval(_escape_char(pl.element())).list.join("")
    return pl.coalesce(escaped, fixed)


def _only_where(text: pl.Expr, needle: str, fix: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """``fix(text)`` on rows containing ``needle``, the others as they are."""
    return pl.coalesce(fix(pl.when(text.str.contains(needle, literal=True)).then(text)), text)


def _escape_char(c: pl.Expr) -> pl.Expr:
    """A token -> itself when ASCII below DEL, else its ``\\uXXXX`` (UTF-16) escape."""
    hexed = c.str.encode("hex")
    n = hexed.str.len_bytes() // 2
    byte = [hexed.str.slice(2 * i, 2).str.to_integer(base=16, strict=False) for i in range(4)]
    cont = [b.fill_null(0) % 64 for b in byte]
    cp = (
        pl.when(n == 1)
        .then(byte[0])
        .when(n == 2)
        .then((byte[0] % 32) * 64 + cont[1])
        .when(n == 3)
        .then((byte[0] % 16) * 4096 + cont[1] * 64 + cont[2])
        .otherwise((byte[0] % 8) * 262144 + cont[1] * 4096 + cont[2] * 64 + cont[3])
    )
    high = 0xD800 + (cp - 0x10000) // 1024
    low = 0xDC00 + (cp - 0x10000) % 1024
    return (
        pl.when(byte[0] < 0x7F)  # an ASCII run
        .then(c)
        .when(cp <= 0xFFFF)
        .then(_u_escape(cp))
        .otherwise(pl.concat_str(_u_escape(high), _u_escape(low)))
    )


def _u_escape(code: pl.Expr) -> pl.Expr:
    digits = pl.lit("0123456789abcdef")
    nibbles = [digits.str.slice((code // 16**k) % 16, 1) for k in (3, 2, 1, 0)]
    return pl.concat_str(pl.lit("\\u"), *nibbles)


# --- ClickHouse-style casts of a JSON_VALUE string --------------------------------------


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
    """A string cast the way the reference casts JSON values (``_ch_cast_json_value``)."""
    if to == "int":
        return Val(cast_int(text), Kind.INT)
    if to == "double":
        return Val(cast_float(text), Kind.FLOAT)
    if to == "bool":
        return Val(cast_bool(text), Kind.INT)
    return Val(text, Kind.STR)


def to_python_str(val: Val) -> pl.Expr:
    """``str()`` of a value as the reference's ``_ch_to_string`` prints it."""
    e = val.expr
    if val.kind is Kind.STR:
        return e
    if val.kind is Kind.INT:
        return e.cast(pl.String)
    if val.kind is Kind.FLOAT:
        return float_to_python(e)
    if val.kind is Kind.BOOL:
        return pl.when(e).then(pl.lit("true")).when(~e).then(pl.lit("false"))
    if val.kind is Kind.DATETIME:
        base = e.dt.strftime("%Y-%m-%d %H:%M:%S")
        micros = e.dt.strftime("%.6f")
        frac = pl.when(e.dt.microsecond() != 0).then(micros).otherwise(pl.lit(""))
        return pl.concat_str(base, frac, pl.lit("+00:00"))
    if val.kind is Kind.LIST:
        quoted = e.list.eval(pl.concat_str(pl.lit("'"), pl.element(), pl.lit("'")))
        return pl.concat_str(pl.lit("["), quoted.list.join(", "), pl.lit("]"))
    return pl.lit(None, pl.String)
