"""``summary_usage="auto"``: client-side rollups (as the Weave SDK writes them) count once."""

from __future__ import annotations

import pytest

from engine import calls_usage, trace_usage
from tests.engine_helpers import PROJECT, call, frame, prices


def llm(n: int) -> dict:
    return {"gpt": {"requests": 1, "prompt_tokens": 10 * n, "completion_tokens": 5 * n}}


def summed(*usages: dict) -> dict:
    out: dict = {}
    for usage in usages:
        for model, counters in usage.items():
            acc = out.setdefault(model, {})
            for k, v in counters.items():
                acc[k] = acc.get(k, 0) + v
    return out


def answer(calls, mode: str, **req) -> dict:
    return trace_usage(calls, {"project_id": PROJECT, "summary_usage": mode, **req}).to_dict()


def tokens(res: dict, call_id: str) -> tuple[int, int, int]:
    u = res["call_usage"][call_id]["gpt"]
    return u["requests"], u["prompt_tokens"], u["completion_tokens"]


def sdk_example():
    """The issue's example: root -> agent -> 2 LLM calls, then a third LLM call of its own."""
    a, b, c = llm(1), llm(1), llm(1)
    agent = summed(a, b)
    return frame(
        call("root", None, summed(agent, c)),
        call("agent", "root", agent),
        call("llm1", "agent", a),
        call("llm2", "agent", b),
        call("llm3", "root", c),
    )


def test_own_mode_inflates_sdk_traces_like_the_reference() -> None:
    assert tokens(answer(sdk_example(), "own"), "root") == (8, 80, 40)


def test_auto_mode_counts_each_llm_call_once() -> None:
    res = answer(sdk_example(), "auto")
    assert tokens(res, "root") == (3, 30, 15)
    assert tokens(res, "agent") == (2, 20, 10)
    assert tokens(res, "llm1") == (1, 10, 5)


def test_star_and_chain() -> None:
    star = frame(
        call("r", None, summed(llm(1), llm(2), llm(3))),
        call("a", "r", llm(1)),
        call("b", "r", llm(2)),
        call("c", "r", llm(3)),
    )
    assert tokens(answer(star, "auto"), "r") == (3, 60, 30)
    chain = frame(call("r", None, llm(4)), call("m", "r", llm(4)), call("leaf", "m", llm(4)))
    res = answer(chain, "auto")
    assert [tokens(res, c) for c in ("r", "m", "leaf")] == [(1, 40, 20)] * 3


def test_mixed_trace_sdk_subtree_and_otel_subtree() -> None:
    calls = frame(
        call("root"),  # OTel-style: parents carry no usage
        call("sdk", "root", summed(llm(1), llm(2))),
        call("s1", "sdk", llm(1)),
        call("s2", "sdk", llm(2)),
        call("otel", "root"),
        call("o1", "otel", llm(5)),
    )
    res = answer(calls, "auto")
    assert tokens(res, "root") == (3, 80, 40)
    assert tokens(res, "sdk") == (2, 30, 15)
    assert answer(calls, "own")["call_usage"]["otel"] == res["call_usage"]["otel"]


def test_parent_with_own_usage_besides_children_is_not_a_rollup() -> None:
    calls = frame(call("p", None, llm(7)), call("c", "p", llm(1)))
    assert tokens(answer(calls, "auto"), "p") == (2, 80, 40)


def test_rolled_up_parent_with_a_child_outside_the_selection_counts_its_own() -> None:
    calls = frame(
        call("p", None, summed(llm(1), llm(2))), call("a", "p", llm(1)), call("b", "p", llm(2))
    )
    res = answer(calls, "auto", filter={"call_ids": ["p", "a"]})
    # p's stored usage (both children) no longer equals its selected child's: kept whole
    assert tokens(res, "p") == (3, 40, 20)


def test_comparison_covers_every_model_and_raw_counter() -> None:
    child = {"gpt": {"requests": 1, "input_tokens": 10}}
    # prompt_tokens vs input_tokens: the same normalized usage, different raw counters
    parent = {"gpt": {"requests": 1, "prompt_tokens": 10}}
    res = answer(frame(call("p", None, parent), call("c", "p", child)), "auto")
    assert tokens(res, "p") == (2, 20, 0)
    extra_model = {**child, "claude": {"requests": 1}}
    res = answer(frame(call("p", None, extra_model), call("c", "p", child)), "auto")
    assert res["call_usage"]["p"]["claude"]["requests"] == 1


@pytest.mark.parametrize("include_costs", [False, True])
def test_auto_mode_prices_the_deduplicated_usage(include_costs: bool) -> None:
    table = prices({"llm_id": "gpt", "prompt": 1.0, "completion": 2.0})
    res = trace_usage(
        sdk_example(),
        {"project_id": PROJECT, "include_costs": include_costs, "summary_usage": "auto"},
        prices=table,
    ).to_dict()
    cost = res["call_usage"]["root"]["gpt"]["prompt_tokens_total_cost"]
    assert cost == (30.0 if include_costs else None)


def test_server_default_applies_when_the_request_names_no_mode() -> None:
    req = {"project_id": PROJECT}
    res = trace_usage(sdk_example(), req, summary_usage="auto").to_dict()
    assert tokens(res, "root") == (3, 30, 15)
    res = trace_usage(sdk_example(), {**req, "summary_usage": "own"}, summary_usage="auto")
    assert tokens(res.to_dict(), "root") == (8, 80, 40)


def test_calls_usage_takes_the_mode_too() -> None:
    req = {"project_id": PROJECT, "call_ids": ["root"], "summary_usage": "auto"}
    assert tokens(calls_usage(sdk_example(), req).to_dict(), "root") == (3, 30, 15)
