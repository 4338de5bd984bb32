"""Limits per API key against the real harness: requests per minute and open streams.

Each test runs twice: with the counts in Redis (shared by every web process), and in the
one web process's memory (no Redis).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import cast

import httpx
import pytest
from websockets.sync.client import connect
from websockets.sync.connection import Connection

from tests.integration.harness import Harness
from tests.integration.test_streams import post_streamed, redis_reachable, sse_read, ws_read, ws_url

pytestmark = pytest.mark.integration

LIMIT, CAP = 10, 2
BAD_KEY = "hk_" + "x" * 43


def started(request, tmp_path_factory, name: str, **env: str) -> Generator[Harness]:
    if request.param == "redis":
        if not redis_reachable():
            pytest.skip("no Redis on 127.0.0.1:6379: the Redis path is not tested here (CI machines run one)")
        env["REDIS_URL"] = "redis://127.0.0.1:6379/3"
    h = Harness(tmp_path_factory.mktemp(f"{name}-{request.param}"), **env).start()
    yield h
    h.close()


@pytest.fixture(scope="module", params=["database", "redis"])
def harness(request, tmp_path_factory):
    yield from started(
        request,
        tmp_path_factory,
        "rate-limits",
        HARNESS_API_RATE_LIMIT=str(LIMIT),
        HARNESS_MAX_STREAMS_PER_KEY=str(CAP),
    )


@pytest.fixture(scope="module", params=["database", "redis"])
def streams_harness(request, tmp_path_factory):
    """The stream cap alone: the test retries while a closed stream's slot frees, and with a
    request limit as low as LIMIT those retries would use up the key's minute (429 all the same)."""
    yield from started(
        request, tmp_path_factory, "stream-caps", HARNESS_API_RATE_LIMIT="0", HARNESS_MAX_STREAMS_PER_KEY=str(CAP)
    )


def fresh_minute(room: float = 15) -> None:
    """Wait for the next clock minute when less than `room` seconds of this one are left: the
    limit counts per clock minute, and a test's requests must fall in one."""
    left = 60 - time.time() % 60
    if left < room:
        time.sleep(left + 0.1)


def assert_retry_after(response: httpx.Response, *, naming: str) -> int:
    assert response.status_code == 429
    assert naming in response.json()["detail"]
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


def test_the_request_after_the_limit_gets_429_and_another_key_is_unaffected(harness):
    first, second, mallory = harness.api_key("alice"), harness.api_key("alice"), harness.api_key("mallory")
    fresh_minute()
    with harness.client(BAD_KEY) as bad:
        for _ in range(LIMIT + 2):  # a bad key is nobody's request: it counts for no one
            assert bad.get("/api/runs").status_code == 401
    alice = harness.client(first)
    # Sync (list_runs) and async (get_run) operations count alike.
    answers = [alice.get("/api/runs" if n % 2 else "/api/runs/run_missing").status_code for n in range(LIMIT)]
    assert answers == [404, 200] * (LIMIT // 2)
    refused = alice.get("/api/runs")
    retry_after = assert_retry_after(refused, naming="HARNESS_API_RATE_LIMIT")
    assert f"{LIMIT} requests per minute" in refused.json()["detail"]
    assert abs(retry_after - (60 - time.time() % 60)) <= 2  # the rest of the clock minute
    assert_retry_after(alice.get("/api/runs/run_missing"), naming="HARNESS_API_RATE_LIMIT")
    created = alice.post("/api/runs", json={"input": "1+1", "agent": "calculator", "model": "offline"})
    assert_retry_after(created, naming="HARNESS_API_RATE_LIMIT")
    sse = httpx.get(f"{harness.base_url}/api/runs/run_missing/events", headers={"Authorization": f"Bearer {first}"})
    assert_retry_after(sse, naming="HARNESS_API_RATE_LIMIT")
    # While alice's first key waits: her second key has its own LIMIT, and so has mallory.
    with harness.client(second) as other:
        assert [other.get("/api/runs").status_code for _ in range(LIMIT)] == [200] * LIMIT
        assert other.get("/api/runs").status_code == 429
    assert harness.client(mallory).get("/api/runs").status_code == 200
    assert harness.client(BAD_KEY).get("/api/runs").status_code == 401  # still 401, never 429
    written = "from runs.models import Run; print(json.dumps(Run.objects.filter(owner__username='alice').count()))"
    assert harness.sql(written) == 0  # a refused request writes nothing


def test_concurrent_requests_never_pass_the_limit(harness):
    key = harness.api_key("carol")
    fresh_minute()
    with harness.client(key) as client, ThreadPoolExecutor(max_workers=12) as pool:
        paths = ["/api/runs", "/api/runs/run_missing"] * (2 * LIMIT)
        statuses = list(pool.map(lambda path: client.get(path).status_code, paths))
    assert len([status for status in statuses if status != 429]) == LIMIT
    assert statuses.count(429) == 3 * LIMIT


def idle_run(harness: Harness, username: str) -> str:
    """A queued run that no worker picks up (written without being enqueued): its streams stay open."""
    return harness.sql(
        "from django.contrib.auth.models import User\n"
        "from runs import events\n"
        "from runs.models import Run, Session\n"
        f"owner = User.objects.get(username='{username}')\n"
        "run = Run.objects.create(owner=owner, session=Session.objects.create(owner=owner), agent='calculator', model='offline', input='1+1')\n"
        "events.events_append(run_id=run.id, events=[('run.queued', {'status': 'queued'})])\n"
        "print(json.dumps(run.id))"
    )


def open_sse(stack: ExitStack, harness: Harness, run_id: str, key: str) -> ExitStack:
    """An SSE stream held open (its first event read); closing the returned stack closes it."""
    held = ExitStack()
    stack.enter_context(held)
    client = held.enter_context(httpx.Client(timeout=10))
    response = held.enter_context(
        client.stream("GET", f"{harness.base_url}/api/runs/{run_id}/events", headers={"Authorization": f"Bearer {key}"})
    )
    assert response.status_code == 200
    lines = cast(Generator[str], response.iter_lines())
    # Held until the stack closes: a dropped line iterator would close the connection.
    held.callback(lines.close)
    for line in lines:
        if line == "event: run.queued":
            break
    return held


def open_ws(stack: ExitStack, url: str, key: str | None = None) -> Connection:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    socket_ = stack.enter_context(connect(url, additional_headers=headers, open_timeout=10))
    assert json.loads(socket_.recv(timeout=10))["type"] == "run.queued"
    return socket_


def eventually[T](opening: Callable[[], T], timeout: float = 10) -> T:
    """The server notices a closed stream within moments; until then the cap still holds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return opening()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_open_streams_are_capped_per_key_and_a_closed_one_frees_its_slot(streams_harness):
    harness = streams_harness
    first, second = harness.api_key("dave"), harness.api_key("dave")
    run_id = idle_run(harness, "dave")
    events_url = f"{harness.base_url}/api/runs/{run_id}/events"
    with ExitStack() as stack:
        sse = open_sse(stack, harness, run_id, first)
        socket_ = open_ws(stack, ws_url(harness, run_id), first)
        # CAP streams open: the next SSE gets 429, the next WebSocket is closed with 4429.
        refused = httpx.get(events_url, headers={"Authorization": f"Bearer {first}"})
        assert_retry_after(refused, naming="HARNESS_MAX_STREAMS_PER_KEY")
        assert ws_read(ws_url(harness, run_id), headers={"Authorization": f"Bearer {first}"}) == ([], 4429)
        # A stream token counts for the key that asked for it.
        token = harness.client(first).post(f"/api/runs/{run_id}/stream-token").json()["token"]
        assert ws_read(ws_url(harness, run_id, token=token)) == ([], 4429)
        assert httpx.get(events_url, params={"token": token}).status_code == 429
        # The user's other key has its own cap.
        other_token = harness.client(second).post(f"/api/runs/{run_id}/stream-token").json()["token"]
        open_ws(stack, ws_url(harness, run_id, token=other_token))
        open_sse(stack, harness, run_id, second)
        assert ws_read(ws_url(harness, run_id, token=other_token)) == ([], 4429)
        # Closing a stream frees its slot, for the other kind too.
        sse.close()
        eventually(lambda: open_ws(stack, ws_url(harness, run_id), first))
        assert ws_read(ws_url(harness, run_id), headers={"Authorization": f"Bearer {first}"}) == ([], 4429)
        socket_.close()
        eventually(lambda: open_sse(stack, harness, run_id, first))
        # Cancelling the run ends every stream with its final event, and each gives its slot back.
        assert harness.client(second).post(f"/api/runs/{run_id}/cancel").status_code == 200

    def read_whole_log() -> None:
        events, status, _ = sse_read(harness, run_id, key=first)
        assert status == 200 and [event["type"] for event in events] == ["run.queued", "run.cancelled"]

    # The streams just ended give their slots back within moments (a loaded machine is slower).
    for _ in range(CAP + 1):
        eventually(read_whole_log)


def test_a_run_posted_for_its_stream_counts_as_a_stream_and_over_the_cap_is_not_made(streams_harness):
    harness = streams_harness
    key = harness.api_key("erin")
    run_id = idle_run(harness, "erin")
    session_id = harness.client(key).get(f"/api/runs/{run_id}").json()["session_id"]
    body = {"input": "2+2", "agent": "calculator", "model": "offline"}
    # A POST refused after its slot was taken (the session has a run in progress) gives it back.
    for _ in range(CAP + 1):
        busy, _ = post_streamed(harness, key, {**body, "session_id": session_id})
        assert busy.status_code == 409, busy.text
    with ExitStack() as stack:
        for _ in range(CAP):
            open_sse(stack, harness, run_id, key)
        made = len(harness.client(key).get("/api/runs").json()["items"])
        refused, events = post_streamed(harness, key, body)
        assert_retry_after(refused, naming="HARNESS_MAX_STREAMS_PER_KEY")
        assert events == [] and len(harness.client(key).get("/api/runs").json()["items"]) == made
        # Without asking for the stream the same key may still start runs.
        assert harness.client(key).post("/api/runs", json=body).status_code == 202

    def streamed() -> None:
        answer, events = post_streamed(harness, key, body)
        assert answer.status_code == 200 and events[-1]["type"] == "run.succeeded"

    eventually(streamed)
