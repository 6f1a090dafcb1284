"""One test per rule of the engine core, on hand-built traces."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest

from engine import calls_usage, trace_usage
from engine.errors import InputDataError, InvalidRequestError
from tests.engine_helpers import PROJECT, T0, call, frame, prices


def usage_of(calls: pl.DataFrame, **req) -> dict:
    return trace_usage(calls, {"project_id": PROJECT, **req}).to_dict()["call_usage"]


def test_multi_model_usage_is_kept_apart_and_rolled_up() -> None:
    calls = frame(
        call("r"),
        call("a", "r", {"gpt": {"prompt_tokens": 3, "requests": 1}}),
        call("b", "r", {"gpt": {"prompt_tokens": 4}, "claude": {"completion_tokens": 5}}),
    )
    got = usage_of(calls)
    assert got["r"]["gpt"]["prompt_tokens"] == 7
    assert got["r"]["gpt"]["requests"] == 1
    assert got["r"]["claude"]["completion_tokens"] == 5
    assert got["a"] == {"gpt": got["a"]["gpt"]} and "claude" not in got["a"]


def test_input_and_output_tokens_add_to_prompt_and_completion() -> None:
    got = usage_of(
        frame(
            call(
                "a",
                None,
                {
                    "m": {
                        "prompt_tokens": 1,
                        "input_tokens": 2,
                        "completion_tokens": 3,
                        "output_tokens": 4,
                    }
                },
            )
        )
    )
    assert got["a"]["m"]["prompt_tokens"] == 3
    assert got["a"]["m"]["completion_tokens"] == 7


@pytest.mark.parametrize(("total", "want"), [(None, 10), (0, 10), (99, 99), ("12", 12)])
def test_total_tokens_default_to_prompt_plus_completion(total, want) -> None:
    entry = {"prompt_tokens": 4, "completion_tokens": 6}
    if total is not None:
        entry["total_tokens"] = total
    assert usage_of(frame(call("a", None, {"m": entry})))["a"]["m"]["total_tokens"] == want


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("12", 12),
        (" 7 ", 7),
        ("1_000", 1000),
        (2.0, 2),
        (3.9, 3),
        (True, 1),
        ("abc", 0),
        ("1.5", 0),
        (None, 0),
        ([1], 0),
        ({"x": 1}, 0),
    ],
)
def test_counters_read_like_python_int_else_zero(value, want) -> None:
    got = usage_of(frame(call("a", None, {"m": {"requests": value, "prompt_tokens": 1}})))
    assert got["a"]["m"]["requests"] == want


def test_non_dict_entries_and_usage_are_skipped() -> None:
    calls = frame(
        call("a", None, {"m": 5, "n": {"requests": 1}}),
        call("b", None, [1, 2]),
        call("c", None, summary={"usage": "x"}),
        call("d", None, summary=None),
    )
    got = usage_of(calls)
    assert got == {"a": {"n": got["a"]["n"]}, "b": {}, "c": {}, "d": {}}


def test_model_with_only_zero_usage_is_absent() -> None:
    got = usage_of(frame(call("a", None, {"m": {"requests": 0}, "n": {"requests": 1}})))
    assert set(got["a"]) == {"n"}


def test_cache_tokens_are_summed_and_priced() -> None:
    calls = frame(
        call("r"),
        call(
            "a",
            "r",
            {
                "m": {
                    "prompt_tokens": 100,
                    "cache_read_input_tokens": 30,
                    "cache_creation_input_tokens": 20,
                    "completion_tokens": 10,
                }
            },
        ),
    )
    table = prices(
        {"llm_id": "m", "prompt": 1.0, "completion": 2.0, "cache_read": 0.5, "cache_creation": 4.0}
    )
    got = trace_usage(calls, {"project_id": PROJECT, "include_costs": True}, prices=table)
    m = got.to_dict()["call_usage"]["r"]["m"]
    assert (m["cache_read_input_tokens"], m["cache_creation_input_tokens"]) == (30, 20)
    assert m["prompt_tokens_total_cost"] == pytest.approx((100 - 30 - 20) * 1.0)
    assert m["completion_tokens_total_cost"] == pytest.approx(20.0)
    assert m["cache_read_input_tokens_total_cost"] == pytest.approx(15.0)
    assert m["cache_creation_input_tokens_total_cost"] == pytest.approx(80.0)


def test_costs_are_null_when_off_and_zero_when_unpriced() -> None:
    calls = frame(call("a", None, {"unpriced": {"prompt_tokens": 5}}))
    off = trace_usage(calls, {"project_id": PROJECT}).to_dict()["call_usage"]["a"]["unpriced"]
    assert off["prompt_tokens_total_cost"] is None
    on = trace_usage(
        calls,
        {"project_id": PROJECT, "include_costs": True},
        prices=prices({"llm_id": "other", "prompt": 1.0}),
    )
    assert on.to_dict()["call_usage"]["a"]["unpriced"]["prompt_tokens_total_cost"] == 0.0


def _prompt_cost(calls: pl.DataFrame, table: pl.DataFrame) -> float:
    res = trace_usage(calls, {"project_id": PROJECT, "include_costs": True}, prices=table)
    return res.to_dict()["call_usage"]["a"]["m"]["prompt_tokens_total_cost"]


def test_price_in_force_at_call_start_wins_over_later_ones() -> None:
    calls = frame(call("a", None, {"m": {"prompt_tokens": 1}}))
    table = prices(
        {"llm_id": "m", "prompt": 1.0, "date": T0 - dt.timedelta(days=30)},
        {"llm_id": "m", "prompt": 2.0, "date": T0 - dt.timedelta(days=1)},
        {"llm_id": "m", "prompt": 3.0, "date": T0 + dt.timedelta(days=1)},
    )
    assert _prompt_cost(calls, table) == 2.0


def test_only_future_prices_use_the_latest_one() -> None:
    calls = frame(call("a", None, {"m": {"prompt_tokens": 1}}))
    table = prices(
        {"llm_id": "m", "prompt": 5.0, "date": T0 + dt.timedelta(days=1)},
        {"llm_id": "m", "prompt": 7.0, "date": T0 + dt.timedelta(days=9)},
    )
    assert _prompt_cost(calls, table) == 7.0


def test_project_price_overrides_default_even_when_older() -> None:
    calls = frame(call("a", None, {"m": {"prompt_tokens": 1}}))
    table = prices(
        {
            "llm_id": "m",
            "prompt": 1.0,
            "level": "project",
            "level_id": PROJECT,
            "date": T0 - dt.timedelta(days=90),
        },
        {"llm_id": "m", "prompt": 2.0, "date": T0 - dt.timedelta(days=1)},
        {"llm_id": "m", "prompt": 9.0, "level": "project", "level_id": "other/project"},
    )
    assert _prompt_cost(calls, table) == 1.0


def test_past_default_beats_future_project_price() -> None:
    calls = frame(call("a", None, {"m": {"prompt_tokens": 1}}))
    table = prices(
        {
            "llm_id": "m",
            "prompt": 1.0,
            "level": "project",
            "level_id": PROJECT,
            "date": T0 + dt.timedelta(days=1),
        },
        {"llm_id": "m", "prompt": 2.0, "date": T0 - dt.timedelta(days=1)},
    )
    assert _prompt_cost(calls, table) == 2.0


def test_equal_rank_price_rows_keep_the_first_stored() -> None:
    calls = frame(call("a", None, {"m": {"prompt_tokens": 1}}))
    same = {"llm_id": "m", "level": "project", "level_id": PROJECT}
    assert _prompt_cost(calls, prices({**same, "prompt": 3.0}, {**same, "prompt": 4.0})) == 3.0


def test_price_effective_exactly_at_start_counts_as_past() -> None:
    calls = frame(call("a", None, {"m": {"prompt_tokens": 1}}))
    table = prices(
        {"llm_id": "m", "prompt": 1.0, "date": T0 - dt.timedelta(days=5)},
        {"llm_id": "m", "prompt": 6.0, "date": T0},
    )
    assert _prompt_cost(calls, table) == 6.0


def test_orphan_parent_outside_selection_ends_the_chain() -> None:
    calls = frame(call("a", "gone", {"m": {"requests": 1}}), call("b", "a", {"m": {"requests": 2}}))
    got = usage_of(calls)
    assert got["a"]["m"]["requests"] == 3
    assert got["b"]["m"]["requests"] == 2


def test_filtered_out_parent_ends_the_chain() -> None:
    calls = frame(call("r"), call("a", "r", {"m": {"requests": 1}}))
    got = usage_of(calls, filter={"call_ids": ["a"]})
    assert list(got) == ["a"]


def test_cycle_members_keep_their_totals_and_pass_nothing_up() -> None:
    calls = frame(
        call("x", "y", {"m": {"requests": 1}}),
        call("y", "x", {"m": {"requests": 10}}),
        call("below", "x", {"m": {"requests": 100}}),
        call("leaf", "below", {"m": {"requests": 1000}}),
    )
    got = usage_of(calls)
    assert got["x"]["m"]["requests"] == 1101  # own + the tree hanging below it
    assert got["y"]["m"]["requests"] == 10  # x never passes its total up to y
    assert got["below"]["m"]["requests"] == 1100


def test_self_parent_counts_only_its_own_subtree() -> None:
    calls = frame(call("s", "s", {"m": {"requests": 1}}), call("c", "s", {"m": {"requests": 2}}))
    assert usage_of(calls)["s"]["m"]["requests"] == 3


def test_deep_chain_rolls_every_level() -> None:
    n = 5000
    calls = frame(
        *[
            call(f"c{i:05d}", f"c{i - 1:05d}" if i else None, {"m": {"requests": 1}})
            for i in range(n)
        ]
    )
    got = usage_of(calls, limit=0)
    assert got["c00000"]["m"]["requests"] == n
    assert got[f"c{n - 1:05d}"]["m"]["requests"] == 1
    assert got["c02500"]["m"]["requests"] == n - 2500


def test_empty_selection_answers_empty() -> None:
    res = trace_usage(
        frame(call("a", None, {"m": {"requests": 1}})), {"project_id": "other/project"}
    ).to_dict()
    assert res == {"call_usage": {}, "unfinished_call_ids": []}


def test_candidates_exclude_deleted_nameless_and_unstarted_calls() -> None:
    calls = frame(
        call("ok"),
        call("deleted", deleted_at=T0),
        call("nameless", op_name=None),
        call("unstarted", started=None),
    )
    assert list(usage_of(calls)) == ["ok"]


def test_limit_keeps_the_earliest_calls_ordered_by_start_then_id() -> None:
    calls = frame(
        call("b", started=T0),
        call("a", started=T0),
        call("z", started=T0 - dt.timedelta(seconds=1)),
        call("c", started=T0 + dt.timedelta(seconds=1)),
    )
    assert list(usage_of(calls, limit=3)) == ["z", "a", "b"]
    assert list(usage_of(calls, limit=0)) == ["z", "a", "b", "c"]
    assert list(usage_of(calls, limit=-5)) == ["z", "a", "b", "c"]


def test_unfinished_ids_are_sorted_and_only_selected() -> None:
    calls = frame(call("b", ended=None), call("a", ended=None), call("c"))
    res = trace_usage(calls, {"project_id": PROJECT}).to_dict()
    assert res["unfinished_call_ids"] == ["a", "b"]
    res = trace_usage(calls, {"project_id": PROJECT, "filter": {"call_ids": ["c", "b"]}})
    assert res.unfinished_call_ids == ["b"]


def test_shuffled_input_gives_the_same_answer() -> None:
    rng = random.Random(7)
    rows = [call("r")] + [
        call(f"n{i}", f"n{rng.randrange(i)}" if i else "r", {"m": {"requests": i}})
        for i in range(200)
    ]
    want = trace_usage(frame(*rows), {"project_id": PROJECT}).to_json()
    for _ in range(3):
        rng.shuffle(rows)
        assert trace_usage(frame(*rows), {"project_id": PROJECT}).to_json() == want


def test_calls_usage_answers_per_requested_root_with_empty_for_unknown() -> None:
    calls = frame(call("r"), call("a", "r", {"m": {"requests": 2}}), call("b", "a", ended=None))
    res = calls_usage(calls, {"project_id": PROJECT, "call_ids": ["a", "nope"]}).to_dict()
    assert res["call_usage"] == {"a": {"m": res["call_usage"]["a"]["m"]}, "nope": {}}
    assert res["call_usage"]["a"]["m"]["requests"] == 2
    assert res["unfinished_call_ids"] == ["b"]


def test_duplicate_call_ids_are_an_input_error() -> None:
    with pytest.raises(InputDataError, match="more than once"):
        usage_of(frame(call("a"), call("a")))


def test_missing_required_column_is_an_input_error() -> None:
    with pytest.raises(InputDataError, match="started_at"):
        trace_usage(
            pl.DataFrame({"id": ["a"], "project_id": [PROJECT], "op_name": ["x"]}),
            {"project_id": PROJECT},
        )


def test_unknown_summary_usage_mode_lists_the_allowed_values() -> None:
    with pytest.raises(InvalidRequestError, match="'own', 'auto'"):
        usage_of(frame(call("a")), summary_usage="both")


def test_lazy_and_eager_frames_answer_alike() -> None:
    calls = frame(call("r"), call("a", "r", {"m": {"requests": 1}}))
    req = {"project_id": PROJECT}
    assert trace_usage(calls.lazy(), req).to_json() == trace_usage(calls, req).to_json()


def test_shipped_default_prices_price_known_models() -> None:
    started = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    calls = frame(call("a", None, {"gpt-4o": {"prompt_tokens": 1000}}, started=started))
    res = trace_usage(calls, {"project_id": PROJECT, "include_costs": True}).to_dict()
    assert res["call_usage"]["a"]["gpt-4o"]["prompt_tokens_total_cost"] > 0


def test_unreadable_calls_are_an_input_error_not_a_crash() -> None:
    calls = frame(call("a", None, {"m": {"requests": 1}}))
    with pytest.raises(InputDataError, match="summary"):
        trace_usage(
            calls.with_columns(pl.lit('{"usage": oops').alias("summary")), {"project_id": PROJECT}
        )
    with pytest.raises(InputDataError, match="cannot read the calls"):
        trace_usage(calls.with_columns(started_at=pl.lit("soon")), {"project_id": PROJECT})
