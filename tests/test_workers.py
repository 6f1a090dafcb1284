"""The engine's shared worker threads: results in order, bounded look-ahead, errors passed
on, and a working pool in a forked child."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time

import pytest

from engine import workers


def _slow_square(x: int) -> int:
    time.sleep(random.Random(x).random() / 200)  # finish out of order
    return x * x


def test_map_ahead_keeps_the_order_of_the_items() -> None:
    assert list(workers.map_ahead(_slow_square, range(40))) == [x * x for x in range(40)]


@pytest.mark.parametrize("ahead", [1, 2])
def test_map_ahead_pulls_only_as_far_ahead_as_asked(ahead: int) -> None:
    pulled = []

    def items():
        for x in range(10):
            pulled.append(x)
            yield x

    results = workers.map_ahead(_slow_square, items(), ahead=ahead)
    assert next(results) == 0
    assert len(pulled) == ahead + 1
    assert list(results) == [x * x for x in range(1, 10)]


def test_map_ahead_raises_the_error_of_the_item_that_failed() -> None:
    def fail_on_three(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    results = workers.map_ahead(fail_on_three, range(6))
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="three"):
        next(results)


def test_work_runs_on_other_threads() -> None:
    names = workers.map_all(lambda _: threading.current_thread().name, range(4), threaded=True)
    assert all(name.startswith("engine") for name in names)
    assert workers.map_all(lambda _: threading.current_thread().name, [0], threaded=False) == [
        threading.current_thread().name
    ]


def _in_child(queue: multiprocessing.Queue) -> None:
    queue.put(workers.submit(sum, [1, 2, 3]).result(timeout=10))


def test_a_forked_child_gets_a_pool_of_its_own() -> None:
    workers.submit(int).result()  # the parent's threads exist before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_in_child, args=(queue,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 6
