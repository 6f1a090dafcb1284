"""Values rendered as text the way the reference prints them.

``JSON_VALUE`` text (``_ch_json_value``): missing and null read as ``''``, strings unquoted,
booleans ``true``/``false``, numbers as Python prints them with integral floats losing
``.0``, objects and arrays as ``json.dumps`` minified text (non-ASCII escaped). And
``_ch_to_string``, the ``str()`` of a typed operand that ``$convert`` casts from.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from engine.query.values import Kind, Val

Bind = Callable[[pl.Expr], pl.Expr]


def json_text(
    match: pl.Expr, is_string: pl.Expr, number: pl.Expr, bind: Bind = lambda e: e
) -> pl.Expr:
    """A JSON value as ``_ch_json_value`` prints it (never null).

    ``match`` is the value's JSON text (null when the path is missing), ``is_string`` says
    it was a JSON string, and ``number`` is the exact text of a numeric leaf. ``bind``
    turns an intermediate text that later steps read several times into a column
    (:meth:`~engine.query.fields.Ctx.bind`).
    """
    m = match
    return (
        pl.when(m.is_null())
        .then(pl.lit(""))
        .when(is_string)
        .then(m)
        .when(m.str.starts_with("{") | m.str.starts_with("["))
        .then(_python_json(m, bind))
        .when(m.is_in(["true", "false"]))
        .then(m)
        .otherwise(_python_number(number, m))
    )


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

    >>> pl.select(float_to_python(pl.lit(pl.Series([5.0, 1.5e-5])))).to_series().to_list()
    ['5', '1.5e-05']
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


def _python_json(text: pl.Expr, bind: Bind) -> pl.Expr:
    """serde's minified JSON -> ``json.dumps(v, separators=(",", ":"))``.

    Numbers outside strings are re-formatted (a marker after each skipped string is
    removed again) and characters from DEL up are escaped as ``\\uXXXX``. Each fix runs
    only on the rows that may need it.
    """
    small_exp = bind(
        _only_where(
            text,
            "e-",
            lambda t: (
                t.str.replace_all(f"({_JSON_STRING})|e-(\\d)([^\\d])", "${1}\x01e-${2}${3}")
                .str.replace_all('"\x01e-', '"', literal=True)
                .str.replace_all("\x01e-", "e-0", literal=True)
            ),
        )
    )
    fixed = bind(
        _only_where(
            small_exp,
            "0.0000",
            lambda t: (
                t.str.replace_all(
                    f"({_JSON_STRING})|([,:\\[]-?)0\\.0000(\\d)(\\d*)",
                    "${1}\x01${2}\x02${3}.${4}e-05",
                )
                .str.replace_all('"\x01\x02.e-05', '"', literal=True)
                .str.replace_all("\x01([^\x02]*)\x02(\\d)\\.e-05", "${1}${2}e-05")
                .str.replace_all("\x01([^\x02]*)\x02", "${1}")
            ),
        )
    )
    # ASCII runs stay whole; each wider character becomes one token to escape. Two passes
    # (code point, then escape) so that no pass repeats another's expression.
    wide = pl.when(fixed.str.contains("[^\x00-\x7e]")).then(fixed)
    tokens = wide.str.extract_all("[\x00-\x7e]+|[^\x00-\x7e]")
    coded = tokens.list.eval(pl.struct(text=pl.element(), code=_code_point(pl.element())))
    escaped = coded.list.eval(_escape_token(pl.element())).list.join("")
    return pl.coalesce(escaped, fixed)


def _only_where(text: pl.Expr, needle: str, fix: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """``fix(text)`` on rows containing ``needle``, the others as they are."""
    return pl.coalesce(fix(pl.when(text.str.contains(needle, literal=True)).then(text)), text)


def _code_point(c: pl.Expr) -> pl.Expr:
    """The code point of a one-character token (UTF-8 decoded); -1 for a run below DEL."""
    hexed = c.str.encode("hex")
    n = hexed.str.len_bytes() // 2
    byte = [hexed.str.slice(2 * i, 2).str.to_integer(base=16, strict=False) for i in range(4)]
    cont = [b.fill_null(0) % 64 for b in byte]
    return (
        pl.when(byte[0] < 0x7F)
        .then(pl.lit(-1, pl.Int64))
        .when(n == 1)
        .then(byte[0])
        .when(n == 2)
        .then((byte[0] % 32) * 64 + cont[1])
        .when(n == 3)
        .then((byte[0] % 16) * 4096 + cont[1] * 64 + cont[2])
        .otherwise((byte[0] % 8) * 262144 + cont[1] * 4096 + cont[2] * 64 + cont[3])
    )


def _escape_token(token: pl.Expr) -> pl.Expr:
    """A ``{text, code}`` token -> its text when ASCII, else its ``\\uXXXX`` (UTF-16) escape."""
    cp = token.struct.field("code")
    high = 0xD800 + (cp - 0x10000) // 1024
    low = 0xDC00 + (cp - 0x10000) % 1024
    return (
        pl.when(cp < 0)
        .then(token.struct.field("text"))
        .when(cp <= 0xFFFF)
        .then(_u_escape(cp))
        .otherwise(pl.concat_str(_u_escape(high), _u_escape(low)))
    )


def _u_escape(code: pl.Expr) -> pl.Expr:
    digits = pl.lit("0123456789abcdef")
    nibbles = [digits.str.slice((code // 16**k) % 16, 1) for k in (3, 2, 1, 0)]
    return pl.concat_str(pl.lit("\\u"), *nibbles)


def to_python_str(val: Val) -> pl.Expr:
    """``str()`` of a value as the reference's ``_ch_to_string`` prints it.

    ``val.expr`` is read several times: pass a column (:meth:`Ctx.bind`), not a nested
    operand.
    """
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
