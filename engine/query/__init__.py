"""The ``$expr`` query language: parse to an IR, compile to one Polars predicate."""

from __future__ import annotations

from engine.query.ast import Node
from engine.query.compile import compile_predicate
from engine.query.fields import Ctx
from engine.query.parse import MAX_DEPTH, MAX_NODES, parse_query

__all__ = ["MAX_DEPTH", "MAX_NODES", "Ctx", "Node", "compile_predicate", "parse_query"]
