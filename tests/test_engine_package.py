"""The engine's package face is lazy: a stage imports alone, the public names still work."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    """Run ``code`` in a fresh interpreter (this one has loaded everything already)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip()


def test_importing_the_rollup_does_not_import_the_pipeline() -> None:
    code = "import sys, engine.rollup; print(sorted(m for m in sys.modules if m[:7] == 'engine.'))"
    loaded = _run(code)
    assert "engine.rollup" in loaded
    assert "engine.trace_usage" not in loaded


@pytest.mark.parametrize(
    "first",
    [
        "pass",
        "import engine.trace_usage",  # the submodule first: the name must stay the function
        "from engine.trace_usage import price_table",
    ],
)
def test_public_names_are_the_pipeline_functions(first: str) -> None:
    code = (
        f"{first}\n"
        "import engine, engine.trace_usage as m, sys\n"
        "from engine import UsageResult, calls_usage, trace_usage\n"
        "face = sys.modules['engine.trace_usage']\n"
        "print(trace_usage is face.trace_usage, calls_usage is face.calls_usage,"
        " UsageResult is face.UsageResult, engine.trace_usage is face.trace_usage,"
        " m is face.trace_usage)"
    )
    assert _run(code) == "True True True True True"


def test_unknown_names_are_attribute_errors() -> None:
    import engine

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        engine.nothing  # noqa: B018
