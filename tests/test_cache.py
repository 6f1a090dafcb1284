"""Per-trace invalidation of the answer cache: a live trace does not empty its neighbours'.

A request naming its traces is keyed by those traces' write versions, so a write to another
trace leaves its answer cached, while a write to one of its own traces makes the next poll
fresh. Requests without ``trace_ids`` (and ``/calls/usage``) are keyed by their project; a
change that reaches every trace of a project (prices, deletes) moves them all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import KeyStore
from service.settings import Settings
from service.store import CallStore
from service.versions import WriteVersions

PROJECT = "entity/project"
OTHER = "entity/other"
T0 = "2025-01-01T00:00:00+00:00"


def _call(call_id: str, trace: str, tokens: int, project: str = PROJECT) -> dict[str, Any]:
    return {
        "project_id": project,
        "id": call_id,
        "trace_id": trace,
        "parent_id": None,
        "op_name": "openai.chat.completions.create",
        "started_at": T0,
        "ended_at": T0,
        "attributes": {},
        "inputs": {},
        "output": None,
        "summary": {"usage": {"gpt-4o": {"requests": 1, "prompt_tokens": tokens}}},
    }


class Polls:
    """An app over a real store whose route computations are counted."""

    def __init__(self, tmp_path: Path) -> None:
        config = Settings(data_dir=tmp_path, cache_size=64)
        _, secret = KeyStore(config.keys_path).add("ada", ["entity/*"])
        self.store = CallStore(config.db_path)
        self.client = TestClient(create_app(config, store=self.store))
        self.auth = ("ada", secret)
        self.loads = 0
        load = self.store.load

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.loads += 1
            return load(*args, **kwargs)

        self.store.load = counted  # type: ignore[method-assign]

    def write(self, *calls: dict[str, Any]) -> None:
        project = calls[0]["project_id"]
        res = self.client.post(
            f"/v2/{project}/calls/complete",
            content=json.dumps({"batch": list(calls)}),
            auth=self.auth,
        )
        assert res.status_code == 200, res.text

    def usage(self, body: dict[str, Any], path: str = "/trace/usage") -> tuple[Any, bool]:
        """The answer, and whether it was computed (not served from the cache)."""
        before = self.loads
        res = self.client.post(path, content=json.dumps(body), auth=self.auth)
        assert res.status_code == 200, res.text
        return res.json(), self.loads > before


@pytest.fixture
def polls(tmp_path: Path) -> Iterator[Polls]:
    p = Polls(tmp_path)
    p.write(_call("a1", "a", 10), _call("b1", "b", 20))
    with p.client:
        yield p


def _trace(trace: str, **extra: Any) -> dict[str, Any]:
    return {"project_id": PROJECT, "filter": {"trace_ids": [trace]}, **extra}


def _prompt(answer: dict[str, Any], call_id: str) -> int:
    return answer["call_usage"][call_id]["gpt-4o"]["prompt_tokens"]


def test_a_write_to_another_trace_keeps_the_answer_cached(polls: Polls) -> None:
    first, computed = polls.usage(_trace("a"))
    assert computed and _prompt(first, "a1") == 10
    for i in range(5):  # trace b is live: a write between every poll of trace a
        polls.write(_call(f"b{i + 2}", "b", 1))
        again, computed = polls.usage(_trace("a"))
        assert not computed and again == first


def test_a_write_to_its_own_trace_makes_the_next_poll_fresh(polls: Polls) -> None:
    polls.usage(_trace("a"))
    polls.write({**_call("a2", "a", 5), "parent_id": "a1"})
    fresh, computed = polls.usage(_trace("a"))
    assert computed and _prompt(fresh, "a1") == 15
    again, computed = polls.usage(_trace("a"))
    assert not computed and again == fresh


def test_a_call_moved_to_another_trace_leaves_its_old_trace_fresh(polls: Polls) -> None:
    old, _ = polls.usage(_trace("a"))
    assert set(old["call_usage"]) == {"a1"}
    polls.write(_call("a1", "b", 10))  # sent again, complete, now in trace b
    moved_out, computed = polls.usage(_trace("a"))
    assert computed and moved_out["call_usage"] == {}
    moved_in, computed = polls.usage(_trace("b"))
    assert computed and set(moved_in["call_usage"]) == {"a1", "b1"}


def test_a_start_sent_again_with_another_trace_leaves_its_old_trace_fresh(polls: Polls) -> None:
    old, _ = polls.usage(_trace("a"))
    assert set(old["call_usage"]) == {"a1"}
    start = {k: v for k, v in _call("a1", "b", 10).items() if k not in ("ended_at", "output")}
    res = polls.client.post("/call/start", json={"start": start}, auth=polls.auth)
    assert res.status_code == 200, res.text
    moved_out, computed = polls.usage(_trace("a"))
    assert computed and moved_out["call_usage"] == {}
    moved_in, computed = polls.usage(_trace("b"))
    assert computed and set(moved_in["call_usage"]) == {"a1", "b1"}


def test_a_request_over_several_traces_moves_with_any_of_them(polls: Polls) -> None:
    both = {"project_id": PROJECT, "filter": {"trace_ids": ["a", "b"]}}
    polls.usage(both)
    polls.write(_call("c1", "c", 1))  # a third trace
    assert not polls.usage(both)[1]
    polls.write(_call("b2", "b", 1))
    answer, computed = polls.usage(both)
    assert computed and set(answer["call_usage"]) == {"a1", "b1", "b2"}


def test_requests_without_trace_ids_move_with_the_project(polls: Polls) -> None:
    whole = {"project_id": PROJECT}
    calls = {"project_id": PROJECT, "call_ids": ["a1"]}
    polls.usage(whole)
    polls.usage(calls, "/calls/usage")
    polls.write(_call("x1", "x", 1, project=OTHER))  # another project
    assert not polls.usage(whole)[1]
    assert not polls.usage(calls, "/calls/usage")[1]
    polls.write(_call("b2", "b", 1))  # any trace of the project
    answer, computed = polls.usage(whole)
    assert computed and "b2" in answer["call_usage"]
    assert polls.usage(calls, "/calls/usage")[1]


def test_prices_and_deletes_reach_every_trace_of_the_project(polls: Polls) -> None:
    priced = _trace("a", include_costs=True)
    before, _ = polls.usage(priced)
    price = {
        "project_id": PROJECT,
        "costs": {
            "gpt-4o": {
                "prompt_token_cost": 1.0,
                "completion_token_cost": 1.0,
                "effective_date": "2020-01-01T00:00:00+00:00",  # in force at the calls' start
            }
        },
    }
    res = polls.client.post("/cost/create", content=json.dumps(price), auth=polls.auth)
    assert res.status_code == 200, res.text
    after, computed = polls.usage(priced)
    assert computed and after != before
    assert after["call_usage"]["a1"]["gpt-4o"]["prompt_tokens_total_cost"] == 10.0
    polls.usage(_trace("b"))
    res = polls.client.post(
        "/calls/delete",
        content=json.dumps({"project_id": PROJECT, "call_ids": ["b1"]}),
        auth=polls.auth,
    )
    assert res.status_code == 200, res.text
    gone, computed = polls.usage(_trace("b"))
    assert computed and gone["call_usage"] == {}


def test_forgotten_traces_never_read_as_an_older_version() -> None:
    versions = WriteVersions(remembered=2)
    keys = {t: versions.key("p", [t]) for t in "abc"}
    versions.wrote([("p", "a")])
    versions.wrote([("p", "b")])
    versions.wrote([("p", "c")])  # "a" is forgotten: it reads as its last write or later
    assert versions.key("p", ["a"]) != keys["a"]
    moved = versions.key("p", ["a"])
    versions.wrote([("p", "d")])  # forgets "b"; "a" may move on, never back
    assert versions.key("p", ["a"]) >= moved
    assert versions.key("p", ["b"]) != keys["b"]
