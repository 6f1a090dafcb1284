"""Weave's own SDK logs nested ops into our server; ``summary_usage="auto"`` undoes its rollup.

A seeded random tree of nested ``weave.op`` functions runs under weave 0.53.12's
``WeaveClient`` pointed at ``trace-usage serve``. Every call start and end the client sends
also goes to the reference in-memory server, so the default answer can be compared with the
reference's (inflated) one, while the ``auto`` answer must equal the true LLM usage of each
call's subtree, recorded as the ops ran.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import weave
from weave.trace.context.weave_client_context import set_weave_client_global
from weave.trace.weave_client import WeaveClient
from weave.trace_server_bindings.remote_http_trace_server import RemoteHTTPTraceServer
from weave.wandb_interface.auth import ApiKeyCredentials

from tests.live_server import USER, Server, running_server
from tests.reference import weave_ref
from tests.reference.compare import assert_same_usage
from tests.reference.weave_ref import ims, tsi

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ENTITY, PROJECT = "sdk-e2e", "tree"
PROJECT_ID = f"{ENTITY}/{PROJECT}"
MODELS = ("gpt-4o-mini", "claude-3-5-haiku")


def internal(start: tsi.StartedCallSchemaForInsert) -> tsi.CallStartReq:
    """The start as the reference sees it behind Weave's adapter: op refs in internal form."""
    public = f"weave:///{PROJECT_ID}/"
    op_name = start.op_name.replace(public, "weave-trace-internal:///c2RrLWUyZQ/", 1)
    return tsi.CallStartReq(start=start.model_copy(update={"op_name": op_name}))


class TeeServer(RemoteHTTPTraceServer):
    """Our server over HTTP, with every call part copied to the reference."""

    def __init__(self, url: str, key: str, reference: Any) -> None:
        super().__init__(url, auth=ApiKeyCredentials(key))
        self.reference = reference

    def call_start(self, req: tsi.CallStartReq) -> tsi.CallStartRes:
        self.reference.call_start(internal(req.start))
        return super().call_start(req)

    def call_end(self, req: tsi.CallEndReq) -> tsi.CallEndRes:
        self.reference.call_end(req)
        return super().call_end(req)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("sdk"), f"{ENTITY}/*", PROJECT_ID) as live:
        yield live


class Recorder:
    """Each call's parent and its true LLM usage, as the ops ran."""

    def __init__(self) -> None:
        self.parent: dict[str, str | None] = {}
        self.own: dict[str, dict[str, dict[str, int]]] = {}

    def enter(self, usage: dict[str, dict[str, int]] | None = None) -> None:
        call = weave.require_current_call()
        self.parent[call.id] = call.parent_id
        if usage:
            self.own[call.id] = usage

    def subtree_usage(self) -> dict[str, dict[str, dict[str, int]]]:
        totals: dict[str, dict[str, dict[str, int]]] = {c: {} for c in self.parent}
        for call_id, usage in self.own.items():
            node: str | None = call_id
            while node is not None:
                for model, counters in usage.items():
                    acc = totals[node].setdefault(model, defaultdict(int))
                    for key, value in counters.items():
                        acc[key] += value
                node = self.parent[node]
        return totals


def run_random_tree(seed: int, recorder: Recorder) -> None:
    rng = random.Random(seed)

    @weave.op
    def llm(model: str, prompt: int, completion: int) -> dict[str, Any]:
        recorder.enter({model: {"requests": 1, "prompt_tokens": prompt,
                                "completion_tokens": completion}})  # fmt: skip
        return {"model": model, "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}

    @weave.op
    def agent(depth: int) -> int:
        recorder.enter()
        for _ in range(rng.randint(0 if depth else 1, 3)):
            if depth < 3 and rng.random() < 0.5:
                agent(depth + 1)
            else:
                llm(rng.choice(MODELS), rng.randint(1, 500), rng.randint(1, 200))
        return depth

    agent(0)


def log_trace(server: Server, reference: Any, seed: int) -> Recorder:
    client = WeaveClient(
        ENTITY, PROJECT, TeeServer(server.url, server.key, reference), ensure_project_exists=False
    )
    set_weave_client_global(client)
    recorder = Recorder()
    try:
        run_random_tree(seed, recorder)
        client.flush()
    finally:
        set_weave_client_global(None)
    return recorder


def usage_over_http(server: Server, req: dict[str, Any]) -> dict[str, Any]:
    res = httpx.post(server.url + "/trace/usage", json=req, auth=(USER, server.key), timeout=30)
    assert res.status_code == 200, res.text
    return res.json()


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_sdk_logged_tree_counts_true_usage_in_auto_mode(server: Server, seed: int) -> None:
    reference = ims.InMemoryTraceServer()
    recorder = log_trace(server, reference, seed)
    root = next(c for c, p in recorder.parent.items() if p is None)
    trace_id = weave_ref.reference_calls_usage(reference, {"project_id": PROJECT_ID,
                                                           "call_ids": [root]})  # fmt: skip
    assert root in trace_id["call_usage"]
    base = {"project_id": PROJECT_ID, "filter": {"call_ids": list(recorder.parent)}}

    auto = usage_over_http(server, {**base, "summary_usage": "auto"})["call_usage"]
    truth = recorder.subtree_usage()
    assert set(auto) == set(truth)
    for call_id, models in truth.items():
        got = {m: {k: u[k] for k in ("requests", "prompt_tokens", "completion_tokens")}
               for m, u in auto[call_id].items()}  # fmt: skip
        assert got == {m: dict(c) for m, c in models.items()}, call_id
        for usage in auto[call_id].values():
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    own = usage_over_http(server, base)
    assert_same_usage(own, weave_ref.reference_trace_usage(reference, base), f"seed {seed}")
    # the SDK stored the root's usage as its children's sum: "own" counts it at least twice
    for model, usage in auto[root].items():
        assert own["call_usage"][root][model]["requests"] >= 2 * usage["requests"]
