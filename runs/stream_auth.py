"""Who may follow a run's stream: its owner (API key or signed stream token) or staff."""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.http.request import validate_host

from accounts.models import ApiKey
from accounts.services import active_key_sql, apikey_found, key_hash_of
from common.db import unique_row
from common.sql import fetch_models
from common.text import text_problem
from runs.models import Run
from runs.streams import stream_token_read


class StreamPrincipal(NamedTuple):
    user: User
    # The key whose stream cap (and, for SSE, rate limit) the stream counts against; None for staff sessions.
    api_key_id: str | None


@cache
def _owns_run() -> str:
    """The extra column of a key lookup: whether the key's user owns run %s."""
    return f"EXISTS (SELECT 1 FROM {connection.ops.quote_name(Run._meta.db_table)} r WHERE r.id = %s AND r.owner_id = u.id)"  # noqa: S608 (names are ours)


def stream_authorize(
    *, run_id: str, api_key: str | None, token: str | None, session_user: User | None, origin: str | None
) -> tuple[StreamPrincipal | None, bool]:
    """Who follows this stream (None: nobody we know), and whether they may see the run (False
    also when there is no such run). Raises nothing; says nothing about the run to a stranger.

    A key or a stream token is checked with its run in one statement: this runs for every stream."""
    if text_problem(run_id):  # an id no run can have (a NUL: Postgres would refuse the query)
        run_id = ""
    found: list[Any] | None = None
    if api_key:
        key_hash = key_hash_of(api_key)
        if key_hash is not None:
            found = fetch_models(active_key_sql("k.key_hash = %s", _owns_run()), [run_id, key_hash], ApiKey, User)
    elif token:
        issued = stream_token_read(token, run_id=run_id)
        if issued is not None:
            user_id, key_id = issued
            # A token lives no longer than its key: revoking the key ends its tokens too.
            found = fetch_models(
                active_key_sql("k.id = %s AND k.user_id = %s", _owns_run()), [run_id, key_id, user_id], ApiKey, User
            )
    elif session_user is not None and session_user.is_authenticated and session_user.is_staff:
        # Cookies ride along on cross-site WebSocket handshakes: only our own pages may use them.
        host = urlsplit(origin or "").hostname
        if host and validate_host(host, settings.ALLOWED_HOSTS):
            return StreamPrincipal(session_user, None), _run_visible(session_user, run_id)
        return None, False
    if found is None:
        return None, False
    key, user, owns = found
    if api_key:
        apikey_found(key, user)  # the key's use noted, as for every API request (a token's is not)
    principal = StreamPrincipal(user, key.pk)
    return principal, bool(owns) or (user.is_staff and _run_visible(user, run_id))


def _run_visible(user: User, run_id: str) -> bool:
    """The run exists and is the user's, or the user is staff with the runs view permission."""
    if not run_id:
        return False
    runs = Run.objects.all()
    if not (user.is_staff and user.has_perm("runs.view_run")):
        runs = runs.filter(owner=user)
    return unique_row(runs.filter(pk=run_id).only("id")) is not None
