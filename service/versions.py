"""Write counters that let an answer cache keep what a write did not touch.

An answer that names its traces (``filter.trace_ids``) depends only on the calls of those
traces and on the project's prices; any other answer may depend on any call of its project.
So a write to trace ``t`` of project ``p`` moves the version of ``(p, t)`` and of ``p``, and
a change that reaches every trace of a project (prices, deletes, which find descendants
across a trace) moves the project's *epoch*, part of every key of that project.

A trace's version is the value of one clock at its last write. Only the most recently
written traces are remembered; a forgotten trace reads as the newest clock value forgotten,
which is at least its own: versions never go back, so a cached answer is never taken for
a newer state, and a forgotten trace only costs a cache miss.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

_REMEMBERED = 100_000  # traces; ~100 bytes each


class WriteVersions:
    """Per-trace and per-project write counters (thread-safe).

    Examples
    --------
    >>> v = WriteVersions()
    >>> a, b, whole = v.key("p", ["a"]), v.key("p", ["b"]), v.key("p", None)
    >>> v.wrote([("p", "a")])
    >>> v.key("p", ["a"]) == a, v.key("p", ["b"]) == b, v.key("p", None) == whole
    (False, True, False)
    """

    def __init__(self, remembered: int = _REMEMBERED) -> None:
        self._remembered = remembered
        self._clock = 0
        self._forgotten = 0  # the newest clock value of a trace no longer remembered
        self._traces: OrderedDict[tuple[str, str | None], int] = OrderedDict()
        self._projects: dict[str, int] = {}
        self._epochs: dict[str, int] = {}
        self._lock = threading.Lock()

    def wrote(self, traces: Iterable[tuple[str, str | None]]) -> None:
        """Calls of these ``(project, trace)`` pairs were written (and committed)."""
        with self._lock:
            self._clock += 1
            for pair in traces:
                self._traces[pair] = self._clock
                self._traces.move_to_end(pair)
                self._projects[pair[0]] = self._clock
            while len(self._traces) > self._remembered:
                _, clock = self._traces.popitem(last=False)
                self._forgotten = max(self._forgotten, clock)

    def changed(self, project_id: str) -> None:
        """Something that reaches every trace of ``project_id`` changed (prices, deletes)."""
        with self._lock:
            self._clock += 1
            self._projects[project_id] = self._epochs[project_id] = self._clock

    def epoch(self, project_id: str) -> int:
        """The last change of ``project_id`` that reaches all of its traces."""
        with self._lock:
            return self._epochs.get(project_id, 0)

    def key(self, project_id: str, trace_ids: Sequence[str] | None) -> tuple:
        """What an answer over ``trace_ids`` of ``project_id`` (None: any of its calls)
        depends on; read it before loading the calls the answer is computed from."""
        with self._lock:
            if trace_ids is None:
                return ("project", self._projects.get(project_id, 0))
            versions = tuple(self._traces.get((project_id, t), self._forgotten) for t in trace_ids)
            return ("traces", self._epochs.get(project_id, 0), versions)
