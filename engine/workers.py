"""The engine's two worker threads, shared by the rollup and the serializer.

NumPy and Polars let go of the GIL in their loops, so independent steps on two threads use
both cores. One pool serves every caller (requests queue for it rather than each making
threads); tasks never wait on other tasks of the pool, so sharing cannot deadlock. A forked
child, which inherits no threads, gets a pool of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")

_pool: ThreadPoolExecutor


def _new_pool() -> None:
    global _pool
    _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="engine")


_new_pool()
os.register_at_fork(after_in_child=_new_pool)


def submit(fn: Callable[..., U], *args: object) -> Future[U]:
    """Run ``fn(*args)`` on a worker thread."""
    return _pool.submit(fn, *args)


def map_all(fn: Callable[[T], U], items: Iterable[T], threaded: bool) -> list[U]:
    """``[fn(x) for x in items]``, on the worker threads when ``threaded``."""
    return list(_pool.map(fn, items)) if threaded else [fn(x) for x in items]


def map_ahead(fn: Callable[[T], U], items: Iterable[T], ahead: int = 1) -> Iterator[U]:
    """``fn(x)`` for each of ``items``, in order, lazily: while one result is consumed, up
    to ``ahead`` more are being computed on the worker threads."""
    pending: list[Future[U]] = []
    for item in items:
        pending.append(_pool.submit(fn, item))
        if len(pending) > ahead:
            yield pending.pop(0).result()
    for future in pending:
        yield future.result()
