"""Request bodies of the big-batch routes: parsed and validated without holding the server.

A 30 MB ``upsert_batch`` validated in one pydantic call (or parsed in one ``orjson``
call) holds the GIL, and so the event loop, for as long as the call runs, even from a
worker thread: ``/health`` stalled for seconds. So a big body is split into its list items
(``batch``) as it is parsed, and the items are validated a chunk at a time, each raw chunk
let go once validated; the cyclic GC, whose full passes over millions of fresh objects
held the GIL for seconds too, waits until the request is done; and the items are freed one
by one at the end.
"""

from __future__ import annotations

import functools
import gc
import json
import re
import threading
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
CHUNK_ITEMS = 256  # list items validated per pydantic call
SPLIT_BYTES = 1 << 20  # bodies from this size are parsed item by item
_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _GcPause:
    """Cyclic GC off while any holder is inside; reference counting frees as usual."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = True

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._was_enabled:
                    gc.enable()


_GC_PAUSE = _GcPause()


@contextmanager
def gc_paused(size: int) -> Iterator[None]:
    """The cyclic GC paused while a body of ``size`` bytes (if big) is handled."""
    if size < SPLIT_BYTES:
        yield
        return
    with _GC_PAUSE.held():
        yield


def _surrogate_at(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where the first string (key or value) holding a lone surrogate is, if any."""
    if isinstance(value, str):
        return None if _encodes(value) else path
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and not _encodes(key):
            return (*path, key)
        found = _surrogate_at(item, (*path, key))
        if found is not None:
            return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _malformed(raw: bytes, err: json.JSONDecodeError) -> RequestValidationError:
    """The 422 of an unreadable body; a lone surrogate, which the parser refuses without
    saying where, is looked for again (only then) to name its field."""
    try:
        path = _surrogate_at(json.loads(raw))
    except (ValueError, RecursionError):
        path = None
    if path is not None:
        msg = "Value error, a lone surrogate is not valid text"
        return RequestValidationError([{"type": "value_error", "loc": ("body", *path), "msg": msg}])
    detail = f"{err.msg} at line {err.lineno} column {err.colno}"
    return RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": detail,
                                    "ctx": {"error": detail}}])  # fmt: skip


def _list_fields(model: type[BaseModel]) -> dict[str, Any]:
    """``{wire name: annotation}`` of the model's list fields."""
    return {
        field.alias or name: field.annotation
        for name, field in model.model_fields.items()
        if typing.get_origin(field.annotation) is list
    }


def _expect(text: str, at: int, chars: str) -> tuple[str, int]:
    at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
    if at >= len(text) or text[at] not in chars:
        raise json.JSONDecodeError(f"Expecting one of {chars!r}", text, at)
    return text[at], _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]


def _split(text: str, lists: set[str]) -> Any:
    """The JSON object ``text``, its ``lists`` members parsed item by item (a C call per
    item, so the GIL is let go in between)."""
    _, at = _expect(text, 0, "{")
    data: dict[str, Any] = {}
    if text.startswith("}", at):
        at += 1
    else:
        while True:
            if not text.startswith('"', at):
                raise json.JSONDecodeError("Expecting property name", text, at)
            key, at = _DECODER.raw_decode(text, at)
            _, at = _expect(text, at, ":")
            if key in lists and text.startswith("[", at):
                data[key], at = _items(text, at + 1)
            else:
                data[key], at = _DECODER.raw_decode(text, at)
            sep, at = _expect(text, at, ",}")
            if sep == "}":
                break
    if _SPACE.match(text, at).end() != len(text):  # type: ignore[union-attr]
        raise json.JSONDecodeError("Extra data", text, at)
    return data


def _items(text: str, at: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
    if text.startswith("]", at):
        return items, at + 1
    while True:
        item, at = _DECODER.raw_decode(text, at)
        items.append(item)
        sep, at = _expect(text, at, ",]")
        if sep == "]":
            return items, at


def _parse(raw: bytes, lists: set[str]) -> Any:
    """``raw`` as JSON. A big body free of surrogate escapes is split into list items."""
    # only a \uD800-\uDFFF escape can make a lone surrogate out of valid UTF-8; orjson
    # refuses those (and json would let them through)
    if len(raw) < SPLIT_BYTES or not lists or b"\\ud" in raw or b"\\uD" in raw:
        return orjson.loads(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return orjson.loads(raw)  # raises, saying where
    try:
        return _split(text, lists)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def _validate_lists(model: type[BaseModel], data: dict[str, Any]) -> list[Any]:
    """Validate ``data``'s list fields in place, :data:`CHUNK_ITEMS` items per call, each
    raw chunk let go once validated. Returns the errors, located."""
    errors: list[Any] = []
    for key, annotation in _list_fields(model).items():
        items = data.get(key)
        if not isinstance(items, list):
            continue
        adapter, done = _adapter(annotation), []
        for start in range(0, len(items), CHUNK_ITEMS):
            chunk = items[start : start + CHUNK_ITEMS]
            items[start : start + CHUNK_ITEMS] = [None] * len(chunk)
            try:
                done.extend(adapter.validate_python(chunk))
            except ValidationError as err:
                errors += [
                    {**e, "loc": ("body", key, start + e["loc"][0], *e["loc"][1:])}
                    for e in err.errors(include_url=False, include_input=False)
                ]
        data[key] = done
    return errors


def drained(items: list[T]) -> Iterator[T]:
    """``items`` in order, each let go as it is handed out (emptying the list), so a
    route turning a batch into rows does not hold both whole at once.

    Examples
    --------
    >>> batch = [1, 2, 3]
    >>> list(drained(batch)), batch
    ([1, 2, 3], [])
    """
    items.reverse()
    while items:
        yield items.pop()


def release(model: BaseModel) -> None:
    """Let go of a big body's list items one at a time: freeing millions of objects in
    one go holds the GIL for as long (a second for 30 MB), wherever it happens."""
    for key in _list_fields(type(model)):
        items = getattr(model, key, None)
        while items:
            items.pop()


def validate_json(model: type[M], raw: bytes) -> M:
    """``raw`` parsed once and validated as ``model``, or a ``RequestValidationError``.

    Examples
    --------
    >>> from service.wire import CallsDeleteReq
    >>> validate_json(CallsDeleteReq, b'{"project_id": "e/p", "call_ids": ["a"]}').call_ids
    ['a']
    """
    try:
        data = _parse(raw, set(_list_fields(model)))
    except json.JSONDecodeError as err:
        raise _malformed(raw, err) from None
    errors = _validate_lists(model, data) if isinstance(data, dict) else []
    if errors:
        raise RequestValidationError(errors)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        located = err.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in located]) from None
