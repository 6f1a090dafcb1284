"""``trace-usage keys add``: names that could never log in are refused with one line, and the
sample command it prints names a project the key grants."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.auth import KeyStore
from service.cli import main
from service.settings import KEYS_FILE


def _add(tmp_path: Path, *args: str) -> int:
    return main(["keys", "add", "--data-dir", str(tmp_path), *args])


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        ("", "non-empty"),
        ("  ", "non-empty"),
        (" ada", "surrounding spaces"),
        ("a:b", "colon"),
        ("a\tb", "control character"),
        ("api", "reserved"),
    ],
)
def test_a_user_that_cannot_log_in_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], user: str, reason: str
) -> None:
    assert _add(tmp_path, "--user", user, "--projects", "e/p") == 2
    out = capsys.readouterr()
    assert out.err.startswith("trace-usage keys add: ") and reason in out.err
    assert out.err.count("\n") == 1 and "Traceback" not in out.err
    assert "api key:" not in out.out
    assert not (tmp_path / KEYS_FILE).exists()


@pytest.mark.parametrize(
    ("projects", "reason"),
    [([""], "non-empty"), (["agents"], "entity/project"), (["e/p", " e/q"], "spaces")],
)
def test_a_project_grant_that_names_nothing_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], projects: list[str], reason: str
) -> None:
    assert _add(tmp_path, "--user", "ada", "--projects", *projects) == 2
    err = capsys.readouterr().err
    assert err.startswith("trace-usage keys add: project ") and reason in err
    assert KeyStore(tmp_path / KEYS_FILE).keys() == ()


@pytest.mark.parametrize(
    ("projects", "want", "note"),
    [
        (["e/p"], "e/p", False),
        (["demo/*", "acme/agents"], "acme/agents", False),
        (["demo/*"], "demo/project", True),
        (["*"], "entity/project", True),
        (["team-?/*"], "team-x/project", True),
    ],
)
def test_the_sample_command_names_a_granted_project(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    projects: list[str],
    want: str,
    note: bool,
) -> None:
    assert _add(tmp_path, "--user", "ada", "--projects", *projects) == 0
    out = capsys.readouterr().out
    secret = re.search(r"api key:\s+(\S+)", out)
    project = re.search(r'"project_id": "([^"]+)"', out)
    assert secret and project and project.group(1) == want
    record = KeyStore(tmp_path / KEYS_FILE).authenticate("ada", secret.group(1))
    assert record is not None and record.grants(project.group(1))
    assert (f"{want!r} stands for any project" in out) is note


def test_valid_names_still_make_a_key_that_logs_in(tmp_path: Path) -> None:
    assert _add(tmp_path, "--user", "ada lovelace", "--projects", "e/p", "e/*") == 0
    (record,) = KeyStore(tmp_path / KEYS_FILE).keys()
    assert record.user == "ada lovelace" and record.projects == ("e/p", "e/*")
