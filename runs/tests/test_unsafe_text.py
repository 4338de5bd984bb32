"""NUL characters and lone surrogates: refused when a client sends them (422 naming the
field, never a 500), stored safely (U+FFFD) when a model or a tool produces them.

Postgres refuses NUL in text and jsonb; neither database can encode a lone surrogate.
Run this file with DATABASE_URL pointing at Postgres as well as on SQLite."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agents.testing import assistant_message, function_call
from django.conf import settings
from django.db import DataError, connection
from django.test import override_settings

from artifacts.models import Artifact
from common.text import REPLACEMENT, safe_data, safe_text, text_problem
from conftest import make_run
from execution.executor import run_execute
from runs.models import Run, RunEvent, SessionItem, Span
from runs.tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db(transaction=True)

POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
NUL, LONE = "\x00", "\ud800"


def _named(response: Any, *loc: str) -> None:
    assert response.status_code == 422, response.content
    errors = response.json()["errors"]
    assert any(list(error["loc"][-len(loc) :]) == list(loc) for error in errors), errors
    assert all("NUL" in error["msg"] or "surrogate" in error["msg"] for error in errors), errors


@pytest.mark.parametrize("bad", [NUL, LONE], ids=["nul", "surrogate"])
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": "hi {}", "agent": "calculator", "model": "offline"}, "input"),
        ({"input": "hi", "session_id": "sess_{}"}, "session_id"),
        ({"input": "hi", "agent": "calc{}"}, "agent"),
        ({"input": "hi", "model": "off{}"}, "model"),
        ({"input": "hi", "agent": "coder", "files": ["art_{}"]}, "files"),
    ],
)
def test_a_run_body_with_nul_or_a_lone_surrogate_is_a_422_naming_the_field(api, alice, body, field, bad):
    body = {
        key: value.format(bad) if isinstance(value, str) else [item.format(bad) for item in value]
        for key, value in body.items()
    }
    response = api.post("/api/runs", body, who=alice)  # json.dumps writes the surrogate as \ud800
    assert response.status_code == 422, response.content
    errors = response.json()["errors"]
    assert any(field in error["loc"] for error in errors), errors
    assert Run.objects.count() == 0


def test_the_422_says_what_is_wrong(api, alice):
    _named(api.post("/api/runs", {"input": f"hi {NUL}"}, who=alice), "input")
    _named(api.post("/api/runs", {"input": f"hi {LONE}"}, who=alice), "input")
    # The raw JSON escapes a client would send.
    raw = api.post("/api/runs", who=alice, raw='{"input": "a\\u0000b", "model": "offline"}')
    _named(raw, "input")
    raw = api.post("/api/runs", who=alice, raw='{"input": "hi \\ud800", "model": "offline"}')
    _named(raw, "input")


@pytest.mark.parametrize("param", ["cursor", "agent", "session_id"])
def test_query_parameters_with_nul_are_a_422_naming_them(api, alice, param):
    make_run(alice)
    response = api.get("/api/runs", who=alice, **{param: f"a{NUL}b"})
    _named(response, "query", param)


@pytest.mark.parametrize(
    ("method", "path", "param"),
    [
        ("get", "/api/runs/run_%00", "run_id"),
        ("post", "/api/runs/run_%00/cancel", "run_id"),
        ("post", "/api/runs/run_%00/stream-token", "run_id"),
        ("get", "/api/runs/run_%00/artifacts", "run_id"),
        ("post", "/api/runs/run_%00/artifacts", "run_id"),
        ("get", "/api/artifacts/art_%00", "artifact_id"),
        ("post", "/api/artifacts/art_%00/confirm", "artifact_id"),
    ],
)
def test_path_parameters_with_nul_are_a_422_naming_them(api, alice, method, path, param):
    body = {"name": "a.txt", "content_type": "text/plain", "size": 1, "sha256": "0" * 64}
    response = api.get(path, who=alice) if method == "get" else api.post(path, body, who=alice)
    _named(response, "path", param)


def test_a_route_that_only_looks_the_run_up_answers_404(api, alice):
    # /api/runs/{id}/sandboxes (another app's route) looks the run up with runs.api.get_run_or_404.
    response = api.get("/api/runs/run_%00/sandboxes", who=alice)
    assert response.status_code == 404, response.content
    assert response.json()["detail"] == "run 'run_\\x00' not found"


def test_the_event_stream_of_a_run_id_with_nul_is_a_404(api, alice):
    response = api.get("/api/runs/run_%00/events", who=alice)
    assert response.status_code == 404, response.content
    assert response.json()["detail"] == "run 'run_\\x00' not found"


def test_safe_text_replaces_nul_and_lone_surrogates_only():
    assert safe_text("plain ✓ text") == "plain ✓ text"
    assert safe_text(f"a{NUL}b") == f"a{REPLACEMENT}b"
    assert safe_text(f"hi {LONE}!") == f"hi {REPLACEMENT}!"
    assert safe_text("\udfff\ud800") == REPLACEMENT * 2
    # A pair split into two code points is the character it encodes.
    assert safe_text("\ud83d\ude00") == "😀"
    assert safe_data({f"k{NUL}": [f"v{LONE}", 1, None]}) == {f"k{REPLACEMENT}": [f"v{REPLACEMENT}", 1, None]}
    assert text_problem("fine") is None and "NUL" in (text_problem(NUL) or "")
    assert "surrogate" in (text_problem(LONE) or "")


def test_safe_data_leaves_a_clean_document_as_it_is_and_mends_every_unsafe_string():
    from datetime import UTC, datetime

    clean = {"text": "plain ✓", "list": [1, 2.5, None, True, {"deep": ["x"]}]}
    assert safe_data(clean) is clean  # nothing to replace: no copy made
    escaped = {"text": "the six characters \\u0000"}  # looks like an escaped NUL: walked, and kept
    assert safe_data(escaped) == escaped
    when = datetime(2026, 1, 2, tzinfo=UTC)  # not JSON: the document is walked
    assert safe_data({"at": when, "v": f"a{NUL}"}) == {"at": when, "v": f"a{REPLACEMENT}"}
    assert safe_data({"at": when}) == {"at": when}
    assert safe_data(("t", [{f"k{LONE}": (f"{NUL}",)}])) == ["t", [{f"k{REPLACEMENT}": [REPLACEMENT]}]]
    assert safe_data({1: f"x{NUL}", "n": 3}) == {1: f"x{REPLACEMENT}", "n": 3}
    assert safe_data(7) == 7 and safe_data(None) is None


@pytest.mark.skipif(not POSTGRES, reason="Postgres's own refusal of NUL")
def test_postgres_really_refuses_nul_so_the_harness_must_not_send_it():
    with pytest.raises((ValueError, DataError), match="NUL"), connection.cursor() as cursor:
        cursor.execute("SELECT %s::text", [f"a{NUL}b"])


OPENAI_KEY = "sk-unsafe-text-key-0123456789"
COMMAND = "printf 'a\\000b'; printf x > outputs/ünïcødé-✓.txt"


class UnsafeOpenAI(FakeOpenAI):
    """A model that runs a command printing a NUL, then answers with the tool's output (NUL
    included) and a lone surrogate."""

    def respond(self, body: dict[str, Any]) -> list[Any]:
        items = body.get("input") or []
        last = items[-1] if isinstance(items, list) and items else {}
        if last.get("type") == "function_call_output":
            return [assistant_message(f"The tool said {last['output']} {LONE} end.", item_id="msg_fake")]
        return [function_call("exec_command", {"cmd": COMMAND}, call_id=f"call_{len(self.requests)}")]


def stored_safely(run: Run) -> None:
    """Assert nothing of the run holds NUL or a lone surrogate, and what the model said is there."""
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.output is not None
    assert text_problem(run.output) is None
    assert f"a{REPLACEMENT}b" in run.output and f"{REPLACEMENT} end." in run.output
    events = list(RunEvent.objects.filter(run=run).order_by("seq").values_list("type", "data"))
    dumped = json.dumps([data for _, data in events], ensure_ascii=False)
    assert text_problem(dumped) is None
    tool_outputs = [data["output"] for kind, data in events if kind == "tool.output"]
    assert any(f"a{REPLACEMENT}b" in output for output in tool_outputs), tool_outputs
    (final,) = [data for kind, data in events if kind == "run.succeeded"]
    assert final["output"] == run.output
    items = json.dumps(list(SessionItem.objects.filter(run=run).values_list("data", flat=True)), ensure_ascii=False)
    assert text_problem(items) is None and f"a{REPLACEMENT}b" in items
    spans = json.dumps(list(Span.objects.filter(run=run).values_list("data", flat=True)), ensure_ascii=False)
    assert text_problem(spans) is None


def test_a_run_whose_tool_and_model_print_nul_and_a_lone_surrogate_succeeds(alice, bwrap):
    with (
        UnsafeOpenAI(OPENAI_KEY) as fake,
        override_settings(OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=fake.base_url),
    ):
        run = make_run(alice, agent="coder", model="gpt-5.4-mini", input="print a NUL")
        assert run_execute(run.pk) == "succeeded"
    run.refresh_from_db()
    stored_safely(run)
    # The output file with a Unicode name keeps its letters (artifacts.storage.sanitize_name).
    assert list(Artifact.objects.filter(run=run).values_list("name", flat=True)) == ["ünïcødé-_.txt"]
