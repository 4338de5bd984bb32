"""The operator console's run page, run list and session page in Chromium, against the real
harness: a tool error highlighted, the trace tree with a span opened, retry and cancel from
the page, the list's tool filters, a session as a conversation, a sandbox run's commands.
Screenshots (`make screenshots`) go to docs/console/."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import admin_login, screenshot
from tests.integration.harness import Harness

pytestmark = pytest.mark.integration

VIEWPORT = {"width": 1280, "height": 800}
# "A typical run fits in two screens."
MAX_RUN_PAGE_HEIGHT = 1600


@pytest.fixture(scope="module")
def sandbox_root() -> Any:
    path = Path(tempfile.mkdtemp(prefix="harness-console-it-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: Any, sandbox_root: Path) -> Any:
    h = Harness(
        tmp_path_factory.mktemp("console"),
        # Slow enough that a long answer can be cancelled mid-stream, quick for short ones.
        HARNESS_OFFLINE_DELAY_MS="40",
        HARNESS_SANDBOX_ROOT=str(sandbox_root),
        HARNESS_SANDBOX_CLOSE_GRACE_SECONDS="0",
    ).start()
    yield h
    h.close()


@pytest.fixture(scope="module")
def alice(harness: Harness) -> httpx.Client:
    return harness.client(harness.api_key("alice"))


@pytest.fixture(scope="module")
def page(browser: Any, harness: Harness) -> Any:
    page = admin_login(browser, harness)
    page.set_viewport_size(VIEWPORT)
    yield page
    page.close()


def start(client: httpx.Client, text: str, agent: str = "calculator", **extra: Any) -> dict[str, Any]:
    response = client.post("/api/runs", json={"input": text, "agent": agent, "model": "offline", **extra})
    assert response.status_code == 202, response.text
    return response.json()


def finish(harness: Harness, client: httpx.Client, text: str, agent: str = "calculator", **extra: Any) -> dict:
    run = start(client, text, agent, **extra)
    done = harness.wait_for(client, run["id"], ("succeeded", "failed", "cancelled"), timeout=60)
    assert done["status"] == "succeeded", done
    return done


def run_page(harness: Harness, run_id: str) -> str:
    return f"{harness.base_url}/admin/runs/run/{run_id.replace('_', '_5F')}/change/"


def height(page: Any) -> int:
    return int(page.evaluate("document.body.scrollHeight"))


def test_a_tool_error_run_reads_as_a_conversation_with_its_trace(harness, alice, page, tmp_path):
    failed_tool = finish(harness, alice, "What is 1/0?")
    spans = harness.sql(
        f"from runs.models import Span; print(json.dumps(Span.objects.filter(run_id='{failed_tool['id']}').count()))"
    )
    page.goto(run_page(harness, failed_tool["id"]))

    # The header.
    assert page.inner_text("#run-status") == "SUCCEEDED"  # shown upper-case
    assert page.inner_text("#run-agent") == "calculator" and page.inner_text("#run-model") == "offline"
    assert page.inner_text("#run-principal") == "alice"
    assert page.inner_text("#run-session") == failed_tool["session_id"]
    assert page.inner_text("#run-tokens").startswith(str(failed_tool["usage"]["total_tokens"]))
    assert page.inner_text("#run-duration").endswith(" s")
    assert page.get_attribute("#run-live", "href") == f"/runs/{failed_tool['id']}/"
    assert "1 tool error, 1 failed span" in page.inner_text("#run-error-summary")

    # The transcript: input, the tool call and its error (highlighted), the answer; no delta rows.
    entries = page.locator("#transcript li.rc-entry")
    assert [entries.nth(i).get_attribute("data-event") for i in range(entries.count())] == [
        "input",
        "tool.called → tool.output",
        "message.created",
        "run.succeeded",
    ]
    tool = page.locator("#transcript li.rc-tool")
    assert 'calculate({"expression": "1/0"})' in tool.inner_text() and "error: division by zero" in tool.inner_text()
    assert "rc-error" in (tool.get_attribute("class") or "")
    highlighted = tool.evaluate("el => getComputedStyle(el).backgroundColor")
    plain = page.locator("#transcript li.rc-input").evaluate("el => getComputedStyle(el).backgroundColor")
    assert highlighted != plain
    assert page.locator('[data-event="text.delta"]').count() == 0
    assert "I could not evaluate 1/0: division by zero." in page.inner_text("#transcript")

    # The trace: every span, as a tree, bars on one axis.
    rows = page.locator("#trace details.rc-span")
    assert rows.count() == spans >= 5
    depths = [int(rows.nth(i).get_attribute("data-depth") or 0) for i in range(rows.count())]
    assert depths[0] == 0 and max(depths) >= 3
    track = page.locator("#trace details.rc-span").first.locator(".rc-track").bounding_box()
    root_bar = page.locator("#trace details.rc-span").first.locator(".rc-bar").bounding_box()
    assert root_bar["width"] > track["width"] * 0.9  # the root span covers the trace
    assert "0" in page.inner_text("#trace .rc-axis") and "ms" in page.inner_text("#trace .rc-axis")
    assert height(page) <= MAX_RUN_PAGE_HEIGHT, height(page)

    # A click on the tool's span shows its input and output, marked as an error.
    function = page.locator('#trace details.rc-span[data-kind="function"]')
    assert "rc-error" in (function.get_attribute("class") or "")
    assert not function.locator(".rc-span-input").is_visible()
    function.locator("summary").click()
    assert '"expression": "1/0"' in function.locator(".rc-span-input").inner_text()
    assert function.locator(".rc-span-output").inner_text() == "error: division by zero"
    generation = page.locator('#trace details.rc-span[data-kind="generation"]').first
    generation.locator("summary").click()
    assert "What is 1/0?" in generation.locator(".rc-span-input").inner_text()
    assert "input_tokens" in generation.inner_text() and "cost (USD)" in generation.inner_text()
    screenshot(page, "run-page.png", full_page=True)

    # The admin's dark theme applies (the page uses its colour variables).
    page.emulate_media(color_scheme="dark")
    assert tool.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(87, 8, 8)"  # --message-error-bg
    assert page.evaluate("getComputedStyle(document.querySelector('#run-header')).backgroundColor") == "rgb(33, 33, 33)"
    page.screenshot(path=str(tmp_path / "run-page-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")

    # The audit trail.
    audit = page.inner_text("#audit")
    assert "run.created" in audit and "run.started" in audit and "run.succeeded" in audit


def test_a_typical_run_fits_in_two_screens(harness, alice, page):
    done = finish(harness, alice, "What is 6 * 7?")
    page.goto(run_page(harness, done["id"]))
    assert page.inner_text("#transcript").count("6 * 7 = 42") == 1
    assert page.locator("#run-error-summary").count() == 0
    assert height(page) <= MAX_RUN_PAGE_HEIGHT, height(page)


def test_retry_makes_a_linked_run_that_succeeds(harness, alice, page):
    original = finish(harness, alice, "What is 1/0?")
    page.goto(run_page(harness, original["id"]))
    page.click("#retry-run")
    page.wait_for_selector("#run-retry-of")
    assert page.inner_text("#run-retry-of") == original["id"]
    assert f"Retrying run {original['id']} as" in page.inner_text("ul.messagelist")
    retry_id = page.inner_text(".rc-id")
    assert retry_id != original["id"]
    retry = harness.wait_for(alice, retry_id, ("succeeded", "failed"))
    assert retry["status"] == "succeeded" and "division by zero" in retry["output"]
    assert retry["session_id"] == original["session_id"]
    page.reload()
    assert page.inner_text("#run-status") == "SUCCEEDED"
    page.goto(run_page(harness, original["id"]))
    assert page.inner_text(".run-retry") == retry_id
    assert "run.retried" in page.inner_text("#audit")


def test_cancel_stops_a_slow_run_from_its_page(harness, alice, page):
    slow = start(alice, " ".join(["word"] * 400), agent="assistant")
    assert harness.wait_for(alice, slow["id"], ("running",))["status"] == "running"
    page.goto(run_page(harness, slow["id"]))
    assert page.locator("#retry-run").count() == 0
    page.click("#cancel-run")
    page.wait_for_selector("#run-status.rc-status-cancelled")
    assert f"Cancelled run {slow['id']}." in page.inner_text("ul.messagelist")
    assert "cancelled by operator admin" in page.inner_text("#run-error")
    assert alice.get(f"/api/runs/{slow['id']}").json()["status"] == "cancelled"
    assert page.locator("#cancel-run").count() == 0 and page.locator("#retry-run").count() == 1


def test_the_run_list_filters_on_tools_and_tool_errors(harness, alice, page):
    broken = finish(harness, alice, "What is 5/0?")
    fine = finish(harness, alice, "What is 5 + 5?")
    text = finish(harness, alice, "count my words", agent="assistant")
    page.goto(f"{harness.base_url}/admin/runs/run/")
    row = page.locator("#result_list tr", has_text=fine["id"])
    assert "What is 5 + 5?" in row.inner_text()
    page.click("text=Had a tool error")
    page.wait_for_url("**tool_error=yes**")
    listed = page.inner_text("#result_list")
    assert broken["id"] in listed and fine["id"] not in listed and text["id"] not in listed
    page.click("#toggle-nav-sidebar")  # room for the list at 1280 px
    screenshot(page, "run-list.png", full_page=False)
    page.click("#toggle-nav-sidebar")
    page.goto(f"{harness.base_url}/admin/runs/run/")
    page.locator("#changelist-filter a", has_text="text_stats").click()
    page.wait_for_url("**tool=text_stats**")
    listed = page.inner_text("#result_list")
    assert text["id"] in listed and fine["id"] not in listed and broken["id"] not in listed
    # Sorted by duration, longest first (the 4th sortable column from the right is duration).
    page.goto(f"{harness.base_url}/admin/runs/run/?o=-8")
    assert page.locator("#result_list th.sorted").first.inner_text().strip().lower().startswith("duration")


def test_a_session_reads_as_its_conversation(harness, alice, page):
    first = finish(harness, alice, "What is 2 + 2?")
    second = finish(harness, alice, "And 1/0?", session_id=first["session_id"])
    third = finish(harness, alice, "And 3 * 3?", session_id=first["session_id"])
    page.goto(run_page(harness, first["id"]))
    page.click("#run-session")
    page.wait_for_selector("#conversation")
    turns = page.locator("#conversation li.rc-turn")
    assert [turns.nth(i).get_attribute("data-run") for i in range(turns.count())] == [
        first["id"],
        second["id"],
        third["id"],
    ]
    assert "2 + 2 = 4" in turns.nth(0).inner_text() and "calculate" in turns.nth(0).inner_text()
    assert "division by zero" in turns.nth(1).inner_text()
    assert "rc-error" in (turns.nth(1).locator(".rc-tool").get_attribute("class") or "")
    screenshot(page, "session.png", full_page=True)
    turns.nth(2).locator(f"text={third['id']}").click()
    page.wait_for_selector("#run-header")
    assert page.inner_text(".rc-id") == third["id"]
    page.goto(f"{harness.base_url}/admin/runs/session/?q={first['session_id']}")
    assert "What is 2 + 2?" in page.inner_text("#result_list")


def test_a_sandbox_run_shows_its_commands_and_artifacts(harness, alice, page, tmp_path):
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is not installed: run `make sandbox-deps`")
    text = (
        "```sh\nmkdir -p outputs && echo console > outputs/hello.txt && echo made\n```\n```sh\necho oops; exit 3\n```"
    )
    done = finish(harness, alice, text, agent="coder")
    page.goto(run_page(harness, done["id"]))
    commands = page.locator("#sandbox-commands tbody tr")
    assert commands.count() == 2
    assert "made" in commands.nth(0).inner_text() and commands.nth(0).locator(".rc-exit").inner_text() == "0"
    assert commands.nth(1).locator(".rc-exit").inner_text() == "3"
    assert "rc-error" in (commands.nth(1).get_attribute("class") or "")
    assert "sbx_" in page.inner_text("#sandbox")
    link = page.locator("#artifacts a.artifact-download")
    assert "hello.txt" in page.inner_text("#artifacts")
    assert httpx.get(link.get_attribute("href"), timeout=10).text == "console\n"
    transcript = page.inner_text("#transcript")
    assert "sandbox.started" in transcript and "sandbox.stopped" in transcript
    page.screenshot(path=str(tmp_path / "sandbox-run.png"), full_page=True)
