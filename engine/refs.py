"""Refs inside call inputs and outputs, found as weave 0.53.12 finds them
(``extract_refs_from_values``), for the store to fill ``input_refs``/``output_refs``.

A string is a ref when it starts with a ref scheme and reads back to itself exactly: the
reference parses it and keeps it only if the parsed ref prints the same URI. Internal refs
(``weave-trace-internal:///<project>/...``, ``wandb-artifact:///...``) are read as the
reference reads them; public refs (``weave:///<entity>/<project>/...``), which the reference
never stores, follow the same rules with ``entity/project`` as the project.

Ingest-time helper: it walks Python values, not frames.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

INTERNAL = "weave-trace-internal:///"
PUBLIC = "weave:///"
ARTIFACT = "wandb-artifact:///"
_EDGES = {"key", "index", "attr", "id"}


def extract_refs(values: Any) -> list[str]:
    """Distinct refs in ``values`` (dicts and lists walked in order), first seen first.

    Examples
    --------
    >>> extract_refs([{"m": "weave:///e/p/object/model:v1"}, "weave:///e/p/op/f:v2", "x"])
    ['weave:///e/p/object/model:v1', 'weave:///e/p/op/f:v2']
    """
    seen: dict[str, None] = {}
    stack = [values]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend(reversed(value))
        elif isinstance(value, str) and is_ref(value):
            seen[value] = None
    return list(seen)


def input_refs(inputs: dict[str, Any] | None) -> list[str]:
    """Refs of a call's inputs (the values of its inputs dict)."""
    return extract_refs(list((inputs or {}).values()))


def output_refs(output: Any) -> list[str]:
    """Refs of a call's output (the values of a dict output, else the output itself)."""
    return extract_refs(list(output.values()) if isinstance(output, dict) else [output])


def is_ref(text: str) -> bool:
    """True when ``text`` is a ref the reference would keep."""
    if text.startswith(ARTIFACT):
        parts = text[len(ARTIFACT) :].split("/")
        return len(parts) == 3
    if text.startswith(INTERNAL):
        parts = text[len(INTERNAL) :].split("/")
        return len(parts) >= 2 and _valid_tail(parts[1], parts[2:])
    if text.startswith(PUBLIC):
        parts = text[len(PUBLIC) :].split("/")
        return len(parts) >= 3 and _valid_tail(parts[2], parts[3:])
    return False


def _valid_tail(kind: str, rest: list[str]) -> bool:
    """Whether ``<kind>/<rest>`` parses and prints back unchanged."""
    if kind in ("table", "call", "agent_turn", "agent_span"):
        return len(rest) == 1
    if kind == "agent_conversation":
        return len(rest) == 1 and _roundtrips(rest[0])
    if kind in ("object", "op"):
        return bool(rest) and rest[0].count(":") == 1 and _valid_extra(rest[1:])
    return False


def _valid_extra(extra: list[str]) -> bool:
    if len(extra) % 2 or not all(_roundtrips(e) for e in extra):
        return False
    for name, value in zip(extra[::2], extra[1::2], strict=True):
        if unquote(name) not in _EDGES:
            return False
        if name == "index":
            try:
                int(unquote(value))
            except ValueError:
                return False
    return True


def _roundtrips(part: str) -> bool:
    return quote(unquote(part), safe="") == part
