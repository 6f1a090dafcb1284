"""API keys: hashed storage, constant-time checks, project patterns, 401/403, ``keys`` CLI."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from service.auth import KeyStore
from service.cli import main
from tests.reference.generate import PROJECT
from tests.test_service import USER, FakeStore, make_client, post


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.json")


def test_keys_are_stored_hashed_and_private(keys: KeyStore) -> None:
    record, secret = keys.add(USER, [PROJECT])
    text = keys.path.read_text()
    assert secret not in text
    assert json.loads(text)["keys"][0]["sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600
    assert len(secret) > 40 and record.id in text


def test_authenticate_needs_both_user_and_key(keys: KeyStore) -> None:
    record, secret = keys.add(USER, [PROJECT])
    _, other = keys.add("bob", [PROJECT])
    assert keys.authenticate(USER, secret) == record
    assert keys.authenticate("bob", secret) is None
    assert keys.authenticate(USER, other) is None
    assert keys.authenticate(USER, "") is None


def test_the_user_api_is_named_by_the_key_alone(keys: KeyStore) -> None:
    """weave 0.53.12's client sends ``api:<key>``, as W&B's own servers take it."""
    record, secret = keys.add(USER, [PROJECT])
    assert keys.authenticate("api", secret) == record
    assert keys.authenticate("api", "tu_not-a-key") is None
    assert keys.authenticate("API", secret) is None


@pytest.mark.parametrize(
    ("patterns", "project", "granted"),
    [
        (["entity/project"], "entity/project", True),
        (["entity/project"], "entity/project2", False),
        (["entity/*"], "entity/anything", True),
        (["entity/*"], "other/anything", False),
        (["a/x", "b/*"], "b/y", True),
        (["*"], "any/project", True),
        (["Entity/*"], "entity/p", False),
    ],
)
def test_project_patterns(keys: KeyStore, patterns: list[str], project: str, granted: bool) -> None:
    record, _ = keys.add(USER, patterns)
    assert record.grants(project) is granted


def test_revoke_and_reload_across_instances(keys: KeyStore) -> None:
    record, secret = keys.add(USER, [PROJECT])
    server_view = KeyStore(keys.path)
    assert server_view.authenticate(USER, secret) == record
    assert keys.revoke(record.id) and not keys.revoke(record.id)
    assert server_view.authenticate(USER, secret) is None
    _, newer = keys.add(USER, [PROJECT])
    assert server_view.authenticate(USER, newer) is not None


# --- over HTTP ------------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> tuple[Any, tuple[str, str]]:
    return make_client(tmp_path, FakeStore([], []), projects=("entity/*",))


@pytest.mark.parametrize(
    "auth",
    [None, (USER, "tu_wrong"), ("mallory", "KEY"), (USER, "")],
    ids=["none", "bad-key", "bad-user", "empty-key"],
)
@pytest.mark.parametrize("url", ["/trace/usage", "/calls/usage"])
def test_401_without_valid_credentials(client: Any, auth: Any, url: str) -> None:
    c, (_, secret) = client
    if auth is not None and auth[1] == "KEY":
        auth = (auth[0], secret)
    res = c.post(url, content=b'{"project_id": "entity/p", "call_ids": []}', auth=auth)
    assert res.status_code == 401
    assert res.headers["www-authenticate"] == 'Basic realm="trace-usage"'
    assert set(res.json()) == {"reason", "path"}


def test_401_on_a_malformed_authorization_header(client: Any) -> None:
    c, _ = client
    res = c.post("/trace/usage", content=b"{}", headers={"authorization": "Basic !!!"})
    assert res.status_code == 401


@pytest.mark.parametrize("url", ["/trace/usage", "/calls/usage"])
def test_403_for_a_project_not_granted(client: Any, url: str) -> None:
    c, auth = client
    granted = post(c, auth, url, {"project_id": "entity/p", "call_ids": ["x"]})
    denied = post(c, auth, url, {"project_id": "other/p", "call_ids": ["x"]})
    assert granted.status_code == 200
    assert denied.status_code == 403
    assert "other/p" in denied.json()["reason"]


def test_a_revoked_key_stops_working_without_restart(tmp_path: Path) -> None:
    c, auth = make_client(tmp_path, FakeStore([], []))
    assert post(c, auth, "/trace/usage", {"project_id": PROJECT}).status_code == 200
    keys = KeyStore(tmp_path / "keys.json")
    keys.revoke(keys.keys()[0].id)
    assert post(c, auth, "/trace/usage", {"project_id": PROJECT}).status_code == 401


# --- CLI ------------------------------------------------------------------------------------


def test_keys_cli_add_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path)
    assert (
        main(["keys", "add", "--data-dir", data, "--user", USER, "--projects", "e/p", "e/*"]) == 0
    )
    out = capsys.readouterr().out
    secret = next(line.split()[-1] for line in out.splitlines() if line.startswith("api key:"))
    record = KeyStore(tmp_path / "keys.json").authenticate(USER, secret)
    assert record is not None and record.projects == ("e/p", "e/*")
    assert "curl -u" in out

    assert main(["keys", "list", "--data-dir", data]) == 0
    listed = capsys.readouterr().out
    assert record.id in listed and USER in listed and secret not in listed

    assert main(["keys", "revoke", "--data-dir", data, record.id]) == 0
    assert main(["keys", "revoke", "--data-dir", data, record.id]) == 1
    assert "no key" in capsys.readouterr().err
    assert KeyStore(tmp_path / "keys.json").keys() == ()


def test_keys_cli_reads_the_data_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRACE_USAGE_DATA_DIR", str(tmp_path))
    assert main(["keys", "add", "--user", USER, "--projects", PROJECT]) == 0
    assert len(KeyStore(tmp_path / "keys.json").keys()) == 1
