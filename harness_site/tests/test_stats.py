"""The fleet's figures (harness_site/stats.py), the dashboard on the admin index and GET /api/stats."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.services import Actor
from conftest import Principal, make_principal, make_run
from execution.beats import worker_beat
from harness_site.stats import (
    WINDOWS,
    UnknownWindow,
    fleet_stats,
    percentile_rank,
    window_bounds,
    window_get,
)
from runs.models import Run
from runs.services import RunOutcome, run_cancel, run_claim, run_finish
from sandboxes.models import Sandbox

pytestmark = pytest.mark.django_db

MAX_STATS_QUERIES = 8


def finished(
    owner: Principal,
    *,
    at: datetime,
    seconds: float = 1.0,
    status: str = "succeeded",
    error: str = "",
    tokens: int = 0,
    cost: Decimal | None = None,
    agent: str = "calculator",
    model: str = "offline",
) -> Run:
    """A run taken through the services (created, claimed, finished), then placed at `at`."""
    run = make_run(owner, agent=agent)
    run_claim(run_id=run.pk, worker_id="w:test")
    outcome = RunOutcome(
        status=status,
        output="done" if status == "succeeded" else None,
        error=error,
        usage={"total_tokens": tokens},
        cost_usd=cost,
    )
    assert run_finish(run_id=run.pk, worker_id="w:test", outcome=outcome)
    Run.objects.filter(pk=run.pk).update(
        created_at=at, started_at=at, finished_at=at + timedelta(seconds=seconds), model=model
    )
    return Run.objects.get(pk=run.pk)


def many_runs(owner: Principal, count: int, *, at: datetime) -> None:
    """Volume for the query-count pins: copies of one real run, across statuses, agents and models."""
    template = finished(owner, at=at, status="failed", error="boom")
    statuses = ["succeeded", "failed", "cancelled", "queued", "running", "awaiting_approval"]
    Run.objects.bulk_create(
        [
            Run(
                owner_id=template.owner_id,
                session_id=template.session_id,
                agent=("calculator", "assistant", "scribe")[i % 3],
                model=("offline", "gpt-x")[i % 2],
                input="copy",
                status=statuses[i % len(statuses)],
                error="copied\nfailure" if i % 6 == 1 else "",
                total_tokens=i,
                cost_usd=Decimal("0.000100") if i % 4 else None,
                worker_id=f"w:{i % 5}" if statuses[i % 6] == "running" else "",
                created_at=at,
                started_at=at,
                finished_at=at + timedelta(seconds=i % 17),
            )
            for i in range(count - 1)
        ]
    )


def test_windows_are_named_and_aligned_on_utc_intervals():
    assert window_get(None).name == "24h"
    assert [window.intervals for window in WINDOWS.values()] == [12, 24, 28]
    with pytest.raises(UnknownWindow, match="window: one of 1h, 24h, 7d"):
        window_get("30d")
    now = datetime(2026, 1, 7, 10, 7, 30, tzinfo=UTC)
    assert window_bounds(WINDOWS["1h"], now) == (
        datetime(2026, 1, 7, 9, 10, tzinfo=UTC),
        datetime(2026, 1, 7, 10, 10, tzinfo=UTC),
    )
    assert window_bounds(WINDOWS["24h"], now) == (
        datetime(2026, 1, 6, 11, tzinfo=UTC),
        datetime(2026, 1, 7, 11, tzinfo=UTC),
    )
    assert window_bounds(WINDOWS["7d"], now) == (
        datetime(2025, 12, 31, 12, tzinfo=UTC),
        datetime(2026, 1, 7, 12, tzinfo=UTC),
    )


def test_the_api_offers_the_same_windows():
    from typing import get_args

    from harness_site.stats import DEFAULT_WINDOW
    from harness_site.stats_api import StatsQuery, WindowName

    assert get_args(WindowName) == tuple(WINDOWS)
    assert StatsQuery().window == DEFAULT_WINDOW


def test_no_two_api_schemas_share_a_name():
    """The OpenAPI document keys schemas by class name: a second `UsageOut` silently replaces the first."""
    from ninja import Schema

    import harness_site.api  # noqa: F401 (mounts every router, importing every schema)

    seen: dict[str, str] = {}
    todo = list(Schema.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] in ("ninja", "pydantic"):
            continue
        where = f"{cls.__module__}.{cls.__qualname__}"
        assert seen.setdefault(cls.__name__, where) == where, f"{cls.__name__}: {seen[cls.__name__]} and {where}"


def test_percentiles_are_nearest_rank():
    values = sorted([5, 1, 9, 3, 7, 2, 8, 4, 6, 10])
    assert values[percentile_rank(50, 10)] == 5
    assert values[percentile_rank(95, 10)] == 10
    assert percentile_rank(50, 1) == percentile_rank(95, 1) == 0


@pytest.fixture(params=["any moment", "an interval's first second"])
def clock(request, monkeypatch) -> None:
    """Now, or a clock moved to 300 ms into the next 5-minute interval (where now - 1 s is the interval before)."""
    if request.param == "any moment":
        return
    real = timezone.now
    epoch = int(real().timestamp())
    moved = datetime.fromtimestamp(epoch - epoch % 300 + 300, tz=UTC) + timedelta(milliseconds=300)
    offset = moved - real()
    monkeypatch.setattr(timezone, "now", lambda: real() + offset)


def test_fleet_stats_sum_the_window(alice, clock):
    now = timezone.now()
    start, end = window_bounds(WINDOWS["1h"], now)
    first = start + timedelta(minutes=1)  # the first 5-minute interval
    finished(alice, at=first, seconds=1, tokens=100, cost=Decimal("0.001"))
    finished(alice, at=first, seconds=2, tokens=50, cost=Decimal("0.0005"), agent="assistant")
    finished(alice, at=start + timedelta(minutes=6), seconds=10, tokens=10, model="gpt-x")
    failure = finished(
        alice, at=start + timedelta(minutes=7), seconds=5, status="failed", error="\nboom: division\nmore"
    )
    cancelled = make_run(alice)
    run_cancel(run=cancelled, actor=Actor.system("tests"))
    queued = make_run(alice)
    running = make_run(alice)
    run_claim(run_id=running.pk, worker_id="w:live")
    waiting = make_run(alice)
    Run.objects.filter(pk=waiting.pk).update(status=Run.Status.AWAITING_APPROVAL)
    lost = make_run(alice)
    run_claim(run_id=lost.pk, worker_id="w:gone")
    worker_beat(worker_id="w:live", concurrency=8, inflight=1)
    old = finished(alice, at=start - timedelta(minutes=1), status="failed", error="too old")
    Sandbox.objects.create(run=running, provider="local", status="live", deadline=now + timedelta(minutes=5))
    Sandbox.objects.create(run=old, provider="local", status="stopped", deadline=now)
    # In the current (last) interval, even when `now` is in its first second.
    now_created = max(now - timedelta(seconds=1), end - WINDOWS["1h"].interval)
    Run.objects.filter(pk__in=[cancelled.pk, queued.pk, running.pk, waiting.pk, lost.pk]).update(created_at=now_created)

    stats = fleet_stats(window=WINDOWS["1h"], now=now)

    assert stats["window"] == "1h" and stats["interval_seconds"] == 300
    assert (stats["start"], stats["end"]) == (start, end)
    assert stats["runs"] == 9  # not the run created before the window
    assert stats["by_status"] == {
        "succeeded": 3,
        "failed": 1,
        "cancelled": 1,
        "running": 2,
        "queued": 1,
        "awaiting_approval": 1,
    }
    assert stats["error_rate"] == 0.25
    # Durations of the succeeded and failed runs: 1, 2, 5, 10 s.
    assert stats["duration"] == {"runs": 4, "p50_seconds": 2.0, "p95_seconds": 10.0}
    intervals = stats["intervals"]
    assert len(intervals) == 12 and sum(i["total"] for i in intervals) == 9
    assert intervals[0]["counts"]["succeeded"] == 2 and intervals[0]["start"] == start
    assert intervals[1]["counts"] == {**dict.fromkeys(stats["by_status"], 0), "succeeded": 1, "failed": 1}
    assert intervals[-1]["total"] == 5
    assert stats["tokens"] == 160 and stats["cost_usd"] == "0.001500" and stats["unpriced_runs"] == 0
    by_agent = {row["name"]: row for row in stats["by_agent"]}
    assert by_agent["calculator"]["runs"] == 8 and by_agent["calculator"]["cost_usd"] == "0.001000"
    assert by_agent["calculator"]["failed"] == 1
    assert by_agent["assistant"] == {
        "name": "assistant",
        "runs": 1,
        "failed": 0,
        "tokens": 50,
        "cost_usd": "0.000500",
        "unpriced_runs": 0,
    }
    assert [row["name"] for row in stats["by_agent"]] == ["calculator", "assistant"]  # by cost
    by_model = {row["name"]: row for row in stats["by_model"]}
    assert by_model["gpt-x"]["runs"] == 1 and by_model["gpt-x"]["tokens"] == 10
    assert by_model["offline"]["runs"] == 8
    assert stats["queue_depth"] == 1 and stats["pending_approvals"] == 1 and stats["running"] == 2
    workers = {w["worker_id"]: w for w in stats["workers"]}
    assert workers["w:live"]["live"] and workers["w:live"]["running"] == 1 and workers["w:live"]["concurrency"] == 8
    assert not workers["w:gone"]["live"] and workers["w:gone"]["running"] == 1
    assert stats["live_sandboxes"] == {"total": 1, "by_provider": {"local": 1}}
    assert stats["latest_failures"] == [
        {
            "id": failure.pk,
            "agent": "calculator",
            "model": "offline",
            "error": "boom: division",
            "finished_at": failure.finished_at,
            "url": reverse("admin:runs_run_change", args=[quote(failure.pk)]),
            "promote_url": reverse("admin:evals_goldencase_promote", args=[quote(failure.pk)]),
        }
    ]


def test_an_empty_window_has_no_rates(db):
    stats = fleet_stats(window=WINDOWS["7d"])
    assert stats["runs"] == 0 and stats["error_rate"] is None
    assert stats["duration"] == {"runs": 0, "p50_seconds": None, "p95_seconds": None}
    assert len(stats["intervals"]) == 28 and stats["latest_failures"] == [] and stats["cost_usd"] == "0.000000"


def test_the_latest_failures_are_capped_and_newest_first(alice, settings):
    settings.HARNESS_DASHBOARD_FAILURES = 2
    now = timezone.now()
    runs = [finished(alice, at=now - timedelta(minutes=10 - i), status="failed", error=f"e{i}") for i in range(3)]
    failures = fleet_stats(window=WINDOWS["1h"], now=now)["latest_failures"]
    assert [f["id"] for f in failures] == [runs[2].pk, runs[1].pk]


def _queries(call) -> int:
    with CaptureQueriesContext(connection) as captured:
        call()
    return len(captured)


def test_the_query_count_does_not_grow_with_runs(alice):
    now = timezone.now()
    worker_beat(worker_id="w:1", concurrency=4, inflight=1)
    many_runs(alice, 5, at=now - timedelta(minutes=30))
    few = _queries(lambda: fleet_stats(window=WINDOWS["24h"], now=now))
    many_runs(alice, 300, at=now - timedelta(minutes=20))
    stats: dict = {}
    many = _queries(lambda: stats.update(fleet_stats(window=WINDOWS["24h"], now=now)))
    assert few == many <= MAX_STATS_QUERIES
    assert stats["runs"] == 305 and len(stats["latest_failures"]) == 10


# --- The dashboard on the admin index ---------------------------------------------


def _index_queries(client: Client, path: str = "/admin/") -> tuple[int, str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200
    return len(captured), response.content.decode()


def test_the_index_shows_the_dashboard_with_a_fixed_query_count(alice, operator):
    client = Client()
    client.force_login(operator)
    now = timezone.now()
    many_runs(alice, 5, at=now - timedelta(minutes=30))
    few, _ = _index_queries(client)
    many_runs(alice, 300, at=now - timedelta(minutes=20))
    many, page = _index_queries(client)
    # The session, the user and the figures; the app list reads nothing (a superuser here).
    assert few == many <= MAX_STATS_QUERIES + 3
    assert 'id="fleet-dashboard"' in page and '<svg class="chart"' in page
    failure = Run.objects.filter(status="failed").order_by("-finished_at", "-id").first()
    assert failure is not None and failure.pk in page
    assert page.count('class="button promote-link"') == 10
    assert reverse("admin:evals_goldencase_promote", args=[quote(failure.pk)]) in page
    assert re.search(r'id="tile-runs"><span class="value">305<', page)
    assert "Site administration" not in page or "Operations" in page  # the app list follows


def test_the_window_switches_and_a_bad_one_falls_back(operator):
    client = Client()
    client.force_login(operator)
    page = client.get("/admin/?window=7d").content.decode()
    assert "<strong>7d</strong>" in page and '<a href="?window=1h">1h</a>' in page
    page = client.get("/admin/?window=<b>").content.decode()
    assert "window: one of 1h, 24h, 7d, got &#x27;&lt;b&gt;&#x27;; showing 24h." in page
    assert "<strong>24h</strong>" in page


def test_the_dashboard_needs_the_view_permission_and_promote_needs_its_own(alice, viewer):
    finished(alice, at=timezone.now(), status="failed", error="boom")
    plain = User.objects.create_user("plainstaff", password="pw-123456789", is_staff=True)
    plain.user_permissions.set(Permission.objects.filter(codename="view_apikey"))
    client = Client()
    client.force_login(plain)
    count, page = _index_queries(client)
    assert 'id="fleet-dashboard"' not in page
    client.force_login(viewer)
    viewer_count, page = _index_queries(client)
    assert 'id="fleet-dashboard"' in page and "boom" in page and "promote-link" not in page
    assert viewer_count > count  # the figures are only read for those who see them


# --- GET /api/stats --------------------------------------------------------------


def stats_reader() -> Principal:
    """A staff user who may view runs (the dashboard's rule), with an API key."""
    staff = make_principal("staffer", is_staff=True)
    staff.user.user_permissions.add(Permission.objects.get(codename="view_run"))
    return staff


def test_stats_api_is_for_staff_keys_only(api, alice):
    staff = stats_reader()
    finished(alice, at=timezone.now(), status="failed", error="boom\nline two", tokens=7)
    assert api.get("/api/stats").status_code == 401
    refused = api.get("/api/stats", who=alice)
    assert refused.status_code == 403 and "staff user" in refused.json()["detail"]
    # Staff alone is not enough: the key's user must be allowed to see runs, as on the dashboard.
    bare = make_principal("bare-staff", is_staff=True)
    assert api.get("/api/stats", who=bare).status_code == 403
    response = api.get("/api/stats", who=staff)
    assert response.status_code == 200
    body = response.json()
    assert body["window"] == "24h" and len(body["intervals"]) == 24
    assert body["by_status"]["failed"] == 1 and body["error_rate"] == 1.0 and body["tokens"] == 7
    assert body["latest_failures"][0]["error"] == "boom"
    assert body["latest_failures"][0]["promote_url"].startswith("/admin/evals/goldencase/promote/")
    assert api.get("/api/stats", who=staff, window="1h").json()["interval_seconds"] == 300
    bad = api.get("/api/stats", who=staff, window="30d")
    assert bad.status_code == 422 and "window" in bad.json()["detail"]


def test_stats_api_has_a_fixed_query_count(api, alice):
    staff = stats_reader()
    now = timezone.now()
    many_runs(alice, 5, at=now - timedelta(minutes=30))
    api.get("/api/stats", who=staff)  # a key's first use also records when it was last used
    few = _queries(lambda: api.get("/api/stats", who=staff))
    many_runs(alice, 300, at=now - timedelta(minutes=20))
    response = None

    def call() -> None:
        nonlocal response
        response = api.get("/api/stats", who=staff)

    many = _queries(call)
    assert few == many and response is not None and response.json()["runs"] == 305
