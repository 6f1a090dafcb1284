"""The query IR: plain, frozen data built by :mod:`engine.query.parse`, read by the compiler.

Every node keeps ``where``, the JSON path of its source, so later passes can say where a
problem is. Nodes mirror Weave's ``interface/query.py`` operations one to one, except that
the five comparisons share :class:`Compare`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal as TypingLiteral

Scalar = str | int | float | bool | None
CompareOp = TypingLiteral["eq", "gt", "gte", "lt", "lte"]
CastTo = TypingLiteral["double", "string", "int", "bool", "exists"]


@dataclass(frozen=True, slots=True)
class Node:
    """Base of every IR node."""


@dataclass(frozen=True, slots=True)
class Literal(Node):
    value: Scalar
    where: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class GetField(Node):
    name: str
    where: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Convert(Node):
    input: Node
    to: CastTo
    where: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Size(Node):
    input: Node
    where: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class And(Node):
    items: tuple[Node, ...]
    where: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Or(Node):
    items: tuple[Node, ...]
    where: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Not(Node):
    item: Node
    where: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Compare(Node):
    op: CompareOp
    left: Node
    right: Node
    where: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class In(Node):
    left: Node
    items: tuple[Node, ...]
    where: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Contains(Node):
    input: Node
    substr: Node
    case_insensitive: bool
    where: str = field(default="", compare=False, repr=False)
