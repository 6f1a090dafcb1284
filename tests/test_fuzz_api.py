"""A small schemathesis run against ``trace-usage serve``: no generated request gets a 5xx.

The long run is ``python -m benchmarks.fuzz_api`` (README, "Limits and errors").
"""

from __future__ import annotations

from benchmarks.fuzz_api import run_fuzz


def test_generated_requests_never_get_a_server_error() -> None:
    result = run_fuzz(max_examples=3)
    assert result.cases > 1000, result.output[-3000:]  # the run really reached the operations
    assert result.server_errors == 0, result.output[-3000:]
    assert result.exit_code == 0, result.output[-3000:]
