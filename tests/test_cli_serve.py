"""``trace-usage serve``: flags and environment, and the refusal to serve openly without keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.auth import KeyStore
from service.cli import build_parser, main
from service.commands.serve import refusal, seed, settings_from_args
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _settings(argv: list[str]) -> Settings:
    return settings_from_args(build_parser().parse_args(["serve", *argv]))


def test_refuses_a_non_loopback_host_without_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0
    assert "refusing to serve on non-loopback address '0.0.0.0'" in err
    assert "trace-usage keys add" in err


def test_refusal_also_applies_when_the_host_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACE_USAGE_HOST", "10.1.2.3")
    assert main(["serve", "--data-dir", str(tmp_path)]) != 0


def test_every_setting_has_a_flag_and_an_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {
        "host": "0.0.0.0",
        "port": "9001",
        "data_dir": "/srv/usage",
        "workers": "3",
        "max_body_bytes": "1000",
        "summary_usage": "auto",
        "log_level": "debug",
        "cache_size": "5",
        "compute_threads": "3",
    }
    assert set(values) == set(Settings.model_fields)
    from_flags = _settings(
        [arg for n, v in values.items() for arg in (f"--{n.replace('_', '-')}", v)]
    )
    for name, value in values.items():
        monkeypatch.setenv(f"TRACE_USAGE_{name.upper()}", value)
    from_env = _settings([])
    assert from_flags == from_env
    assert from_env.port == 9001 and from_env.data_dir == Path("/srv/usage")
    assert from_env.summary_usage == "auto" and not from_env.is_loopback


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACE_USAGE_PORT", "9001")
    assert _settings([]).port == 9001
    assert _settings(["--port", "9002"]).port == 9002


def test_invalid_choice_is_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _settings(["--summary-usage", "both"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


LOOPBACK = [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True)]


@pytest.mark.parametrize(("host", "loopback"), [*LOOPBACK, ("0.0.0.0", False), ("10.0.0.5", False)])
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert Settings(host=host).is_loopback is loopback


def test_a_key_lifts_the_refusal(tmp_path: Path) -> None:
    settings = Settings(host="0.0.0.0", data_dir=tmp_path)
    keys = KeyStore(settings.keys_path)
    assert refusal(settings, keys) is not None
    keys.add("ops", ["e/*"])
    assert refusal(settings, keys) is None


def test_refuses_several_workers_on_the_single_process_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--workers", "2", "--data-dir", str(tmp_path)]) != 0
    assert "one process" in capsys.readouterr().err


def test_seed_sample_imports_once_and_prints_a_development_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.importer import SAMPLE_PROJECT
    from service.store import CallStore

    settings = Settings(data_dir=tmp_path)
    keys = KeyStore(settings.keys_path)
    seed(settings, keys)
    out = capsys.readouterr().out
    secret = next(line.split()[-1] for line in out.splitlines() if line.startswith("api key:"))
    record = keys.authenticate("dev", secret)
    assert record is not None and record.projects == (SAMPLE_PROJECT,)
    assert f"curl -u 'dev:{secret}' http://127.0.0.1:8000/trace/usage" in out

    seed(settings, keys)
    again = capsys.readouterr().out
    assert "api key:" not in again and "trace-usage keys add" in again
    assert len(keys.keys()) == 1
    store = CallStore(settings.db_path)
    try:
        calls, _ = store.load(SAMPLE_PROJECT)
        ids = calls.select("id").collect().get_column("id")
        assert ids.len() == store.stats()["calls"] > 20_000 and ids.is_unique().all()
    finally:
        store.close()


def _serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``trace-usage serve`` in its own process (as a user runs it), which must end at once."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("TRACE_USAGE_")},
            **(env or {}),
        },
    )


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("trace-usage serve: ") and result.stderr.count("\n") == 1
    return result.stderr


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--port", "99999"], {}, "--port=99999"),
        (["--port", "-1"], {}, "--port=-1"),
        ([], {"TRACE_USAGE_PORT": "abc"}, "TRACE_USAGE_PORT=abc"),
        ([], {"TRACE_USAGE_MAX_BODY_BYTES": "0"}, "TRACE_USAGE_MAX_BODY_BYTES=0"),
        (["--compute-threads", "0"], {}, "--compute-threads=0"),
    ],
)
def test_a_bad_setting_is_one_line_naming_where_it_came_from(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    result = _serve(["--data-dir", str(tmp_path), *args], env)
    assert result.returncode == 2
    assert named in _one_line(result)


def test_a_store_held_by_another_process_is_one_line(tmp_path: Path) -> None:
    from service.settings import Settings
    from service.store import CallStore

    store = CallStore(Settings(data_dir=tmp_path).db_path)
    try:
        result = _serve(["--data-dir", str(tmp_path), "--port", "0"])
    finally:
        store.close()
    assert result.returncode == 1
    assert "one process" in _one_line(result)


@pytest.mark.parametrize("content", [b"", b"not a duckdb file" * 100])
def test_a_damaged_store_is_one_line_saying_what_to_do(tmp_path: Path, content: bytes) -> None:
    from service.settings import Settings

    Settings(data_dir=tmp_path).db_path.write_bytes(content)
    result = _serve(["--data-dir", str(tmp_path), "--port", "0"])
    assert result.returncode == 1
    assert "damaged" in _one_line(result)
