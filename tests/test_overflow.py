"""Token sums past 64 bits are refused (422 naming the counters), never answered wrapped;
sums just below the limit are answered exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from engine import calls_usage, trace_usage
from engine import schema as s
from engine.errors import InputDataError
from engine.usage import usage_from_json
from service.app import create_app
from service.auth import KeyStore
from service.settings import Settings
from service.store import CallStore
from tests.engine_helpers import PROJECT, call

BIG = 2**62 + 5  # two of them pass 2**63 - 1
TOP = 2**63 - 1


def _calls(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema={k: s.CALL_SCHEMA[k] for k in rows[0]})


def _children(*usages: dict[str, int]) -> pl.DataFrame:
    """A root with one child per usage entry (all for model ``m``)."""
    kids = [call(f"c{i}", "root", {"m": u}) for i, u in enumerate(usages)]
    return _calls(call("root"), *kids)


OVERFLOWS = [
    pytest.param(
        _children({"prompt_tokens": BIG}, {"prompt_tokens": BIG}), "prompt_tokens +", id="subtree"
    ),
    pytest.param(
        _calls(call("a", None, {"m": {"prompt_tokens": TOP, "input_tokens": TOP}})),
        "prompt_tokens + input_tokens",
        id="prompt-plus-input",
    ),
    pytest.param(
        _children({"completion_tokens": BIG}, {"output_tokens": BIG}),
        "completion_tokens + output_tokens",
        id="completion-plus-output",
    ),
    pytest.param(_children({"requests": BIG}, {"requests": BIG}), "requests of", id="requests"),
    pytest.param(
        _children({"total_tokens": BIG}, {"prompt_tokens": BIG}),  # total = p + c when 0
        "total_tokens +",
        id="total",
    ),
    pytest.param(
        _children({"cache_read_input_tokens": -BIG}, {"cache_read_input_tokens": -BIG}),
        "cache_read_input_tokens of",
        id="negative",
    ),
]


@pytest.mark.parametrize(("calls", "named"), OVERFLOWS)
@pytest.mark.parametrize("source", ["summary", "usage-frame", "lazy-usage-frame"])
def test_sums_past_64_bits_are_refused(calls: pl.DataFrame, named: str, source: str) -> None:
    usage = None if source == "summary" else usage_from_json(calls.select(s.ID, s.SUMMARY))
    if source == "lazy-usage-frame":
        usage = usage.lazy()
    with pytest.raises(InputDataError, match=re.escape(f"token counts too large: {named}")):
        trace_usage(calls, {"project_id": PROJECT}, usage=usage)


def test_calls_usage_refuses_them_too() -> None:
    calls = _children({"prompt_tokens": BIG}, {"prompt_tokens": BIG})
    with pytest.raises(InputDataError, match="could pass 2\\*\\*63 - 1"):
        calls_usage(calls, {"project_id": PROJECT, "call_ids": ["root"]})


def test_sums_just_below_the_limit_are_exact() -> None:
    half = 2**62 - 1  # two of them: 2**63 - 2
    calls = _children({"prompt_tokens": half, "requests": 1}, {"input_tokens": half})
    got = trace_usage(calls, {"project_id": PROJECT}).to_dict()["call_usage"]
    assert got["root"]["m"]["prompt_tokens"] == 2**63 - 2
    assert got["root"]["m"]["total_tokens"] == 2**63 - 2
    assert got["c0"]["m"]["prompt_tokens"] == half


def test_the_most_negative_count_in_a_usage_frame_is_measured_right() -> None:
    """-2**63 has no 64-bit magnitude; it still counts as 2**63, past the limit alone."""
    calls = _calls(call("a"))
    usage = pl.DataFrame(
        {s.ID: ["a"], s.MODEL: ["m"], "prompt_tokens": [-(2**63)]},
        schema_overrides={"prompt_tokens": pl.Int64},
    )
    with pytest.raises(InputDataError, match="add up to 9223372036854775808 in magnitude"):
        trace_usage(calls, {"project_id": PROJECT}, usage=usage)


def test_the_billed_prompt_counts_only_with_costs() -> None:
    """Costs price prompt minus cached tokens; without costs that difference is never formed."""
    calls = _calls(
        call("a", None, {"gpt-4o": {"prompt_tokens": BIG, "cache_read_input_tokens": BIG}})
    )
    got = trace_usage(calls, {"project_id": PROJECT}).to_dict()["call_usage"]["a"]["gpt-4o"]
    assert (got["prompt_tokens"], got["cache_read_input_tokens"]) == (BIG, BIG)
    with pytest.raises(InputDataError, match="billed prompt tokens"):
        trace_usage(calls, {"project_id": PROJECT, "include_costs": True})


# --- over HTTP, on the real store -----------------------------------------------------------
def _client(tmp_path: Path, store: CallStore) -> tuple[TestClient, tuple[str, str]]:
    config = Settings(data_dir=tmp_path)
    _, secret = KeyStore(config.keys_path).add("ada", ["entity/project"])
    return TestClient(create_app(config, store=store), raise_server_exceptions=False), (
        "ada",
        secret,
    )


def _log(
    client: TestClient, auth: tuple[str, str], call_id: str, parent: str | None, usage: dict
) -> None:
    start = {
        "project_id": "entity/project",
        "id": call_id,
        "trace_id": "t1",
        "parent_id": parent,
        "op_name": "op",
        "started_at": "2025-01-01T00:00:00Z",
        "attributes": {},
        "inputs": {},
    }
    end = {
        "project_id": "entity/project",
        "id": call_id,
        "ended_at": "2025-01-01T00:00:05Z",
        "summary": {"usage": usage},
        "output": None,
    }
    for url, body in (("/call/start", {"start": start}), ("/call/end", {"end": end})):
        res = client.post(url, content=json.dumps(body).encode(), auth=auth)
        assert res.status_code == 200, res.text


@pytest.mark.parametrize(
    ("url", "extra"),
    [("/trace/usage", {}), ("/calls/usage", {"call_ids": ["root"]})],
)
def test_http_answers_422_naming_the_counters(
    tmp_path: Path, store: CallStore, url: str, extra: dict
) -> None:
    client, auth = _client(tmp_path, store)
    _log(client, auth, "root", None, {})
    _log(client, auth, "a", "root", {"gpt-4o": {"prompt_tokens": BIG, "requests": 1}})
    _log(client, auth, "b", "root", {"gpt-4o": {"prompt_tokens": BIG, "requests": 1}})
    body = {"project_id": "entity/project", **extra}
    res = client.post(url, content=json.dumps(body).encode(), auth=auth)
    assert res.status_code == 422
    assert res.json()["reason"].startswith("token counts too large: prompt_tokens + input_tokens")
    # one call alone fits: answered exactly
    one = {"project_id": "entity/project", "filter": {"call_ids": ["a"]}}
    res = client.post("/trace/usage", content=json.dumps(one).encode(), auth=auth)
    assert res.status_code == 200
    assert res.json()["call_usage"]["a"]["gpt-4o"]["prompt_tokens"] == BIG
