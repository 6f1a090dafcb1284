"""The trace-view page in a real browser: Playwright drives Debian's chromium.

A ``trace-usage serve --seed-sample`` runs as a subprocess; every request the page makes
to anywhere but that server is aborted and counted, so the page (and ``/docs``) must work
offline. The numbers the page shows are checked against the API's own answers.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.live_server import USER, Server, running_server
from tests.reference.weave_ref import tsi

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
PROJECT = "demo/agents"
LIVE_PROJECT = "demo/live-view"
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("ui-data")
    with running_server(data_dir, "demo/*", "demo/other", "--seed-sample") as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    outside: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    tab.goto(server.url + "/")
    yield tab
    context.close()
    assert not outside, f"requests outside the server: {outside}"
    assert not errors, f"script errors: {errors}"


def _api(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    res = httpx.post(server.url + path, json=body, auth=(USER, server.key), timeout=60)
    res.raise_for_status()
    return res


def _usage_totals(by_model: dict[str, dict[str, Any]]) -> tuple[int, float]:
    tokens = sum(u["total_tokens"] for u in by_model.values())
    cost = sum(u[c] or 0.0 for u in by_model.values() for c in _COSTS)
    return tokens, cost


_COSTS = (
    "prompt_tokens_total_cost", "completion_tokens_total_cost",
    "cache_read_input_tokens_total_cost", "cache_creation_input_tokens_total_cost",
)  # fmt: skip


def _trace_usage(server: Server, trace_id: str, mode: str = "own", project: str = PROJECT) -> dict:
    body = {"project_id": project, "filter": {"trace_ids": [trace_id]}, "include_costs": True,
            "summary_usage": mode, "limit": 1_000_000}  # fmt: skip
    return _api(server, "/trace/usage", body).json()


def sign_in(page: Page, key: str, user: str = USER) -> None:
    page.fill("input[name=user]", user)
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")


def open_trace(page: Page, trace_id: str) -> None:
    page.click(f"[data-testid=trace-row][data-trace-id='{trace_id}']")
    expect(page.locator("[data-testid=call-row]").first).to_be_visible()


def _shown(row: Any) -> tuple[int, float]:
    tokens = int(row.locator("[data-tokens]").get_attribute("data-tokens"))
    return tokens, float(row.locator("[data-cost]").get_attribute("data-cost"))


def _row(page: Page, call_id: str) -> Any:
    return page.locator(f"[data-testid=call-row][data-call-id='{call_id}']")


def test_sign_in_with_a_wrong_key_says_so_then_the_right_key_works(
    page: Page, server: Server, tmp_path: Path
) -> None:
    sign_in(page, "tu_not-a-key")
    error = page.get_by_test_id("signin-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Sign-in failed")
    expect(error).to_contain_text("API key")
    page.screenshot(path=tmp_path / "signin-error.png")
    sign_in(page, server.key)
    expect(page.get_by_test_id("traces")).to_be_visible()
    expect(error).to_be_hidden()


def test_the_sample_traces_are_listed_newest_first_with_their_usage(
    page: Page, server: Server, tmp_path: Path
) -> None:
    sign_in(page, server.key)
    rows = page.get_by_test_id("trace-row")
    expect(rows.first).to_be_visible()
    newest_first = {"project_id": PROJECT, "filter": {"trace_roots_only": True},
                    "sort_by": [{"field": "started_at", "direction": "desc"}]}  # fmt: skip
    roots = _api(server, "/calls/stream_query", newest_first).text.splitlines()
    expected = [orjson.loads(line) for line in roots][:20]
    assert [r.get_attribute("data-trace-id") for r in rows.all()] == [
        c["trace_id"] for c in expected
    ]
    usage = _api(
        server,
        "/calls/usage",
        {"project_id": PROJECT, "call_ids": [c["id"] for c in expected], "include_costs": True,
         "limit": 1_000_000},
    ).json()["call_usage"]  # fmt: skip
    for row, call in zip(rows.all(), expected, strict=True):
        tokens, cost = _usage_totals(usage[call["id"]])
        assert _shown(row) == (tokens, pytest.approx(cost, rel=1e-12, abs=1e-15))
    statuses = {r.locator("[data-status]").get_attribute("data-status") for r in rows.all()}
    assert statuses == {"success", "running"}
    expect(page.get_by_test_id("traces-count")).to_contain_text(f"{len(roots)} traces")
    page.screenshot(path=tmp_path / "traces.png", full_page=True)


def test_a_trace_shows_what_trace_usage_answers(page: Page, server: Server, tmp_path: Path) -> None:
    sign_in(page, server.key)
    open_trace(page, "chat-0000")
    answer = _trace_usage(server, "chat-0000")["call_usage"]
    root = "chat-0000-00001"
    tokens, cost = _usage_totals(answer[root])
    assert tokens > 0 and cost > 0
    assert _shown(_row(page, root)) == (tokens, pytest.approx(cost, rel=1e-12))
    for row in page.get_by_test_id("call-row").all():  # every visible row, not just the root
        call_id = row.get_attribute("data-call-id")
        want = _usage_totals(answer.get(call_id, {}))
        assert _shown(row) == (want[0], pytest.approx(want[1], rel=1e-12, abs=1e-15))
    detail = page.get_by_test_id("detail")
    for model, u in answer[root].items():
        block = detail.locator(f"[data-model='{model}']")
        expect(block).to_contain_text(f"{u['prompt_tokens']:,}")
        expect(block).to_contain_text(f"{u['completion_tokens']:,}")
        expect(block).to_contain_text("Cache read cost")
    page.screenshot(path=tmp_path / "trace.png")


def test_expand_and_collapse(page: Page, server: Server) -> None:
    sign_in(page, server.key)
    open_trace(page, "chat-0001")
    rows = page.get_by_test_id("call-row")
    root = _row(page, "chat-0001-00001")
    expect(root).to_have_attribute("data-expanded", "true")
    expanded = rows.count()
    assert expanded > 1
    root.get_by_test_id("toggle").click()
    expect(rows).to_have_count(1)
    expect(root).to_have_attribute("data-expanded", "false")
    root.get_by_test_id("toggle").click()
    expect(rows).to_have_count(expanded)
    child = rows.nth(1)  # an agent step: its LLM calls start collapsed
    expect(child).to_have_attribute("data-expanded", "false")
    child.get_by_test_id("toggle").click()
    expect(child).to_have_attribute("data-expanded", "true")
    expect(rows).not_to_have_count(expanded)
    assert rows.count() > expanded


def test_own_and_auto_on_the_sdk_trace(page: Page, server: Server, tmp_path: Path) -> None:
    sign_in(page, server.key)
    page.get_by_test_id("mode-own").click()
    open_trace(page, "sdk-0001")
    root = _row(page, "sdk-0001-00001")
    own = _usage_totals(_trace_usage(server, "sdk-0001", "own")["call_usage"]["sdk-0001-00001"])
    auto = _usage_totals(_trace_usage(server, "sdk-0001", "auto")["call_usage"]["sdk-0001-00001"])
    assert own[0] > auto[0] > 0
    expect(root.locator("[data-tokens]")).to_have_attribute("data-tokens", str(own[0]))
    expect(page.get_by_test_id("mode-help")).to_contain_text("exactly as Weave")
    page.get_by_test_id("mode-auto").click()
    expect(root.locator("[data-tokens]")).to_have_attribute("data-tokens", str(auto[0]))
    assert _shown(root) == (auto[0], pytest.approx(auto[1], rel=1e-12))
    expect(page.get_by_test_id("mode-help")).to_contain_text("not counted twice")
    page.screenshot(path=tmp_path / "auto.png")
    page.get_by_test_id("mode-own").click()
    expect(root.locator("[data-tokens]")).to_have_attribute("data-tokens", str(own[0]))


def _start(
    call_id: str, parent: str | None, at: dt.datetime, trace: str = "live-view"
) -> tsi.CallStartReq:
    return tsi.CallStartReq(
        start=tsi.StartedCallSchemaForInsert(
            project_id=LIVE_PROJECT, id=call_id, trace_id=trace, parent_id=parent,
            op_name="agent" if parent is None else "openai.chat.completions.create",
            started_at=at, attributes={}, inputs={},
        )
    )  # fmt: skip


def _end(call_id: str, at: dt.datetime, prompt: int) -> tsi.CallEndReq:
    usage = {"gpt-4o": {"requests": 1, "prompt_tokens": prompt, "completion_tokens": 10}}
    return tsi.CallEndReq(
        end=tsi.EndedCallSchemaForInsert(
            project_id=LIVE_PROJECT, id=call_id, ended_at=at, summary={"usage": usage}
        )
    )


def test_a_running_trace_refreshes_after_an_ingest(page: Page, server: Server) -> None:
    client = server.client()
    t0 = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    client.call_start(_start("lv-root", None, t0))
    client.call_start(_start("lv-1", "lv-root", t0 + dt.timedelta(seconds=1)))
    client.call_end(_end("lv-1", t0 + dt.timedelta(seconds=2), 100))
    sign_in(page, server.key)
    page.get_by_test_id("project").select_option(LIVE_PROJECT)
    open_trace(page, "live-view")
    root = _row(page, "lv-root")
    expect(root.get_by_test_id("unfinished")).to_be_visible()
    expect(page.get_by_test_id("live")).to_be_visible()
    expect(root.locator("[data-tokens]")).to_have_attribute("data-tokens", "110")

    client.call_start(_start("lv-2", "lv-root", t0 + dt.timedelta(seconds=3)))
    client.call_end(_end("lv-2", t0 + dt.timedelta(seconds=4), 200))
    expect(_row(page, "lv-2")).to_be_visible()
    expect(root.locator("[data-tokens]")).to_have_attribute("data-tokens", "320")

    client.call_end(
        tsi.CallEndReq(
            end=tsi.EndedCallSchemaForInsert(
                project_id=LIVE_PROJECT, id="lv-root", ended_at=t0 + dt.timedelta(seconds=5),
                summary={},
            )
        )
    )  # fmt: skip
    expect(root.get_by_test_id("unfinished")).to_have_count(0)
    expect(page.get_by_test_id("live")).to_be_hidden()


def test_a_late_traces_list_of_the_previous_project_is_not_shown(
    page: Page, server: Server
) -> None:
    at = dt.datetime(2025, 6, 3, tzinfo=dt.UTC)
    server.client().call_start(_start("late-root", None, at, "late-view"))
    held: list[Any] = []

    def hold_the_first_list(route: Any) -> None:  # the first project's list answers last
        if not held and LIVE_PROJECT not in (route.request.post_data or ""):
            held.append(route)
        else:
            route.continue_()

    page.route("**/calls/usage", hold_the_first_list)  # the last request before it shows
    sign_in(page, server.key)
    for _ in range(300):  # until the page asked for the first project's list
        if held:
            break
        page.wait_for_timeout(100)
    assert held
    page.get_by_test_id("project").select_option(LIVE_PROJECT)
    expect(page.locator("[data-testid=trace-row][data-trace-id='late-view']")).to_be_visible()
    with page.expect_response(lambda response: response.request == held[0].request):
        held[0].continue_()  # the first project's list arrives now, after the second's
    page.wait_for_timeout(300)  # time to show it, as the page did before
    expect(page.get_by_test_id("traces-count")).to_contain_text(LIVE_PROJECT)
    expect(page.locator("[data-testid=trace-row][data-trace-id='late-view']")).to_be_visible()


def test_a_failed_poll_of_a_running_trace_is_tried_again(page: Page, server: Server) -> None:
    client = server.client()
    t0 = dt.datetime(2025, 6, 2, tzinfo=dt.UTC)
    client.call_start(_start("rt-root", None, t0, "retry-view"))
    sign_in(page, server.key)
    page.get_by_test_id("project").select_option(LIVE_PROJECT)
    open_trace(page, "retry-view")
    root = _row(page, "rt-root")
    expect(root.get_by_test_id("unfinished")).to_be_visible()
    failed: list[str] = []

    def fail_once(route: Any) -> None:  # the next poll meets a restarting server
        if failed:
            route.continue_()
        else:
            failed.append(route.request.url)
            route.fulfill(status=503, content_type="application/json", body='{"reason": "x"}')

    page.route("**/trace/usage", fail_once)
    client.call_start(_start("rt-1", "rt-root", t0 + dt.timedelta(seconds=1), "retry-view"))
    client.call_end(_end("rt-1", t0 + dt.timedelta(seconds=2), 100))
    expect(page.get_by_test_id("error")).to_be_visible()  # the failed poll is shown
    expect(_row(page, "rt-1")).to_be_visible()  # and the next one brings the new call
    expect(page.get_by_test_id("error")).to_be_hidden()
    assert len(failed) == 1


def test_the_21709_call_trace_opens_and_renders_only_what_is_visible(
    page: Page, server: Server, tmp_path: Path
) -> None:
    sign_in(page, server.key)
    open_trace(page, "eval-0001")
    expect(page.get_by_test_id("trace-meta")).to_contain_text("21,709 calls")
    answer = _trace_usage(server, "eval-0001")
    root = "eval-0001-00001"
    tokens, cost = _usage_totals(answer["call_usage"][root])
    assert len(answer["call_usage"]) == 21_709
    assert _shown(_row(page, root)) == (tokens, pytest.approx(cost, rel=1e-9))
    rows = page.get_by_test_id("call-row")
    assert rows.count() < 120  # 3,201 rows are expanded; only those near the viewport exist
    page.get_by_test_id("tree").evaluate("t => { t.scrollTop = t.scrollHeight; }")
    last = page.locator("[data-testid=call-row]").last
    expect(last).to_be_visible()
    assert rows.count() < 120
    assert not math.isnan(float(last.locator("[data-cost]").get_attribute("data-cost")))
    page.screenshot(path=tmp_path / "eval.png")


def test_docs_render_offline(page: Page, server: Server) -> None:
    page.goto(server.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("trace-usage")
    expect(page.locator(".opblock-summary-path", has_text="/calls/stream_query")).to_be_visible()
