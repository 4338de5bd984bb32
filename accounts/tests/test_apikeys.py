from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import ApiKey, hash_key
from audit.models import AuditLog

pytestmark = pytest.mark.django_db


def test_createapikey_creates_the_user_and_prints_the_key_last(api):
    out, err = io.StringIO(), io.StringIO()
    call_command("createapikey", "carol", stdout=out, stderr=err)
    key = out.getvalue().strip().splitlines()[-1]
    assert key.startswith("hk_") and len(key) > 40
    user = User.objects.get(username="carol")
    assert not user.has_usable_password()
    stored = ApiKey.objects.get(user=user)
    assert stored.key_hash == hash_key(key) and key not in stored.key_hash and stored.prefix == key[:10]
    assert AuditLog.objects.filter(action="api_key.created", target_id=stored.pk).exists()
    assert key not in str(list(AuditLog.objects.values_list("data", flat=True)))
    response = api.client.get("/api/runs", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200


def test_createapikey_for_an_existing_user_adds_a_key():
    User.objects.create_user("dave")
    call_command("createapikey", "dave", stdout=io.StringIO(), stderr=io.StringIO())
    call_command("createapikey", "dave", stdout=io.StringIO(), stderr=io.StringIO())
    assert ApiKey.objects.filter(user__username="dave").count() == 2


def test_createapikey_refuses_a_blank_username():
    with pytest.raises(CommandError, match="USERNAME"):
        call_command("createapikey", "  ", stdout=io.StringIO(), stderr=io.StringIO())
    assert ApiKey.objects.count() == 0


def test_a_key_is_found_by_one_unordered_lookup_and_a_revoked_one_is_not(alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from accounts.services import apikey_authenticate

    apikey_authenticate(raw_key=alice.key)  # the first use writes last_used_at
    with CaptureQueriesContext(connection) as queries:
        found = apikey_authenticate(raw_key=alice.key)
    assert found is not None and found.user == alice.user
    # The hot path of every request: a unique key needs no ORDER BY (`.first()`'s costs more to compile).
    assert len(queries) == 1 and "ORDER BY" not in queries[0]["sql"]
    ApiKey.objects.filter(pk=found.pk).update(revoked_at=timezone.now())
    assert apikey_authenticate(raw_key=alice.key) is None
    assert apikey_authenticate(raw_key="hk_" + "x" * 40) is None
