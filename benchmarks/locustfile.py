"""Locust user for benchmark (e), run headless by :func:`benchmarks.server.load_test`.

Every user polls ``POST /trace/usage`` with no wait between requests, taking the request
bodies (one JSON document per line of ``TRACE_USAGE_BODIES``) in turn across all users; the
run ends once ``TRACE_USAGE_MAX_REQUESTS`` answers are in, if Locust's run time is not up
first.
A response other than 200 counts as a failure.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from locust import FastHttpUser, task
from locust.exception import StopUser

_BODIES = Path(os.environ["TRACE_USAGE_BODIES"]).read_bytes().splitlines()
_HEADERS = {
    "Authorization": os.environ["TRACE_USAGE_AUTH"],
    "Accept-Encoding": "identity",
    "Content-Type": "application/json",
}
_MAX_REQUESTS = int(os.environ["TRACE_USAGE_MAX_REQUESTS"])
_sent = itertools.count()
_done = itertools.count(1)


class Poller(FastHttpUser):
    """One keep-alive client polling stored traces."""

    @task
    def poll(self) -> None:
        i = next(_sent)
        if i >= _MAX_REQUESTS:
            raise StopUser  # the others finish the requests they have sent
        body = _BODIES[i % len(_BODIES)]
        with self.client.post(
            "/trace/usage", data=body, headers=_HEADERS, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
        if next(_done) == _MAX_REQUESTS:  # the last answer is in: end the run
            self.environment.runner.quit()
