from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client, override_settings

from harness_site import health

pytestmark = pytest.mark.django_db


def test_health_tells_the_truth_with_no_keys():
    response = Client().get("/health")
    assert response.status_code == 200
    on_postgres = connection.vendor == "postgresql"
    assert response.json() == {
        "status": "ok",
        "model": "offline",  # no OPENAI_API_KEY: runs default to the offline model
        "backends": {"postgres": on_postgres, "sandbox": False, "r2": False},
    }
    assert response["Cache-Control"].startswith("max-age=0")


@override_settings(HARNESS_MODEL="gpt-9-test")
def test_health_reports_the_configured_model():
    assert Client().get("/health").json()["model"] == "gpt-9-test"


def test_health_needs_no_key_and_only_answers_get():
    assert Client().post("/health").status_code == 405


def test_postgres_is_false_when_its_query_fails(monkeypatch):
    monkeypatch.setattr(health, "_database_answers", lambda: False)
    body = Client().get("/health")
    assert body.status_code == 503
    assert body.json()["status"] == "unavailable"
    assert body.json()["backends"]["postgres"] is False


def test_a_backend_check_that_raises_reports_false(monkeypatch):
    def broken() -> bool:
        raise RuntimeError("down")

    monkeypatch.setitem(health._checks, "r2", broken)
    assert Client().get("/health").json()["backends"]["r2"] is False
