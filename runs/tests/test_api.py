from __future__ import annotations

import pytest
from django.test import override_settings
from django_q.models import OrmQ

from audit.models import AuditLog
from conftest import make_run
from runs.models import Run, RunEvent

# The run endpoints are async: their database work runs on other threads, so the
# data they read must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"input": "What is 2 + 2?", "agent": "calculator", "model": "offline"}


def test_it_creates_a_queued_run_without_running_it(api, alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/runs", GOOD, who=alice)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["id"].startswith("run_") and body["session_id"].startswith("sess_")
    assert (body["agent"], body["model"]) == ("calculator", "offline")
    assert body["created_at"] and body["output"] is None and body["started_at"] is None
    run = Run.objects.get(pk=body["id"])
    assert run.owner == alice.user
    assert list(run.events.values_list("seq", "type")) == [(1, "run.queued")]
    assert AuditLog.objects.filter(action="run.created", target_id=run.pk, actor_type="api_key").count() == 1
    # Handed to the worker queue, not executed by the route handler.
    assert OrmQ.objects.count() == 1


def test_without_a_key_runs_default_to_the_offline_model(api, alice):
    response = api.post("/api/runs", {"input": "hi"}, who=alice)
    assert response.status_code == 202
    assert response.json()["model"] == "offline"
    assert response.json()["agent"] == "assistant"


@override_settings(OPENAI_API_KEY="sk-test-key", HARNESS_MODEL="gpt-5.4-mini")
def test_with_a_key_it_defaults_to_the_configured_model(api, alice):
    response = api.post("/api/runs", {"input": "hi"}, who=alice)
    assert response.status_code == 202 and response.json()["model"] == "gpt-5.4-mini"


@override_settings(HARNESS_MODEL="gpt-5.4-mini", HARNESS_ALLOWED_MODELS=["gpt-5.4-mini", "offline"])
def test_a_model_that_needs_the_missing_key_is_refused_before_anything_is_written(api, alice):
    for body in ({"input": "hi"}, {"input": "hi", "model": "gpt-5.4-mini"}):
        response = api.post("/api/runs", body, who=alice)
        assert response.status_code == 422
        assert response.json()["detail"] == (
            "model: model 'gpt-5.4-mini' needs OPENAI_API_KEY, which is not set on this server; "
            'set it, or run with "model": "offline"'
        )
    assert not Run.objects.exists()
    assert api.post("/api/runs", {"input": "hi", "model": "offline"}, who=alice).status_code == 202


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Token abc"}, "malformed Authorization header"),
        ({"Authorization": "Bearer hk_not-a-real-key-at-all-000000"}, "invalid or revoked API key"),
    ],
)
def test_it_rejects_requests_without_a_valid_key(api, alice, headers, message):
    for method, path in (("post", "/api/runs"), ("get", "/api/runs"), ("get", "/api/agents")):
        if method == "post":
            response = api.client.post(path, GOOD, content_type="application/json", headers=headers)
        else:
            response = api.client.get(path, headers=headers)
        assert response.status_code == 401
        assert message in response.json()["detail"]
    assert Run.objects.count() == 0


def test_a_revoked_key_is_refused(api, alice):
    from accounts.models import ApiKey
    from accounts.services import apikey_revoke
    from audit.services import Actor

    apikey_revoke(api_key=ApiKey.objects.get(user=alice.user), actor=Actor.system("tests"))
    response = api.post("/api/runs", GOOD, who=alice)
    assert response.status_code == 401
    assert response.json() == {"detail": "invalid or revoked API key"}


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"input": "", "agent": "calculator"}, "input", "must not be empty"),
        ({"input": "   \n", "agent": "calculator"}, "input", "must not be empty"),
        ({"agent": "calculator"}, "input", "required"),
        ({"input": 42}, "input", "string"),
        ({"input": ["a"]}, "input", "string"),
        ({"input": "hi", "agent": "nope"}, "agent", "valid agents: assistant, calculator, coder, refunds, scribe"),
        ({"input": "hi", "agent": 3}, "agent", "string"),
        ({"input": "hi", "model": "gpt-0-fake"}, "model", "allowed models: offline"),
        ({"input": "hi", "session_id": "run_123"}, "session_id", "sess_"),
    ],
)
def test_it_rejects_bad_input_naming_the_field(api, alice, body, field, fragment):
    response = api.post("/api/runs", body, who=alice)
    assert response.status_code == 422, response.content
    errors = response.json()["errors"]
    assert any(error["loc"][-1] == field and fragment in error["msg"] for error in errors), errors
    # One shape for every error: `detail` is a sentence naming the field, as for a 404 or a 409.
    assert f"{field}: " in response.json()["detail"], response.json()
    assert Run.objects.count() == 0


def test_malformed_json_is_a_422(api, alice):
    response = api.post("/api/runs", who=alice, raw='{"input": "hi",')
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body"]
    assert "malformed JSON" in response.json()["errors"][0]["msg"]
    assert Run.objects.count() == 0


@override_settings(HARNESS_MAX_INPUT_CHARS=100)
def test_input_over_the_limit_is_a_413_naming_input(api, alice):
    response = api.post("/api/runs", {**GOOD, "input": "x" * 101}, who=alice)
    assert response.status_code == 413
    assert response.json()["detail"].startswith("input: 101 characters is over the limit of 100")
    assert Run.objects.count() == 0


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2048)
def test_a_body_over_the_request_limit_is_a_413(api, alice):
    response = api.post("/api/runs", {**GOOD, "input": "x" * 5000}, who=alice)
    assert response.status_code == 413
    assert "request body" in response.json()["detail"]
    assert Run.objects.count() == 0


def test_get_run_shows_the_callers_run(api, alice):
    run = make_run(alice)
    body = api.get(f"/api/runs/{run.pk}", who=alice).json()
    assert body["id"] == run.pk and body["status"] == "queued"
    assert body["usage"] == {
        "requests": 0,
        "input_tokens": 0,
        "cached_input_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "total_tokens": 0,
    }
    assert body["cost_usd"] is None and body["unpriced"] is False
    assert body["limits"]["max_turns"] == 10 and body["limits"]["max_cost_usd"] == "1.00"
    assert set(body) >= {"status", "output", "error", "usage", "started_at", "finished_at"}


def test_an_outsider_gets_404_for_someone_elses_run(api, alice, outsider):
    run = make_run(alice)
    for response in (
        api.get(f"/api/runs/{run.pk}", who=outsider),
        api.post(f"/api/runs/{run.pk}/cancel", who=outsider),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": f"run {run.pk!r} not found"}
    missing = api.get("/api/runs/run_00000000000000000000000000", who=outsider)
    assert missing.json()["detail"].replace("run_00000000000000000000000000", run.pk) == f"run {run.pk!r} not found"
    assert api.get("/api/runs", who=outsider).json()["items"] == []
    run.refresh_from_db()
    assert run.status == "queued"


def test_an_outsider_cannot_continue_someone_elses_session(api, alice, outsider):
    run = make_run(alice)
    run.status = Run.Status.SUCCEEDED
    run.save(update_fields=["status"])
    response = api.post("/api/runs", {**GOOD, "session_id": run.session_id}, who=outsider)
    assert response.status_code == 404
    assert Run.objects.count() == 1


def test_a_session_with_a_run_in_progress_refuses_another(api, alice):
    run = make_run(alice)
    response = api.post("/api/runs", {**GOOD, "session_id": run.session_id}, who=alice)
    assert response.status_code == 409
    assert run.pk in response.json()["detail"]


def test_list_filters_and_paginates_with_a_cursor(api, alice, outsider, django_assert_max_num_queries):
    runs = [make_run(alice, agent="calculator") for _ in range(3)] + [make_run(alice, agent="assistant", input="hi")]
    make_run(outsider)
    Run.objects.filter(pk=runs[0].pk).update(status=Run.Status.FAILED)
    with django_assert_max_num_queries(3):
        page = api.get("/api/runs", who=alice, limit=2).json()
    assert [item["id"] for item in page["items"]] == [runs[3].pk, runs[2].pk]
    rest = api.get("/api/runs", who=alice, limit=2, cursor=page["next_cursor"]).json()
    assert [item["id"] for item in rest["items"]] == [runs[1].pk, runs[0].pk]
    assert rest["next_cursor"] is None
    assert [i["id"] for i in api.get("/api/runs", who=alice, status="failed").json()["items"]] == [runs[0].pk]
    assert [i["id"] for i in api.get("/api/runs", who=alice, agent="assistant").json()["items"]] == [runs[3].pk]
    by_session = api.get("/api/runs", who=alice, session_id=runs[1].session_id).json()["items"]
    assert [i["id"] for i in by_session] == [runs[1].pk]
    assert api.get("/api/runs", who=alice, status="bogus").status_code == 422
    assert api.get("/api/runs", who=alice, limit=0).status_code == 422


def test_cancel_a_queued_run(api, alice):
    run = make_run(alice)
    response = api.post(f"/api/runs/{run.pk}/cancel", who=alice)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled" and response.json()["finished_at"]
    assert list(run.events.values_list("type", flat=True)) == ["run.queued", "run.cancelled"]
    assert AuditLog.objects.filter(action="run.cancelled", target_id=run.pk).count() == 1


def test_cancelling_a_finished_run_is_a_409(api, alice):
    run = make_run(alice)
    api.post(f"/api/runs/{run.pk}/cancel", who=alice)
    response = api.post(f"/api/runs/{run.pk}/cancel", who=alice)
    assert response.status_code == 409
    assert "already cancelled" in response.json()["detail"]
    assert RunEvent.objects.filter(run=run).count() == 2


def test_agents_lists_the_registry_and_models(api, alice):
    body = api.get("/api/agents", who=alice).json()
    assert [agent["name"] for agent in body["agents"]] == ["assistant", "calculator", "coder", "refunds", "scribe"]
    assert body["agents"][1]["tools"] == ["calculate"] and body["agents"][1]["sandbox"] is False
    assert body["agents"][2]["sandbox"] is True
    assert body["agents"][2]["tools"] == ["exec_command", "write_stdin", "view_image", "apply_patch"]
    assert body["default_model"] == "offline" and body["models"] == ["offline"]
    assert body["openai_configured"] is False


def test_a_new_run_is_written_with_plain_statements_and_its_log_goes_on_from_its_first_event(alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing.models import Budget
    from runs.events import events_append

    Budget.objects.create(user=alice.user, max_concurrent_runs=5)
    with CaptureQueriesContext(connection) as queries:
        run = make_run(alice)
    # The published agents (read once per HARNESS_AGENT_REGISTRY_TTL_SECONDS) and the broker's
    # queue (the ORM broker without Redis) are left out.
    sql = [q["sql"] for q in queries if "execution_publishedagent" not in q["sql"] and "django_q" not in q["sql"]]
    statements = [text.split()[0] for text in sql]
    # The budget row locked, its count of active runs, the session, the run, its first event, its
    # audit row; on Postgres the four INSERTs as one statement.
    assert "SAVEPOINT" not in statements and statements.count("UPDATE") == 0, sql
    assert statements.count("SELECT") == 2, sql
    if connection.vendor == "postgresql":
        assert next(text for text in sql if "billing_budget" in text).endswith("FOR UPDATE")
        assert statements.count("INSERT") == 0 and statements.count("WITH") == 1, sql
        written = next(text for text in sql if text.startswith("WITH"))
        for table in ("runs_session", "runs_run", "runs_runevent", "audit_auditlog"):
            assert f'INSERT INTO "{table}" ' in written, table
    else:
        assert statements.count("INSERT") == 4, sql
    run.refresh_from_db()
    assert run.event_seq == 1 and list(run.events.values_list("seq", "type")) == [(1, "run.queued")]
    events_append(run_id=run.id, events=[("run.started", {}), ("agent.updated", {})])
    assert list(run.events.values_list("seq", flat=True)) == [1, 2, 3]


def test_a_running_runs_batch_of_events_is_numbered_and_written_by_one_statement(alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from runs import services
    from runs.events import events_append

    run = make_run(alice)
    services.run_claim(run_id=run.pk, worker_id="w:1:a")
    before = Run.objects.get(pk=run.pk).event_seq
    batch = [("text.delta", {"delta": "4"}), ("tool.called", {"name": "calculate", "arguments": "{}"})]
    with CaptureQueriesContext(connection) as queries:
        written = events_append(run_id=run.pk, events=batch, require_status="running", require_worker="w:1:a")
    assert [(event["seq"], event["type"]) for event in written] == [
        (before + 1, "text.delta"),
        (before + 2, "tool.called"),
    ]
    if connection.vendor == "postgresql":
        # The numbers taken and the rows written in one statement: no transaction of its own.
        [statement] = [q["sql"] for q in queries]
        assert statement.startswith("WITH") and "UPDATE" in statement and "INSERT INTO" in statement, statement
    stored = list(RunEvent.objects.filter(run=run, seq__gt=before).values_list("seq", "type", "data"))
    assert stored == [(before + 1, *batch[0]), (before + 2, *batch[1])]
    assert Run.objects.get(pk=run.pk).event_seq == before + 2
    # Another worker's batch, or one for a run no longer running, writes nothing at all.
    assert events_append(run_id=run.pk, events=batch, require_status="running", require_worker="w:2:b") is None
    assert events_append(run_id=run.pk, events=batch, require_status="queued") is None
    assert Run.objects.get(pk=run.pk).event_seq == before + 2
    assert RunEvent.objects.filter(run=run).count() == before + 2


def test_creating_a_run_publishes_nothing_live_and_its_next_events_are(alice, settings):
    """No stream can follow a run before its id is known: its run.queued event is only in the log."""
    from runs import streams
    from runs.events import events_append

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    sent: list[tuple[str, list[int]]] = []
    streams.set_publisher(lambda run_id, message: sent.append((run_id, [e["seq"] for e in message["events"]])))
    try:
        run = make_run(alice)
        assert sent == [] and list(run.events.values_list("seq", flat=True)) == [1]
        events_append(run_id=run.id, events=[("run.started", {})])
        assert sent == [(run.id, [2])]
    finally:
        streams.set_publisher(None)


def test_a_batch_of_events_goes_out_as_one_write_of_the_stream(alice):
    """The SSE response writes a page of the log (or a committed batch) at once, not an event at a time."""
    import asyncio

    from django.test import AsyncClient

    from runs.events import events_append

    run = make_run(alice)
    events_append(run_id=run.id, events=[("run.started", {}), ("text.delta", {"delta": "hi"})])
    events_append(run_id=run.id, events=[("run.succeeded", {"status": "succeeded"})])
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED)

    async def chunks() -> list[bytes]:
        response = await AsyncClient().get(f"/api/runs/{run.id}/events", headers=alice.headers)
        assert response.status_code == 200
        return [chunk async for chunk in response.streaming_content]  # type: ignore[attr-defined]

    got = asyncio.run(chunks())
    assert got[0] == b"retry: 1000\n\n" and len(got) == 2
    assert [line for line in got[1].decode().splitlines() if line.startswith("id: ")] == [
        "id: 1",
        "id: 2",
        "id: 3",
        "id: 4",
    ]
