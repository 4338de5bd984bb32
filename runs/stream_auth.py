"""Who may follow a run's stream: its owner (API key or signed stream token) or staff."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import User
from django.http.request import validate_host

from accounts.services import apikey_authenticate
from runs.models import Run
from runs.streams import stream_token_read


def stream_principal(
    *, run_id: str, api_key: str | None, token: str | None, session_user: User | None, origin: str | None
) -> User | None:
    """The user following this stream, or None. Raises nothing; says nothing about the run."""
    if api_key:
        key = apikey_authenticate(raw_key=api_key)
        return key.user if key else None
    if token:
        user_id = stream_token_read(token, run_id=run_id)
        return User.objects.filter(pk=user_id, is_active=True).first() if user_id else None
    if session_user is not None and session_user.is_authenticated and session_user.is_staff:
        # Cookies ride along on cross-site WebSocket handshakes: only our own pages may use them.
        host = urlsplit(origin or "").hostname
        if host and validate_host(host, settings.ALLOWED_HOSTS):
            return session_user
    return None


def stream_run_for(*, user: User, run_id: str) -> Run | None:
    runs = Run.objects.all()
    if not (user.is_staff and user.has_perm("runs.view_run")):
        runs = runs.filter(owner=user)
    return runs.filter(pk=run_id).only("id").first()
