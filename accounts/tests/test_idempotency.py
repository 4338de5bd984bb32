"""`Idempotency-Key` on POST /api/runs."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.idempotency import idempotency_purge
from accounts.models import IdempotencyKey
from audit.models import AuditLog
from runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"input": "What is 6 * 7?", "agent": "calculator", "model": "offline"}


def post(api, who, body, key=None):
    headers = {**who.headers, **({"Idempotency-Key": key} if key is not None else {})}
    return api.client.post("/api/runs", data=json.dumps(body), content_type="application/json", headers=headers)


def test_the_same_key_and_request_give_back_the_same_run(api, alice):
    first = post(api, alice, BODY, key="order-42")
    again = post(api, alice, BODY, key="order-42")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert "Idempotent-Replayed" not in first and again["Idempotent-Replayed"] == "true"
    assert Run.objects.filter(owner=alice.user).count() == 1
    assert AuditLog.objects.filter(action="run.created").count() == 1
    # Without a key, every request is a new run.
    assert post(api, alice, BODY).json()["id"] != first.json()["id"]


def test_the_same_key_with_another_request_is_422_and_writes_nothing(api, alice):
    post(api, alice, BODY, key="order-42")
    response = post(api, alice, {**BODY, "input": "What is 7 * 8?"}, key="order-42")
    assert response.status_code == 422
    assert "was used for a different request" in response.json()["detail"]
    assert Run.objects.filter(owner=alice.user).count() == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "two words"])
def test_a_malformed_key_is_422(api, alice, key):
    response = post(api, alice, BODY, key=key)
    assert response.status_code == 422 and "Idempotency-Key" in response.json()["detail"]
    assert not Run.objects.exists()


def test_keys_belong_to_their_principal_and_expire(api, alice, outsider, settings):
    mine = post(api, alice, BODY, key="shared-name").json()["id"]
    theirs = post(api, outsider, BODY, key="shared-name").json()["id"]
    assert mine != theirs
    IdempotencyKey.objects.filter(owner=alice.user).update(
        created_at=timezone.now() - timedelta(hours=settings.HARNESS_IDEMPOTENCY_HOURS, minutes=1)
    )
    later = post(api, alice, BODY, key="shared-name")
    assert later.status_code == 202 and later.json()["id"] != mine and "Idempotent-Replayed" not in later
    IdempotencyKey.objects.filter(owner=outsider.user).update(created_at=timezone.now() - timedelta(days=2))
    assert idempotency_purge() == 1
    assert list(IdempotencyKey.objects.values_list("owner__username", flat=True)) == ["alice"]


def test_a_refused_request_records_no_key(api, alice):
    response = post(api, alice, {**BODY, "session_id": "sess_nope"}, key="k1")
    assert response.status_code == 404
    assert not IdempotencyKey.objects.exists()
    assert post(api, alice, BODY, key="k1").status_code == 202  # the key is still free
