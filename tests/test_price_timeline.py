"""The per-(table, project) price timeline picks the same row as the full ranking.

``lookup_prices`` reads a precomputed timeline; ``choose_prices`` ranks every eligible row
for every key. On random tables (default, project and other projects' rows, past, future
and tied dates) and random call start times, including times exactly on an effective date,
both must pick the same ``seq`` and prices for every key.
"""

from __future__ import annotations

import datetime as dt
import gc
import random

import polars as pl
import pytest

from engine import schema as s
from engine.pricing import _TIMELINES, choose_prices, lookup_prices, price_timeline
from engine.trace_usage import price_table
from tests.reference.generate import MODELS, PROJECT, T0, random_prices


def _table(rng: random.Random) -> pl.DataFrame:
    rows = random_prices(rng)
    frame = pl.DataFrame(rows, schema_overrides={s.EFFECTIVE_DATE: s.TIMESTAMP})
    return price_table(frame.with_row_index(s.PRICE_SEQ), default=frame.clear())


def _keys(rng: random.Random, table: pl.DataFrame, n: int) -> pl.DataFrame:
    dates = table.get_column(s.EFFECTIVE_DATE).to_list()
    starts = []
    for _ in range(n):
        if dates and rng.random() < 0.3:  # on an effective date, or a microsecond either side
            starts.append(rng.choice(dates) + dt.timedelta(microseconds=rng.choice([-1, 0, 1])))
        else:
            starts.append(T0 + dt.timedelta(days=rng.uniform(-700, 500)))
    starts[:2] = [dt.datetime(1, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 12, 31, tzinfo=dt.UTC)]
    return pl.DataFrame(
        {s.MODEL: [rng.choice(MODELS) for _ in range(n)], s.STARTED_AT: starts},
        schema={s.MODEL: pl.String, s.STARTED_AT: s.TIMESTAMP},
    )


@pytest.mark.parametrize("seed", range(40))
def test_timeline_picks_what_the_ranking_picks(seed: int) -> None:
    rng = random.Random(seed)
    table = _table(rng)
    keys = _keys(rng, table, 200)
    for project in (PROJECT, "other/project"):
        want = choose_prices(keys, table, project)
        got = lookup_prices(keys, table, project)
        assert got.equals(want), (seed, project)


def test_default_table_timeline_matches_the_ranking() -> None:
    table = price_table()
    rng = random.Random(7)
    models = table.get_column(s.LLM_ID).unique().sort().to_list()
    dates = table.get_column(s.EFFECTIVE_DATE).to_list()
    keys = pl.DataFrame(
        {
            s.MODEL: [rng.choice(models) for _ in range(3000)] + ["no-such-model"],
            s.STARTED_AT: [
                rng.choice(dates) + dt.timedelta(hours=rng.randint(-48, 48)) for _ in range(3001)
            ],
        },
        schema={s.MODEL: pl.String, s.STARTED_AT: s.TIMESTAMP},
    )
    got = lookup_prices(keys, table, PROJECT)
    assert got.equals(choose_prices(keys, table, PROJECT))
    assert got.get_column(s.PRICE_SEQ).null_count() == 1  # only the unknown model


def test_timeline_is_kept_per_table_and_project() -> None:
    table = _table(random.Random(3))
    first = _TIMELINES.get(table, PROJECT)
    assert _TIMELINES.get(table, PROJECT) is first
    assert _TIMELINES.get(table, "other/project") is not first
    copy = table.clone()
    assert _TIMELINES.get(copy, PROJECT) is not first  # another table object: built anew
    assert _TIMELINES.get(copy, PROJECT).equals(price_timeline(table, PROJECT))


def test_a_recycled_table_id_is_not_mistaken_for_the_old_table() -> None:
    table = _table(random.Random(4))
    old = _TIMELINES.get(table, PROJECT)
    key = (id(table), PROJECT)
    del table
    gc.collect()
    other = _table(random.Random(5))
    if id(other) != key[0]:  # force the case: pretend ``other`` got the dead table's id
        _TIMELINES._kept[(id(other), PROJECT)] = _TIMELINES._kept.pop(key)
    got = _TIMELINES.get(other, PROJECT)
    assert got is not old
    assert got.equals(price_timeline(other, PROJECT))


@pytest.mark.parametrize("days", [0, 1, -1])
def test_dates_near_the_epoch_and_empty_tables(days: int) -> None:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=days)
    row = {
        s.LLM_ID: "m",
        s.PRICING_LEVEL: "default",
        s.PRICING_LEVEL_ID: "default",
        s.PROVIDER_ID: "p",
        s.EFFECTIVE_DATE: epoch,
        **{name: 1e-6 for name in s.PRICES},
    }
    frame = pl.DataFrame([row], schema_overrides={s.EFFECTIVE_DATE: s.TIMESTAMP})
    keys = pl.DataFrame(
        {s.MODEL: ["m", "m", "x"], s.STARTED_AT: [epoch - dt.timedelta(seconds=1), epoch, epoch]},
        schema={s.MODEL: pl.String, s.STARTED_AT: s.TIMESTAMP},
    )
    for table in (price_table(frame, default=frame.clear()), price_table(default=frame.clear())):
        got = lookup_prices(keys, table, PROJECT)
        assert got.equals(choose_prices(keys, table, PROJECT))


def test_null_models_and_starts_are_unpriced_and_the_rest_unchanged() -> None:
    table = price_table()
    keys = pl.DataFrame(
        {
            s.MODEL: ["gpt-4o", None, "gpt-4o", "no-such-model", "gpt-4o"],
            s.STARTED_AT: [T0, T0, None, T0, T0],
        },
        schema={s.MODEL: pl.String, s.STARTED_AT: s.TIMESTAMP},
    )
    got = lookup_prices(keys, table, PROJECT)
    assert got.get_column(s.PRICE_SEQ).is_null().to_list() == [False, True, True, True, False]
    priced = keys.filter(pl.Series([True, False, False, False, True]))
    want = choose_prices(priced, table, PROJECT)
    assert got.filter(pl.col(s.PRICE_SEQ).is_not_null()).equals(want)
    assert got.schema == want.schema


def test_no_keys_give_an_empty_frame_of_the_ranking_s_schema() -> None:
    keys = pl.DataFrame(schema={s.MODEL: pl.String, s.STARTED_AT: s.TIMESTAMP})
    table = price_table()
    first, second = lookup_prices(keys, table, PROJECT), lookup_prices(keys, table, PROJECT)
    assert first.equals(choose_prices(keys, table, PROJECT))
    assert first.schema == choose_prices(keys, table, PROJECT).schema
    assert first is not second  # a fresh frame each time: callers may extend it in place
