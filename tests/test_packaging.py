"""`make run` installs only the runtime dependencies (`pip install -e .`), not the test
extras: every third-party module that `engine/` and `service/` import, at module level or
inside a function, must come from a declared runtime dependency or one of its own
requirements. (NumPy once came
only with the test extras, so a fresh `make run` failed at import.)"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LOCAL = {"engine", "service", "benchmarks"}
OPTIONAL = {"engine/spark.py": "spark"}  # modules that only an extra makes importable


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _closure(requirements: list[str]) -> set[str]:
    """Distributions installed by these requirements, their requirements, and so on."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = _normal(req.name)
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(req.name) or []:
            sub = Requirement(line)
            wanted = {""} | req.extras
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(Requirement(str(sub).split(";")[0]))
    return seen


def _imports(path: Path) -> set[str]:
    """Top-level package names of every import statement in the module."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - LOCAL - set(sys.stdlib_module_names) - {"__future__"}


def test_every_import_comes_with_the_runtime_install():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _closure(project["dependencies"])
    providers = metadata.packages_distributions()
    missing = []
    for path in sorted([*ROOT.glob("engine/**/*.py"), *ROOT.glob("service/**/*.py")]):
        relative = path.relative_to(ROOT).as_posix()
        allowed = runtime
        if relative in OPTIONAL:
            allowed = runtime | _closure(project["optional-dependencies"][OPTIONAL[relative]])
        for module in _imports(path):
            dists = {_normal(d) for d in providers.get(module, [module])}
            if not dists & allowed:
                missing.append(f"{relative}: {module}")
    assert not missing, f"imported but not installed by `pip install .`: {missing}"


def test_the_check_sees_a_module_that_only_an_extra_provides():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _closure(project["dependencies"])
    assert "numpy" in runtime
    assert "pyspark" not in runtime  # an extra's package is told apart from the runtime
    assert "weave" not in runtime
