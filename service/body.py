"""Request bodies of the big-batch routes: parsed, validated and used a slice at a time.

A 30 MB ``upsert_batch`` parsed whole, validated whole and turned into rows whole was held
as Python objects several times over (about 45x the body's size in memory), and one
pydantic or ``orjson`` call over all of it holds the GIL, and so the event loop, for as
long as it runs, even from a worker thread. So a big body is read member by member
through a window of its decoded text, its list items one C call each (the GIL is let go
in between), and :class:`BodyStream` hands a route the items validated
:data:`CHUNK_ITEMS` at a time: the route turns each chunk into columns and drops it, so
nothing holds the whole request as Python objects. The cyclic GC, whose full passes over
millions of fresh objects held the GIL for seconds too, waits until the request is done.
"""

from __future__ import annotations

import codecs
import functools
import gc
import json
import re
import threading
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

from engine.models import active_unknown_fields

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")
CHUNK_ITEMS = 256  # list items validated per pydantic call, and handed to a route at once
SPLIT_BYTES = 1 << 20  # bodies from this size are parsed item by item
WINDOW_BYTES = 1 << 20  # decoded text a big body is read through
_SPACE = re.compile(r"[ \t\n\r]*")
_ESCAPE = re.compile(rb"\\u[dD]")
_NUMBER_TAIL = re.compile(r"[0-9eE.+-]*")
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


def _surrogate_error(path: tuple[str | int, ...]) -> RequestValidationError:
    msg = "Value error, a lone surrogate is not valid text"
    return RequestValidationError([{"type": "value_error", "loc": ("body", *path), "msg": msg}])


def _refuse_surrogates(value: Any, path: tuple[str | int, ...]) -> None:
    """The 422 of ``value`` (at ``path``) if it holds a lone surrogate, as the parser of a
    whole body (``orjson``) would refuse it."""
    found = _surrogate_at(value, path)
    if found is not None:
        raise _surrogate_error(found)


def _unknown_paths(key: str, start: int, items: list[Any]) -> list[str]:
    """The unknown fields of validated list items, as the whole model names them."""
    return [
        f"{key}[{i}].{field}"
        for i, item in enumerate(items, start)
        for field in getattr(item, "_unknown_fields", ())
    ]


def _malformed(raw: bytes, err: json.JSONDecodeError) -> RequestValidationError:
    """The 422 of an unreadable body; a lone surrogate, which the parser refuses without
    saying where, is looked for again (only then) to name its field."""
    try:
        path = _surrogate_at(json.loads(raw))
    except (ValueError, RecursionError):
        path = None
    if path is not None:
        return _surrogate_error(path)
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


class _Scanner:
    """A big JSON object read member by member through a window of its decoded text: what
    has been read is let go, so the body is never held whole as ``str``. Errors carry the
    line and column in the whole body."""

    def __init__(self, raw: bytes) -> None:
        self._raw, self._read = raw, 0
        self._decode = codecs.getincrementaldecoder("utf-8")().decode
        self.text, self.at = "", 0
        self._gone = self._gone_lines = self._line_start = 0  # the text let go
        # a \uD800-\uDFFF escape read so far: only one can make a lone surrogate out of
        # valid UTF-8 (looked for a window at a time: a search of the whole body in one
        # call would hold the GIL for tens of ms)
        self.escapes = False

    def _more(self) -> bool:
        """Decode more of the body into the window (doubling it for a long value)."""
        if self._read >= len(self._raw):
            return False
        size, start = max(WINDOW_BYTES, len(self.text)), self._read
        piece = self._raw[start : start + size]
        self._read += len(piece)
        if not self.escapes:
            self.escapes = _ESCAPE.search(self._raw, max(0, start - 2), self._read) is not None
        try:
            self.text += self._decode(piece, final=self._read >= len(self._raw))
        except UnicodeDecodeError:
            orjson.loads(self._raw)  # raises, saying where
            raise
        return True

    def _let_go(self) -> None:
        if self.at < WINDOW_BYTES:
            return
        lines = self.text.count("\n", 0, self.at)
        if lines:
            self._gone_lines += lines
            self._line_start = self._gone + self.text.rindex("\n", 0, self.at) + 1
        self._gone += self.at
        self.text, self.at = self.text[self.at :], 0

    def error(self, msg: str, at: int | None = None) -> json.JSONDecodeError:
        """``msg`` at ``at`` (the window's), located in the whole body."""
        at = self.at if at is None else at
        err = json.JSONDecodeError(msg, self.text, at)
        if err.lineno == 1:
            err.colno = self._gone + at - self._line_start + 1
        err.lineno += self._gone_lines
        err.pos = self._gone + at
        return err

    def space(self) -> None:
        while True:
            self.at = _SPACE.match(self.text, self.at).end()  # type: ignore[union-attr]
            if self.at < len(self.text) or not self._more():
                return

    def peek(self, char: str) -> bool:
        self.space()
        return self.text.startswith(char, self.at)

    def expect(self, chars: str) -> str:
        self.space()
        if self.at >= len(self.text) or self.text[self.at] not in chars:
            raise self.error(f"Expecting one of {chars!r}")
        self.at += 1
        return self.text[self.at - 1]

    def value(self) -> Any:
        """The next JSON value: one C call, again with more text if the window cut it."""
        self.space()
        self._let_go()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.at)
            except json.JSONDecodeError as err:
                if self._more():
                    continue
                raise self.error(err.msg, err.pos) from None
            except RecursionError:
                raise json.JSONDecodeError("nested too deeply", "", 0) from None
            if not self._cut_short(value, end) or not self._more():
                self.at = end
                return value

    def _cut_short(self, value: Any, end: int) -> bool:
        """Whether ``value`` is a number that the window's edge may have cut (``12`` of
        ``123``, ``1.5`` of ``1.5e3``); any other value ends with its own last character."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        return _NUMBER_TAIL.match(self.text, end).end() == len(self.text)  # type: ignore[union-attr]

    def members(self, lists: typing.Collection[str]) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` of the object's members; the value of a ``lists`` member that
        is an array is an iterator over its items, read as it is consumed."""
        self.expect("{")
        if self.peek("}"):
            self.at += 1
        else:
            while True:
                if not self.peek('"'):
                    raise self.error("Expecting property name")
                key = self.value()
                self.expect(":")
                if key in lists and self.peek("["):
                    self.at += 1
                    items = self._items()
                    yield key, items
                    for _ in items:  # whatever the consumer left
                        pass
                else:
                    yield key, self.value()
                if self.expect(",}") == "}":
                    break
        self.space()
        if self.at != len(self.text):
            raise self.error("Extra data")

    def _items(self) -> Iterator[Any]:
        if self.peek("]"):
            self.at += 1
            return
        while True:
            yield self.value()
            if self.expect(",]") == "]":
                return


def _parsed_members(
    data: dict[str, Any], lists: typing.Collection[str]
) -> Iterator[tuple[str, Any]]:
    """:meth:`_Scanner.members` of a body parsed whole; list items are let go as handed out."""
    for key, value in data.items():
        yield key, _drained(value) if key in lists and isinstance(value, list) else value


def _drained(items: list[Any]) -> Iterator[Any]:
    items.reverse()
    while items:
        yield items.pop()


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


class BodyStream(Generic[M]):
    """A request body of ``model`` whose list fields' items are validated and handed out
    :data:`CHUNK_ITEMS` at a time (:meth:`map`), each chunk let go once used.

    The body's errors come first, as if it were validated whole: a malformed body, or
    every item error of the body (paths such as ``batch.3.req.start.started_at``), is the
    422 even when the route raised on an earlier chunk. Unknown fields are named as the
    whole model would name them (``batch[0].req.typo``).
    """

    def __init__(self, model: type[M], raw: bytes) -> None:
        self.model = model
        self.head: M | None = None  # the model, its lists empty, once read to the end
        self._raw = raw

    def _parsed(self, lists: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        """The members of a body parsed whole (``orjson`` refuses lone surrogates)."""
        raw = self._raw
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise _malformed(raw, err) from None
        if not isinstance(data, dict):  # the model says what it expects
            self._validate_head(data)
            return iter(())
        return _parsed_members(data, lists)

    def _validate_head(self, data: Any) -> M:
        try:
            return self.model.model_validate(data)
        except ValidationError as err:
            located = err.errors(include_url=False, include_input=False)
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in located]
            ) from None

    def chunks(self) -> Iterator[tuple[str, int, list[Any]]]:
        """``(list field, index of the first item, validated items)``, in body order, while
        the body validates; ``(field, 0, [])`` opens each list (a repeated key starts it
        again, as JSON's last member wins). Raises the body's ``RequestValidationError``,
        if any, once it is read to the end."""
        lists = _list_fields(self.model)
        big = len(self._raw) >= SPLIT_BYTES and lists
        scanner = _Scanner(self._raw) if big else None
        head: dict[str, Any] = {}
        errors: dict[str, list[Any]] = {}  # by list field
        unknown: dict[str, list[str]] = {}
        try:
            members = scanner.members(lists) if scanner is not None else self._parsed(lists)
            for key, value in members:
                if isinstance(value, Iterator):
                    head[key], errors[key], unknown[key] = [], [], []
                    yield key, 0, []
                    for start, done in self._validated(key, lists[key], value, scanner, errors):
                        unknown[key] += _unknown_paths(key, start, done)
                        if not any(errors.values()):
                            yield key, start, done
                        del done
                    continue
                head[key] = value
                if scanner is not None and scanner.escapes:
                    _refuse_surrogates(value, (key,))
        except json.JSONDecodeError as err:
            raise _malformed(self._raw, err) from None
        self._raw, scanner, members = b"", None, iter(())  # read: the body can go
        found = [e for errs in errors.values() for e in errs]
        if found:
            raise RequestValidationError(found)
        self.head = self._validate_head(head)  # its list fields empty
        if (sink := active_unknown_fields()) is not None:  # as the whole model would name them
            own = getattr(self.head, "_unknown_fields", ())
            sink.paths = [*own, *(p for paths in unknown.values() for p in paths)]

    @staticmethod
    def _validated(
        key: str,
        annotation: Any,
        items: Iterator[Any],
        scanner: _Scanner | None,
        errors: dict[str, list[Any]],
    ) -> Iterator[tuple[int, list[Any]]]:
        """``(index of the first, validated items)`` of the list ``key``, a chunk at a time;
        the errors of the chunks that do not validate go to ``errors[key]``, located."""
        adapter = _adapter(annotation)
        for start, chunk in _batched(items, CHUNK_ITEMS):
            if scanner is not None and scanner.escapes:
                for i, item in enumerate(chunk, start):
                    _refuse_surrogates(item, (key, i))
            try:
                done = adapter.validate_python(chunk)
            except ValidationError as err:
                errors[key] += [
                    {**e, "loc": ("body", key, start + int(e["loc"][0]), *e["loc"][1:])}
                    for e in err.errors(include_url=False, include_input=False)
                ]
                continue
            del chunk
            yield start, done
            del done

    def map(self, handle: Callable[[list[Any], int], R]) -> dict[str, list[R]]:
        """``{list field: [handle(items, index of the first item) per chunk]}``.

        When ``handle`` raises, the rest of the body is still read and validated, so that
        a 422 of a later item is the answer, as for a body validated whole.
        """
        results: dict[str, list[R]] = {}
        failure: Exception | None = None
        for key, start, items in self.chunks():
            if start == 0:
                results[key] = []
            if failure is None and items:
                try:
                    results[key].append(handle(items, start))
                except Exception as err:  # raised once the body is known to validate
                    failure = err
        if failure is not None:
            raise failure
        return results


def _batched(items: Iterator[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    """``(index of the first, up to size items)`` of ``items``."""
    start, chunk = 0, []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield start, chunk
            start, chunk = start + size, []
    if chunk:
        yield start, chunk


def validate_json(model: type[M], raw: bytes) -> M:
    """``raw`` parsed once and validated as ``model``, or a ``RequestValidationError``.

    Examples
    --------
    >>> from service.wire import CallsDeleteReq
    >>> validate_json(CallsDeleteReq, b'{"project_id": "e/p", "call_ids": ["a"]}').call_ids
    ['a']
    """
    stream = BodyStream(model, raw)
    lists = stream.map(lambda items, _: items)
    assert stream.head is not None
    return stream.head.model_copy(update={k: [x for c in cs for x in c] for k, cs in lists.items()})
