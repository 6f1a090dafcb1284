"""Pure compute for Weave's ``/trace/usage``: parse -> compile -> load -> usage -> price -> rollup.

The public entry points are :func:`engine.trace_usage.trace_usage` and
:func:`engine.trace_usage.calls_usage`; everything else is a stage of that pipeline.
"""

from engine.trace_usage import UsageResult, calls_usage, trace_usage

__all__ = ["UsageResult", "calls_usage", "trace_usage"]
