"""Who may follow a run's stream: its owner (API key or signed stream token) or staff."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import User
from django.http.request import validate_host

from accounts.models import ApiKey
from accounts.services import apikey_authenticate
from common.db import unique_row
from common.text import text_problem
from runs.models import Run
from runs.streams import stream_token_read


class StreamPrincipal(NamedTuple):
    user: User
    # The key whose stream cap (and, for SSE, rate limit) the stream counts against; None for staff sessions.
    api_key_id: str | None


def stream_principal(
    *, run_id: str, api_key: str | None, token: str | None, session_user: User | None, origin: str | None
) -> StreamPrincipal | None:
    """Who follows this stream, or None. Raises nothing; says nothing about the run."""
    if api_key:
        key = apikey_authenticate(raw_key=api_key)
        return StreamPrincipal(key.user, key.pk) if key else None
    if token:
        issued = stream_token_read(token, run_id=run_id)
        if issued is None:
            return None
        user_id, key_id = issued
        # A token lives no longer than its key: revoking the key ends its tokens too.
        issuer = unique_row(
            ApiKey.objects.select_related("user").filter(
                pk=key_id, user_id=user_id, revoked_at__isnull=True, user__is_active=True
            )
        )
        return StreamPrincipal(issuer.user, issuer.pk) if issuer else None
    if session_user is not None and session_user.is_authenticated and session_user.is_staff:
        # Cookies ride along on cross-site WebSocket handshakes: only our own pages may use them.
        host = urlsplit(origin or "").hostname
        if host and validate_host(host, settings.ALLOWED_HOSTS):
            return StreamPrincipal(session_user, None)
    return None


def stream_run_for(*, user: User, run_id: str) -> Run | None:
    if text_problem(run_id):  # an id no run can have (a NUL: Postgres would refuse the query)
        return None
    runs = Run.objects.all()
    if not (user.is_staff and user.has_perm("runs.view_run")):
        runs = runs.filter(owner=user)
    return unique_row(runs.filter(pk=run_id).only("id"))
