"""Schemathesis against a running ``trace-usage serve``: no generated request may get a 5xx.

``python -m benchmarks.fuzz_api --max-examples 300`` is the long run (about 5,000 cases
over the API's operations); ``tests/test_fuzz_api.py`` runs a few cases per operation in
``make test``. The server runs over an empty store in a temporary directory, with a key
granted every project, so generated project ids get past auth and reach the handlers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.live_server import running_server

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@dataclass(frozen=True)
class FuzzResult:
    """What one run did: cases sent, responses with a 5xx, and schemathesis' exit code."""

    cases: int
    server_errors: int
    exit_code: int
    output: str


def _count(report: Path) -> tuple[int, int]:
    """Cases and 5xx answers from schemathesis' NDJSON event stream."""
    cases = errors = 0
    for line in report.read_text().splitlines():
        event = json.loads(line)
        for name, body in event.items():
            if name != "ScenarioFinished":
                continue
            for step in (body.get("recorder") or {}).get("interactions", {}).values():
                response = step.get("response") or {}
                cases += 1
                errors += int(response.get("status_code", 0) >= 500)
    return cases, errors


def run_fuzz(max_examples: int, seed: int = 1, workers: int = 1) -> FuzzResult:
    """Fuzz every operation of the OpenAPI schema with ``max_examples`` cases each.

    One worker by default: Hypothesis describes its filters with ``ast.parse``, which on
    CPython 3.11 before 3.11.8 can race between threads (gh-106905) and abort a run of
    several workers with "AST constructor recursion depth mismatch", whatever the server
    answered.
    """
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        with running_server(data_dir, "*", "narrow/project") as server:
            report = data_dir / "events.ndjson"
            command = [
                str(SCHEMATHESIS), "run", f"{server.url}/openapi.json",
                "--auth", f"api:{server.key}", "--checks", "not_a_server_error",
                "--max-examples", str(max_examples), "--seed", str(seed),
                "--workers", str(workers), "--phases", "examples,coverage,fuzzing",
                "--generation-database", "none", "--suppress-health-check", "all",
                "--report", "ndjson", "--report-ndjson-path", str(report),
                "--request-timeout", "60", "--no-color",
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, cwd=data_dir)
            cases, errors = _count(report) if report.exists() else (0, 0)
            return FuzzResult(cases, errors, done.returncode, done.stdout + done.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="schemathesis workers")
    args = parser.parse_args()
    result = run_fuzz(args.max_examples, args.seed, args.workers)
    print(result.output[-3000:])
    print(f"cases: {result.cases}, 5xx: {result.server_errors}, exit: {result.exit_code}")
    return 0 if result.server_errors == 0 and result.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
