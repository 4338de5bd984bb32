"""Server-Sent Events and the live page. (The JSON API is in runs/api.py.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from django.contrib.admin.utils import quote
from django.contrib.admin.views.decorators import staff_member_required
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse

from common.db import db_call
from common.ratelimits import RateLimited, SlotHeld, StreamSlot, api_rate_count, stream_slot_take
from runs.models import Run
from runs.stream_auth import StreamPrincipal, stream_authorize
from runs.streams import run_event_batches


def _error(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


def _too_many(exc: RateLimited) -> JsonResponse:
    response = _error(429, exc.message)
    response["Retry-After"] = str(exc.retry_after)
    return response


def _authorize(*, run_id: str, api_key: str | None, token: str | None) -> tuple[StreamPrincipal | None, bool]:
    """Who asks and whether the run is theirs; the request counts against the key's rate limit
    (RateLimited), as every API request does."""
    principal, found = stream_authorize(run_id=run_id, api_key=api_key, token=token, session_user=None, origin=None)
    if principal is not None and principal.api_key_id is not None:
        api_rate_count(key_id=principal.api_key_id)
    return principal, found


async def run_events_sse(request: HttpRequest, run_id: str) -> HttpResponse | StreamingHttpResponse:
    """GET /api/runs/{id}/events?after=N: the run's events as text/event-stream.

    `Last-Event-ID` works as `after`. Auth: `Authorization: Bearer <API key>` or `?token=`.
    """
    if request.method != "GET":
        return _error(405, "method not allowed: use GET")
    authorization = request.headers.get("Authorization", "")
    if authorization and not authorization.lower().startswith("bearer "):
        return _error(401, "malformed Authorization header: expected 'Bearer <key>'")
    api_key = authorization[7:].strip() or None
    token = request.GET.get("token")
    if not api_key and not token:
        return _error(401, "missing API key: send 'Authorization: Bearer <key>' or ?token=")
    try:
        principal, found = await db_call(_authorize, run_id=run_id, api_key=api_key, token=token)
    except RateLimited as exc:
        return _too_many(exc)
    if principal is None:
        return _error(401, "invalid or revoked API key or stream token")
    if not found:
        return _error(404, f"run {run_id!r} not found")
    raw_after = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    try:
        after = int(raw_after)
        if after < 0:
            raise ValueError
    except ValueError:
        return _error(422, f"after: expected a non-negative integer, got {raw_after!r}")
    try:
        slot = await stream_slot_take(key_id=principal.api_key_id)
    except RateLimited as exc:
        return _too_many(exc)

    return sse_response(run_id, after, slot)


async def sse_body(run_id: str, after: int) -> AsyncIterator[bytes]:
    """The run's events after `after` in the text/event-stream format (UTF-8), to its final event.
    Bytes, so the response passes each chunk on as it is instead of looking up its charset."""
    yield b"retry: 1000\n\n"
    # A batch of events (a page of the log, a committed batch) goes out as one write.
    async for batch in run_event_batches(run_id, after):
        if batch is None:
            yield b": keepalive\n\n"
            continue
        yield "".join(
            f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event, cls=DjangoJSONEncoder)}\n\n"
            for event in batch
        ).encode()


def sse_response(run_id: str, after: int, slot: StreamSlot) -> StreamingHttpResponse:
    """A run's event stream as a response that holds `slot` (the key's stream cap) while it is sent."""
    response = StreamingHttpResponse(SlotHeld(sse_body(run_id, after), slot), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response


@staff_member_required
def run_live_page(request: HttpRequest, run_id: str) -> HttpResponse:
    """A person's view of one run's stream (staff: the admin links here)."""
    if not request.user.has_perm("runs.view_run"):
        raise Http404
    run = Run.objects.filter(pk=run_id).select_related("owner").first()
    if run is None:
        raise Http404
    # Approve/reject buttons (for approval.requested events) post to the approvals admin's decide view.
    can_decide = request.user.has_perm("approvals.decide_approval")
    decide_url = reverse("admin:approvals_approval_decide", args=["APPROVAL_ID"]) if can_decide else ""
    return render(
        request,
        "runs/live.html",
        {
            "run": run,
            "admin_url": reverse("admin:runs_run_change", args=[quote(run.pk)]),
            "approvals": {"can_decide": can_decide, "decide_url": decide_url},
        },
    )
