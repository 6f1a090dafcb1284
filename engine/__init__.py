"""Pure compute for Weave's ``/trace/usage``: parse -> compile -> load -> usage -> price -> rollup.

The public entry points are :func:`engine.trace_usage.trace_usage` and
:func:`engine.trace_usage.calls_usage`; everything else is a stage of that pipeline.

The package face is lazy (PEP 562): ``from engine import trace_usage`` loads the pipeline on
first use, so importing one stage (``engine.rollup``, ``engine.schema``) does not pull in
every other module, and no stage takes part in an import cycle through this file.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.trace_usage import UsageResult, calls_usage, trace_usage

__all__ = ["UsageResult", "calls_usage", "trace_usage"]
_FACE = "engine.trace_usage"  # the module the names of ``__all__`` come from


def __getattr__(name: str) -> object:
    """The names of ``__all__``, imported from :data:`_FACE` when first asked for."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_FACE), name)


class _Package(ModuleType):
    """Keeps ``engine.trace_usage`` naming the function rather than its module.

    Importing a submodule binds it as an attribute of its package; for ``trace_usage``
    that binding would hide the function of the same name (as the earlier eager
    ``from engine.trace_usage import trace_usage`` here did not). The module itself stays
    reachable as ``sys.modules["engine.trace_usage"]`` and by ``from engine.trace_usage
    import ...``.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name in __all__ and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
