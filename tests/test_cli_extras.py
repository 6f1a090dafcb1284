"""Commands that need an optional extra say so in one line when it is missing (``make run``
installs only the runtime), instead of ending in a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from service.cli import main

SAMPLE = str(Path(__file__).resolve().parents[1] / "data" / "sample" / "traces.jsonl.gz")


def _uninstall(monkeypatch: pytest.MonkeyPatch, package: str, *importers: str) -> None:
    """Make ``import package`` fail, and forget its submodules and the modules of ours that
    imported it, as if never loaded (another test may have loaded them, and Python finds a
    loaded submodule without asking for its parent); monkeypatch puts it all back after."""
    monkeypatch.setitem(sys.modules, package, None)
    loaded = [name for name in sys.modules if name.startswith(f"{package}.")]
    for name in [*loaded, *importers]:
        monkeypatch.delitem(sys.modules, name, raising=False)
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:  # ``from parent import child`` reads this attribute
            monkeypatch.delattr(sys.modules[parent], child, raising=False)


def test_spark_engine_without_pyspark(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _uninstall(monkeypatch, "pyspark", "engine.spark")
    code = main(["rollup", SAMPLE, "-o", str(tmp_path / "out"), "--engine", "spark"])
    err = capsys.readouterr().err
    assert code == 2
    assert "'pyspark'" in err and "pip install -e '.[spark]'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bench_without_the_reference(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _uninstall(monkeypatch, "weave", "benchmarks.run", "benchmarks.reference")
    code = main(["bench", "--quick", "--only", "a", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "'weave'" in err and "pip install -e '.[test,bench]'" in err
    assert not list(tmp_path.iterdir())


def test_a_missing_module_of_ours_is_a_bug_and_is_not_hidden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _uninstall(monkeypatch, "engine.spark")
    with pytest.raises(ModuleNotFoundError):
        main(["rollup", SAMPLE, "-o", str(tmp_path / "out"), "--engine", "spark"])
