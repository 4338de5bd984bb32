from __future__ import annotations

import io
import json
import logging

import pytest
from django.test import override_settings

from audit.models import AuditLog
from conftest import make_principal, make_run
from execution.executor import run_execute
from harness_site.logs import JsonFormatter
from harness_site.redaction import redact
from runs.models import RunEvent, Span
from runs.tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db(transaction=True)

OPENAI_KEY = "sk-proj-TOPSECRET-abcdefghijklmnop"
DB_PASSWORD = "db-pa55word-TOPSECRET"


@pytest.fixture
def json_logs():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_every_log_line_of_a_run_carries_its_run_id(alice, json_logs):
    run = make_run(alice)
    json_logs.truncate(0)
    json_logs.seek(0)
    run_execute(run.pk)
    logged = lines(json_logs)
    assert any(entry["msg"] == "run finished" for entry in logged)
    assert all(entry.get("run_id") == run.pk for entry in logged), [e for e in logged if e.get("run_id") != run.pk]


def test_no_secret_reaches_logs_errors_events_or_audit(json_logs):
    victim = make_principal("victim")
    secrets_seen = [OPENAI_KEY, DB_PASSWORD, victim.key]
    database_url = f"postgres://harness:{DB_PASSWORD}@db.example.internal:5432/harness"
    with (
        FakeOpenAI("sk-some-other-valid-key-000") as fake,
        override_settings(OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=fake.base_url, DATABASE_URL=database_url),
    ):
        run = make_run(victim, model="gpt-5.4-mini", input="hello")
        assert run_execute(run.pk) == "failed"
        # Code that logs carelessly is still covered by the formatter.
        logging.getLogger("careless").warning(
            "connecting to %s with %s using key %s", database_url, OPENAI_KEY, victim.key
        )
        logging.getLogger("careless").error("header was Authorization: Bearer %s", victim.key)
    run.refresh_from_db()
    stored = [
        json_logs.getvalue(),
        run.error,
        json.dumps(list(RunEvent.objects.filter(run=run).values_list("data", flat=True))),
        json.dumps(list(AuditLog.objects.values_list("data", flat=True))),
        json.dumps(list(Span.objects.filter(run=run).values_list("data", "error"))),
    ]
    assert "Incorrect API key" in run.error  # the error is still useful ...
    for blob in stored:
        for secret in secrets_seen:
            assert secret not in blob  # ... but it names no secret
    assert "[REDACTED]" in json_logs.getvalue()


def test_redact_covers_the_usual_shapes():
    assert redact("key hk_abcdefghijklmnopqrstuvwxyz0123") == "key [REDACTED]"
    assert redact("Authorization: Bearer abc.def-ghi_jkl") == "Authorization: [REDACTED]"
    assert redact("postgres://user:pw1234@host/db") == "postgres://[REDACTED]@host/db"
    assert redact("e2b_0123456789abcdef") == "[REDACTED]"
    assert redact("nothing secret here") == "nothing secret here"
    # A stream token in a URL (an access log line, an exported span's http.url).
    assert (
        redact("GET /api/runs/run_1/events?after=3&token=eyJyIjoicnVuIn0:1tXyz:abc-DEF_123&x=1")
        == "GET /api/runs/run_1/events?after=3&token=[REDACTED]&x=1"
    )
