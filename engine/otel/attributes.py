"""OTLP attribute lists -> the nested trees Weave reads spans from, with Weave's edge rules.

Weave expands dotted attribute keys into a tree (``llm.token_count.prompt`` becomes
``{"llm": {"token_count": {"prompt": ...}}}``), reads string values that look like JSON
objects or arrays as JSON, and rejects a span whose keys do not form a tree (``a`` and
``a.b`` both with a primitive). Lists and index keys meet the way Weave merges them: a list
under ``a`` and a key ``a.0.x`` merge by index. The lookups below read such trees by dotted
path the same way, including list indices.

Decoding attributes is per-value Python work at the edge (like parsing JSON); nothing here
touches frames.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

Tree = dict[str, Any]


class AttributeConflictError(ValueError):
    """Dotted keys that do not form a tree; Weave rejects the span."""


class EmptyValueError(ValueError):
    """An ``AnyValue`` with no value set; Weave fails on it."""


def any_value(value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (bytes stay bytes)."""
    kind = value.WhichOneof("value")
    if kind is None:
        raise EmptyValueError("an attribute value has no value set")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _indexed(items: list[Any]) -> Tree:
    return {str(i): v for i, v in enumerate(items)}


def _structured(value: Any) -> bool:
    return isinstance(value, dict | list)


def _merge_into(holder: Tree, key: str, value: Any) -> None:
    """Merge structured ``value`` into structured ``holder[key]``; lists merge by index."""
    base = holder[key]
    base = _indexed(base) if isinstance(base, list) else base
    incoming = _indexed(value) if isinstance(value, list) else value
    for k, v in incoming.items():
        if k in base and _structured(base[k]) and _structured(v):
            _merge_into(base, k, v)
        else:
            base[k] = v
    holder[key] = base


@lru_cache(maxsize=1024)
def _parts(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def root(path: str) -> str:
    """The first segment of a dotted path: a tree from :func:`expand` holds a value at
    ``path`` only if it has this top-level key (its keys never contain dots)."""
    return _parts(path)[0]


def lookup(tree: Any, path: str) -> Any:
    """The value at dotted ``path`` (a flat key first), or None; digits index lists.

    Examples
    --------
    >>> lookup({"a": [{"b": 1}]}, "a.0.b")
    1
    >>> lookup({"a.b": 2}, "a.b")
    2
    """
    if isinstance(tree, dict) and path in tree:
        return tree[path]
    node = tree
    for part in _parts(path):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit():
            index = int(part)
            node = node[index] if index < len(node) else None
        else:
            return None
    return node


def _conflict(path: str, detail: str) -> AttributeConflictError:
    return AttributeConflictError(
        f"attribute {path!r} {detail}; attribute keys must form a tree (send either "
        f"'{path}' or '{path}.*', not both)"
    )


def _check(tree: Tree, parts: list[str], value: Any) -> None:
    """Raise unless ``value`` can go at ``parts`` without turning a branch into a leaf."""
    node: Tree = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part, {})
        if isinstance(child, list) and parts[i + 1].isdigit():
            child = _indexed(child)
        elif not isinstance(child, dict):
            raise _conflict(".".join(parts[: i + 1]), "holds a value and also has sub-keys")
        node = child
    parent = lookup(tree, ".".join(parts[:-1])) if len(parts) > 1 else tree
    if isinstance(parent, dict) and _structured(parent.get(parts[-1])) and not _structured(value):
        raise _conflict(".".join(parts), "has sub-keys and also a value")


def _put(tree: Tree, key: str, value: Any) -> None:
    parts = key.split(".")
    _check(tree, parts, value)
    node = tree
    for part in parts[:-1]:
        if isinstance(node.get(part), list):
            node[part] = _indexed(node[part])
        node = node.setdefault(part, {})
    last = parts[-1]
    if _structured(node.get(last)) and _structured(value):
        _merge_into(node, last, value)
    else:
        node[last] = value


def expand(pairs: Iterable[tuple[str, Any]]) -> Tree:
    """A tree from flat ``(dotted key, value)`` pairs, in order; later duplicates win.

    Examples
    --------
    >>> expand([("llm.token_count.prompt", 3), ("input.value", '{"q": 1}')])
    {'llm': {'token_count': {'prompt': 3}}, 'input': {'value': {'q': 1}}}
    """
    tree: Tree = {}
    for key, value in pairs:
        _put(tree, key, _maybe_json(value))
    return tree


def expand_key_values(key_values: Iterable[KeyValue]) -> Tree:
    """:func:`expand` over OTLP ``KeyValue`` messages."""
    return expand((kv.key, any_value(kv.value)) for kv in key_values)


class _NotAList(Exception):
    """Index keys with a gap or a duplicate spelling: Weave's conversion gives up."""


def _as_list(node: Tree) -> Tree | list[Any]:
    for key, value in node.items():
        if isinstance(value, dict):
            node[key] = _as_list(value)
    try:
        indices = sorted(int(k) for k in node)
    except ValueError:
        return node
    if indices == list(range(len(indices))) and all(k.isdigit() for k in node):
        if any(str(i) not in node for i in indices):
            raise _NotAList
        return [node[str(i)] for i in indices]
    return node


def lists_from_index_keys(node: Tree) -> Tree | list[Any]:
    """Dicts keyed ``"0".."n-1"`` (below ``node``, and ``node`` itself) become lists.

    Nested dicts are converted in place, as Weave does to the values it extracts (the
    span's attribute tree shares them); when a level cannot be converted the work done so
    far stays and the rest is left as it is.

    Examples
    --------
    >>> lists_from_index_keys({"msgs": {"0": "a", "1": "b"}})
    {'msgs': ['a', 'b']}
    """
    try:
        return _as_list(node)
    except _NotAList:
        return node


def json_ready(value: Any) -> Any:
    """``value`` with bytes as base64 text and non-finite floats as text, as Weave stores
    them; tuples and sets become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_ready(v) for v in value]
    return value
