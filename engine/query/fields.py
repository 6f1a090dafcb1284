"""``$getField`` -> typed Polars expressions, and the per-request context that holds them.

A :class:`Fields` resolver says what a field name means in one table: :data:`CALL_FIELDS`
reads Weave's call columns (JSON paths into ``inputs``/``output``/``attributes``/
``summary``, ``summary.weave.*``), :class:`TableFields` reads a table of plain typed columns
(price rows). The compiler only talks to the resolver, so one compiler serves both.

Values used more than once are bound to helper columns (:meth:`Ctx.bind`), each distinct
(column, path) is extracted once per request, and :meth:`Ctx.charge` keeps the total
compiled size under :data:`MAX_COMPILED`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import polars as pl

from engine import schema as s
from engine.errors import QueryParseError, QueryTooComplexError, UnsupportedQueryError
from engine.query.casts import cast_int
from engine.query.render import json_text
from engine.query.values import Kind, Val, kind_of

MAX_PATH_PARTS = 20
"""Most dot-separated parts a ``$getField`` path into a JSON column may have."""
MAX_JSON_READS = 64
"""Most JSON readings a query may make: one per distinct path, two for each numeric part
(a key or a list index), each parsing every row's document."""
MAX_COMPILED = 8_000
"""Most units a compiled query may cost: one per IR node (a ``$in`` list of literals counts
once, as it compiles to one ``is_in``), plus each JSON reading's length."""
_MAX_INDEX_PARTS = 6


class Fields(Protocol):
    """What ``$getField`` names mean in one table."""

    def resolve(self, name: str, ctx: Ctx, where: str) -> Val:
        """The field's value; raises a :class:`~engine.errors.QueryError` for unknown ones."""
        ...

    def is_json(self, name: str) -> bool:
        """True for a dynamic (JSON) field, which takes a cast from a compared literal."""
        ...

    def is_datetime(self, name: str) -> bool:
        """True for a datetime column, against which literals read as dates."""
        ...

    @property
    def orm_literals(self) -> bool:
        """True where the reference queries through its ORM layer (price rows): boolean
        literals read as 0/1, and a number as ``$contains`` substring is an error."""
        ...


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


class CallFields:
    """Weave's call fields, as the reference's ``_compile_calls_field`` reads them."""

    def is_json(self, name: str) -> bool:
        if name.startswith(_WEAVE_PREFIX):
            return False
        return any(name == c or name.startswith(c + ".") for c in JSON_FIELDS)

    def is_datetime(self, name: str) -> bool:
        return name in DATETIME_FIELDS

    @property
    def orm_literals(self) -> bool:
        return False

    def resolve(self, name: str, ctx: Ctx, where: str) -> Val:
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


CALL_FIELDS = CallFields()


@dataclass(frozen=True)
class TableFields:
    """A table of plain typed columns: a field is a column name, its kind from its dtype.
    Read as the reference's ORM layer reads its tables (:attr:`Fields.orm_literals`).

    >>> TableFields.of({"llm_id": pl.String()}).resolve("llm_id", Ctx(), "").kind
    <Kind.STR: 'str'>
    """

    kinds: Mapping[str, Kind]

    @classmethod
    def of(cls, schema: Mapping[str, pl.DataType]) -> TableFields:
        """The fields of a frame with this schema."""
        return cls({name: kind_of(dtype) for name, dtype in schema.items()})

    def is_json(self, name: str) -> bool:
        return False

    def is_datetime(self, name: str) -> bool:
        return self.kinds.get(name) is Kind.DATETIME

    @property
    def orm_literals(self) -> bool:
        return True

    def resolve(self, name: str, ctx: Ctx, where: str) -> Val:
        kind = self.kinds.get(name)
        if kind is None:
            raise QueryParseError(f"Unknown field: {name}", path=where)
        return Val(pl.col(name), kind)


@dataclass
class Ctx:
    """One request's compile state: the table's fields and the helper columns built so far.

    Helper columns go in stages, each after the stages of the helpers it reads; the
    caller adds them before filtering (:meth:`apply`) and drops :attr:`names` after.
    """

    fields: Fields = CALL_FIELDS
    stages: list[dict[str, pl.Expr]] = field(default_factory=list)
    size: int = 0
    json_reads: int = 0
    _keys: dict[tuple, str] = field(default_factory=dict)
    _stage_of: dict[str, int] = field(default_factory=dict)

    def helper(self, key: tuple, build: Callable[[], pl.Expr]) -> pl.Expr:
        """The helper column for ``key``, built on first use."""
        name = self._keys.get(key)
        if name is None:
            name = self._keys[key] = self._add(build())
        return pl.col(name)

    def bind(self, expr: pl.Expr) -> pl.Expr:
        """``expr`` as a helper column, so a rule that reads a value twice does not copy
        its whole expression (nested copies would double at every level)."""
        if expr.meta.is_column() or expr.meta.is_literal():
            return expr
        return pl.col(self._add(expr))

    def bound(self, val: Val) -> Val:
        """``val`` with its expression bound (:meth:`bind`)."""
        return Val(self.bind(val.expr), val.kind)

    def charge(self, units: int, where: str) -> None:
        """Count ``units`` of compiled size; past :data:`MAX_COMPILED` the query is refused."""
        self.size += units
        if self.size > MAX_COMPILED:
            raise QueryTooComplexError(
                f"query compiles to more than {MAX_COMPILED} units "
                "(operators, and JSON path alternatives times their length)",
                path=where,
            )

    @property
    def names(self) -> list[str]:
        return list(self._stage_of)

    def apply(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """``frame`` with every helper column, stage by stage."""
        for stage in self.stages:
            frame = frame.with_columns(*stage.values())
        return frame

    def _add(self, expr: pl.Expr) -> str:
        name = f"__q{len(self._stage_of)}"
        reads = [self._stage_of[n] for n in expr.meta.root_names() if n in self._stage_of]
        stage = max(reads, default=-1) + 1
        if stage == len(self.stages):
            self.stages.append({})
        self.stages[stage][name] = expr.alias(name)
        self._stage_of[name] = stage
        return name


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


# --- JSON paths ---------------------------------------------------------------------------


def json_value(column: str, parts: list[str], ctx: Ctx, where: str) -> pl.Expr:
    """``JSON_VALUE`` of ``column`` at ``parts`` as the reference renders it (never null)."""

    def build() -> pl.Expr:
        combos = _combos(_steps(parts, where))
        ctx.json_reads += len(combos)
        if ctx.json_reads > MAX_JSON_READS:
            raise QueryTooComplexError(
                f"query reads more than {MAX_JSON_READS} JSON paths (a numeric part counts "
                "twice: as a key and as a list index)",
                path=where,
            )
        ctx.charge(len(combos) * (len(parts) + 1), where)
        return _extract(column, combos, ctx)

    return ctx.helper(("json", column, tuple(parts)), build)


def _steps(parts: list[str], where: str) -> list[list[str | int]]:
    """Each path's alternatives: a key always, a list index when ``int()`` reads one."""
    if len(parts) > MAX_PATH_PARTS:
        raise QueryTooComplexError(
            f"a field path may have at most {MAX_PATH_PARTS} parts, got {len(parts)}",
            path=where,
        )
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


def _extract(column: str, combos: list[tuple[str | int, ...]], ctx: Ctx) -> pl.Expr:
    """The rendered text at the first alternative path that exists."""
    doc = pl.col(column)
    matches, strings, exact = [], [], []
    for combo in combos:
        path = _jsonpath(combo)
        m = ctx.helper(("m", column, combo), partial(doc.str.json_path_match, path))
        matches.append(m)
        only_text = partial(doc.str.json_path_match, path + "[?(@ >= '')]")
        strings.append(ctx.helper(("s", column, combo), only_text))
        if not any(isinstance(step, int) for step in combo):
            exact.append(ctx.helper(("n", column, combo), partial(_exact, doc, combo, m)))
    match = ctx.bind(pl.coalesce(matches))
    is_string = pl.coalesce(strings).is_not_null()
    return json_text(match, is_string, pl.coalesce([*exact, match]), ctx.bind)


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
