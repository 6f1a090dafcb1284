"""Op names and display names of OTel calls: Weave's length limits and placeholder op refs.

Weave stores an OTel call's op as a placeholder op object named after the span (its source
is a stub, so every such op has the same digest) and refers to it by ref. Over-long names
are cut at a delimiter (``,;| /?.``) rather than mid-word, as Weave does.
"""

from __future__ import annotations

import hashlib
import re

from engine.otel.conventions import MAX_OP_NAME

# Weave's digest of its placeholder op (stub source ``obj.py``): the same for every name
PLACEHOLDER_OP_DIGEST = "XNI9iHYwcffKfuDa2rGjQoIxUOw7cnWmLEiNufRD8RY"
_DELIMITERS = frozenset(",;| /?.")
_SPLIT = re.compile(r"([,;| /?.])")
_NOT_NAME = re.compile(r"[^\w._-]")


class UnstorableNameError(ValueError):
    """A name Weave cannot store (its server fails on it)."""


def shorten(name: str, limit: int, suffix: str = "...", keep_delimiter: bool = True) -> str:
    """``name`` cut to at most ``limit`` characters at a delimiter, ending in ``suffix``.

    With ``keep_delimiter`` the delimiter before the cut stays in front of ``suffix``
    (unless ``suffix`` starts with it).

    Examples
    --------
    >>> shorten("hello/world.txt", 10)
    'hello/...'
    >>> shorten("verylongword", 8)
    'veryl...'
    """
    if len(name) <= limit:
        return name
    room = limit - len(suffix)
    tokens = [t for t in _SPLIT.split(name) if t]
    if len(tokens) <= 1 or len(tokens[0]) > room:
        return tokens[0][:room] + suffix
    out, i = tokens[0], 1
    while i < len(tokens):
        run = ""
        while i < len(tokens) and tokens[i] in _DELIMITERS:
            run, i = run + tokens[i], i + 1
        if i == len(tokens):
            raise UnstorableNameError(
                f"name {name[:40]!r}... ends in delimiters and cannot be shortened"
            )
        piece = run + tokens[i]
        tail = suffix if suffix.startswith(run) or not keep_delimiter else run + suffix
        if len(out) + len(piece) >= limit - len(tail):
            return out + tail
        out, i = out + piece, i + 1
    return out


def op_name(span_name: str) -> str:
    """The call's op name: the span name, over-long ones cut and tagged with a hash."""
    if len(span_name) < MAX_OP_NAME:
        return span_name
    tag = ":" + hashlib.sha256(span_name.encode("utf-8")).hexdigest()[:4]
    return shorten(span_name, MAX_OP_NAME, suffix=tag, keep_delimiter=False)


def op_ref(project_id: str, name: str) -> str:
    """The ref of the placeholder op Weave creates for op ``name`` in ``project_id``.

    Examples
    --------
    >>> op_ref("acme/agents", "Chat GPT/4o")
    'weave:///acme/agents/op/chat_gpt_4o:XNI9iHYwcffKfuDa2rGjQoIxUOw7cnWmLEiNufRD8RY'
    """
    object_id = _NOT_NAME.sub("", name.replace(" ", "_").replace("/", "_")).lower()
    if not object_id or len(object_id) > MAX_OP_NAME or _NOT_NAME.search(object_id):
        raise UnstorableNameError(f"span name {name[:40]!r} makes no valid op name")
    return f"weave:///{project_id}/op/{object_id}:{PLACEHOLDER_OP_DIGEST}"
