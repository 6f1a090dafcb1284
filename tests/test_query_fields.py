"""JSON_VALUE renderings and ClickHouse-style casts, row by row against the reference's own
helpers (``_ch_json_value``, ``_ch_cast_json_value``, ``_ch_to_string``)."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest

from engine.errors import QueryTooComplexError, UnsupportedQueryError
from engine.query.casts import cast_text
from engine.query.fields import Ctx, json_value, split_path
from engine.query.render import to_python_str
from engine.query.values import Kind, Val
from tests.reference import weave_ref

ims = weave_ref.ims  # the reference's module, imported behind its stub

LONG = 62.670301432595004  # JSON readers without exact float parsing get this wrong

RENDER = [
    ({"a": 5}, "a"),
    ({"a": 5.0}, "a"),
    ({"a": -0.0}, "a"),
    ({"a": 1e3}, "a"),
    ({"a": 1.5}, "a"),
    ({"a": 0.1}, "a"),
    ({"a": 1e-4}, "a"),
    ({"a": 1e-5}, "a"),
    ({"a": 1.5e-5}, "a"),
    ({"a": 1e-7}, "a"),
    ({"a": 2.5e-300}, "a"),
    ({"a": 1e16}, "a"),
    ({"a": 1e20}, "a"),
    ({"a": 1e23}, "a"),
    ({"a": LONG}, "a"),
    ({"a": {"b": LONG}}, "a.b"),
    ({"a": 2**63 - 1}, "a"),
    ({"a": -(2**63)}, "a"),
    ({"a": 2**64 - 1}, "a"),
    ({"a": True}, "a"),
    ({"a": False}, "a"),
    ({"a": None}, "a"),
    ({}, "a"),
    ({"a": "x"}, "a.b"),  # through a string: missing
    ({"a": '{"b": 1}'}, "a.b"),  # JSON text inside a string is not walked
    ({"a": "5.0"}, "a"),
    ({"a": "é😀"}, "a"),
    ({"a": 'q"uote\\'}, "a"),
    ({"a": ""}, "a"),
    ({"a": [1, 2.0, "x", None, True]}, "a"),
    ({"a": {"é": "😀", "n": 1e-7, "m": 1e20, "s": "1e-7,"}}, "a"),
    ({"a": ["\x01\x1f\x7f\n\t\u2028"]}, "a"),
    ({"a": [0.00001, -0.00002, 10.00001]}, "a"),
    ({"a": {}}, "a"),
    ({"a": []}, "a"),
    ({"a": [10, 20]}, "a.1"),
    ({"a": [10, 20]}, "a.2"),
    ({"a": [10, 20]}, "a.-1"),
    ({"a": [10, 20]}, "a. 1"),  # int(" 1") == 1
    ({"a": [10, 20]}, "a.+1"),
    ({"a": {"1": "key"}}, "a.1"),
    ({"a": {" 1": "key"}}, "a. 1"),
    ({"a": [[1, [2, 3]]]}, "a.0.1.0"),
    ({"k.d": {"x-y": "v"}}, "k\\.d.x-y"),
    ({"it's": "q"}, "it's"),
    ({"": "empty key"}, ""),
    ({"a]b": 1}, "a]b"),
    ({"$": 1, "*": 2.5}, "*"),
    ({"^a$": 2.5, "a": 1}, "^a$"),
    ({"é": 3}, "é"),
    ({"a": 1}, None),  # the whole column
]


@pytest.mark.parametrize(("doc", "path"), RENDER)
def test_json_value_renders_as_reference(doc: Any, path: str | None) -> None:
    parts = split_path(path) if path is not None else []
    ctx = Ctx()
    frame = pl.LazyFrame({"inputs": [json.dumps(doc)]})
    expr = json_value("inputs", parts, ctx, "")
    got = ctx.apply(frame).select(expr).collect().item()
    assert got == ims._ch_json_value(doc, parts)


@pytest.mark.parametrize("doc", [5, 5.0, "text", [1, {"a": "é"}], None, True])
def test_non_object_documents(doc: Any) -> None:
    ctx = Ctx()
    frame = pl.LazyFrame(
        {"output": [None if doc is None else json.dumps(doc)]}, {"output": pl.String}
    )
    for parts in ([], ["a"], ["0"], ["1", "a"]):
        expr = json_value("output", parts, ctx, "")
        out = ctx.apply(frame).select(expr).collect().item()
        assert out == ims._ch_json_value(doc, parts), parts


def test_each_path_is_extracted_once() -> None:
    ctx = Ctx()
    json_value("inputs", ["a", "b"], ctx, "")
    once = len(ctx.names)
    for _ in range(2):
        json_value("inputs", ["a", "b"], ctx, "")
    assert len(ctx.names) == once
    json_value("inputs", ["a"], ctx, "")
    assert once < len(ctx.names) <= 2 * once


def test_path_limits() -> None:
    with pytest.raises(UnsupportedQueryError):
        json_value("inputs", ["a\\b"], Ctx(), "")
    with pytest.raises(QueryTooComplexError):
        json_value("inputs", [str(i) for i in range(7)], Ctx(), "")


TEXTS = [
    "5",
    " 7 ",
    "\t-3\n",
    "+5",
    "007",
    "1_000",
    "1__0",
    "_1",
    "1.5",
    " 1.5e3 ",
    ".5",
    "5.",
    "1e",
    "inf",
    "-Infinity",
    "nan",
    "NaN",
    "true",
    "false",
    "255",
    "256",
    "-1",
    "",
    "abc",
    "0x10",
    "9223372036854775807",
    "\x1c5\x1f",
    "1e400",
]


@pytest.mark.parametrize("to", ["int", "double", "bool", "string"])
def test_casts_match_reference(to: str) -> None:
    val = cast_text(pl.lit(pl.Series(TEXTS)), to)
    got = pl.select(val.expr).to_series().to_list()
    want = [ims._ch_cast_json_value(t, to) for t in TEXTS]
    for text, g, w in zip(TEXTS, got, want, strict=True):
        if isinstance(w, float) and w != w:
            assert g != g, text
        else:
            assert g == w, text


TO_STRING = [
    (Kind.INT, pl.Int64, [3, -7, None]),
    (Kind.FLOAT, pl.Float64, [5.0, 1.5, 1e-7, 1e20, 1e23, float("inf"), -0.0, None]),
    (Kind.BOOL, pl.Boolean, [True, False, None]),
]


@pytest.mark.parametrize(("kind", "dtype", "values"), TO_STRING)
def test_to_python_str(kind: Kind, dtype: pl.DataType, values: list) -> None:
    series = pl.Series("v", values, dtype=dtype)
    got = pl.select(to_python_str(Val(pl.lit(series), kind))).to_series().to_list()
    assert got == [ims._ch_to_string(v) for v in values]


@pytest.mark.parametrize(
    ("text", "want"),
    [('{"a": 5, "a": 6}', "6"), ('{"a": 62.670301432595004, "a": 6}', "6")],
)
def test_duplicate_keys_read_the_last_value(text: str, want: str) -> None:
    # as Python's json.loads does; such text only comes from hand-written JSON
    ctx = Ctx()
    expr = json_value("inputs", ["a"], ctx, "")
    assert ctx.apply(pl.LazyFrame({"inputs": [text]})).select(expr).collect().item() == want
