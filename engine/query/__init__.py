"""The ``$expr`` query language: parse to an IR, compile to one Polars predicate."""

from __future__ import annotations

from engine.query.ast import Node
from engine.query.compile import compile_predicate
from engine.query.fields import (
    CALL_FIELDS,
    MAX_COMPILED,
    MAX_JSON_READS,
    MAX_PATH_PARTS,
    Ctx,
    TableFields,
)
from engine.query.parse import MAX_DEPTH, MAX_NODES, parse_query

__all__ = [
    "CALL_FIELDS",
    "MAX_COMPILED",
    "MAX_DEPTH",
    "MAX_JSON_READS",
    "MAX_NODES",
    "MAX_PATH_PARTS",
    "Ctx",
    "Node",
    "TableFields",
    "compile_predicate",
    "parse_query",
]
