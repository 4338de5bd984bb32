"""Who may follow a stream: one statement for a key (or a stream token) and its run."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import ApiKey
from accounts.services import apikey_create, apikey_revoke
from audit.services import Actor
from conftest import make_principal, make_run
from runs.stream_auth import stream_authorize
from runs.streams import stream_token_issue

pytestmark = pytest.mark.django_db


def authorize(run_id: str, *, key: str | None = None, token: str | None = None):
    return stream_authorize(run_id=run_id, api_key=key, token=token, session_user=None, origin=None)


def test_the_owner_s_key_and_the_run_are_checked_in_one_statement(alice):
    run = make_run(alice)
    authorize(run.id, key=alice.key)  # its first use notes last_used_at
    with CaptureQueriesContext(connection) as queries:
        principal, found = authorize(run.id, key=alice.key)
    assert len(queries) == 1 and "ORDER BY" not in queries[0]["sql"]
    assert found and principal is not None and principal.user == alice.user
    assert principal.api_key_id == ApiKey.objects.get(user=alice.user).pk
    assert principal.user.username == "alice" and principal.user.is_active and not principal.user.is_staff


def test_someone_else_s_run_and_a_missing_one_look_the_same(alice, outsider):
    run = make_run(alice)
    for run_id in (run.id, "run_00000000000000000000000000", "run_\x00nul"):
        principal, found = authorize(run_id, key=outsider.key)
        assert principal is not None and principal.user == outsider.user and not found


def test_bad_revoked_or_inactive_keys_are_nobody(alice):
    run = make_run(alice)
    assert authorize(run.id, key="hk_" + "x" * 40) == (None, False)
    assert authorize(run.id, key="not-a-key") == (None, False)
    assert authorize(run.id, key="hk_" + "x" * 300) == (None, False)
    bob = make_principal("bob")
    bob.user.is_active = False
    bob.user.save()
    assert authorize(run.id, key=bob.key) == (None, False)
    apikey_revoke(api_key=ApiKey.objects.get(user=alice.user), actor=Actor.system("tests"))
    assert authorize(run.id, key=alice.key) == (None, False)


def test_a_stream_token_is_for_one_run_and_lives_no_longer_than_its_key(alice):
    run, other = make_run(alice), make_run(alice)
    key = ApiKey.objects.get(user=alice.user)
    token = stream_token_issue(run_id=run.id, user_id=alice.user.pk, api_key_id=key.pk)
    with CaptureQueriesContext(connection) as queries:
        principal, found = authorize(run.id, token=token)
    assert found and principal is not None and (principal.user, principal.api_key_id) == (alice.user, key.pk)
    assert len(queries) == 1  # a read: a token's stream does not note its key's last use
    assert ApiKey.objects.get(pk=key.pk).last_used_at is None
    assert authorize(other.id, token=token) == (None, False)
    assert authorize(run.id, token="forged") == (None, False)
    apikey_revoke(api_key=key, actor=Actor.system("tests"))
    assert authorize(run.id, token=token) == (None, False)


def test_staff_with_the_view_permission_follow_any_run(alice, viewer):
    run = make_run(alice)
    _, raw = apikey_create(user=viewer, actor=Actor.system("tests"))
    principal, found = authorize(run.id, key=raw)
    assert found and principal is not None and principal.user == viewer
    assert authorize("run_00000000000000000000000000", key=raw)[1] is False
    staff_only = make_principal("staff-only", is_staff=True)  # staff without the permission: own runs only
    assert authorize(run.id, key=staff_only.key)[1] is False
    assert authorize(make_run(staff_only).id, key=staff_only.key)[1] is True
