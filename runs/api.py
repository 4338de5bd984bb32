from __future__ import annotations

import json
from typing import Literal

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError, ValidationError

from accounts.auth import async_api_key_auth
from accounts.idempotency import idempotency_key_of, idempotent_create, request_hash
from approvals.selectors import attach_pending, with_pending
from audit.services import Actor
from common.db import db_call
from common.ratelimits import stream_slot_take
from common.text import SafeStr, text_problem
from harness_site.telemetry import current_context, current_ids, set_current_attributes
from runs import services
from runs.models import Run
from runs.published import UnknownAgent, agent_check, published_agents, published_fresh, published_version
from runs.schemas import AgentsOut, BudgetErrorOut, ErrorOut, RunIn, RunOut, RunPage, model_unavailable
from runs.selectors import run_get_for_principal, run_list_for_principal
from runs.streams import stream_token_issue
from runs.views import sse_response

router = Router(tags=["runs"])


class RunFilter(Schema):
    status: Literal["queued", "running", "awaiting_approval", "succeeded", "failed", "cancelled"] | None = None
    agent: SafeStr | None = None
    session_id: SafeStr | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: SafeStr | None = None


def _invalid(field: str, message: str) -> None:
    """A 422 in the shape of every invalid-input answer, naming the field."""
    raise ValidationError([{"type": "value_error", "loc": ["body", "payload", field], "msg": message}])


def get_run_or_404(request: HttpRequest, run_id: str) -> Run:
    if text_problem(run_id):  # an id no run can have (and Postgres cannot even look up)
        raise HttpError(404, f"run {run_id!r} not found")
    run = run_get_for_principal(principal=request.auth, run_id=run_id)  # type: ignore[attr-defined]
    if run is None:
        raise HttpError(404, f"run {run_id!r} not found")
    return run


STREAM_DESCRIPTION = (
    "With `Accept: text/event-stream`: the run is created as above and its events follow in the "
    "same response, as Server-Sent Events from its first (`run.queued`) to its final event, exactly "
    "as `GET /api/runs/{id}/events` sends them. `Location` and `X-Run-Id` name the run. The stream "
    "counts against the key's HARNESS_MAX_STREAMS_PER_KEY: over it, `429` and no run is created. A "
    "repeat with the same `Idempotency-Key` streams the first request's run from its first event."
)


@router.post(
    "/runs",
    response={
        202: RunOut,
        402: BudgetErrorOut,
        404: ErrorOut,
        409: ErrorOut,
        413: ErrorOut,
        422: ErrorOut,
        429: BudgetErrorOut,
        503: ErrorOut,
    },
    auth=async_api_key_auth,
    summary="Start a run",
    openapi_extra={
        "responses": {
            "200": {
                "description": STREAM_DESCRIPTION,
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        }
    },
)
async def create_run(request: HttpRequest, payload: RunIn, response: HttpResponse) -> Status | HttpResponseBase:
    """With an `Idempotency-Key` header, a repeat of the same request (within
    HARNESS_IDEMPOTENCY_HOURS) answers with the run the first one created, and
    `Idempotent-Replayed: true`; the same key with another body is `422`.

    With `Accept: text/event-stream` the answer is the run's event stream (see the `200`)."""
    if len(payload.input) > settings.HARNESS_MAX_INPUT_CHARS:
        raise HttpError(
            413, f"input: {len(payload.input)} characters is over the limit of {settings.HARNESS_MAX_INPUT_CHARS}"
        )
    unavailable = model_unavailable(payload.model_or_default)
    if unavailable:  # refused now, not failed after a 202
        raise HttpError(422, f"model: {unavailable}")
    if payload.offline_script is not None and payload.model_or_default != "offline":
        _invalid("offline_script", f'only for model "offline" (this run is on {payload.model_or_default!r})')
    try:  # against what the workers published (a query at most every HARNESS_AGENT_REGISTRY_TTL_SECONDS)
        fresh = published_fresh()
        if fresh is not None:
            agent_check(payload.agent, payload.model_or_default, fresh)
        else:
            await db_call(agent_check, payload.agent, payload.model_or_default)
    except UnknownAgent as exc:
        _invalid("agent", str(exc))
    key = idempotency_key_of(request.headers)
    # Taken before the run is made: a key at its stream cap gets a 429 and no run.
    slot = await stream_slot_take(key_id=request.api_key.pk) if wants_stream(request) else None  # type: ignore[attr-defined]
    try:
        run, replayed = await _create(request, payload, key)
    except BaseException:
        if slot is not None:
            await slot.release()
        raise
    answer: HttpResponseBase = response
    if slot is not None:
        answer = sse_response(run.id, 0, slot)
        answer["Location"] = f"/api/runs/{run.id}"
        answer["X-Run-Id"] = run.id
    if replayed:
        answer["Idempotent-Replayed"] = "true"
    return answer if slot is not None else Status(202, run)


def wants_stream(request: HttpRequest) -> bool:
    """The client asks for the run's events in the answer (`Accept: text/event-stream`)."""
    return "text/event-stream" in request.headers.get("Accept", "")


async def _create(request: HttpRequest, payload: RunIn, key: str | None) -> tuple[Run, bool]:
    """The run this request creates, or the one its Idempotency-Key created before (True)."""
    ids, carrier = current_ids(), current_context()  # the request's span, read on its own task
    owner = request.auth  # type: ignore[attr-defined]
    actor = Actor.for_api_key(request.api_key)  # type: ignore[attr-defined]

    def create() -> Run:
        return services.run_create(
            owner=owner,
            actor=actor,
            input=payload.input,
            agent=payload.agent,
            model=payload.model_or_default,
            session_id=payload.session_id,
            files=payload.files,
            limits=payload.requested_limits(),
            offline_script=payload.offline_script,
            trace_context=carrier,
            otel_trace_id=ids[0] if ids else "",
        )

    try:
        run, replayed = await db_call(
            idempotent_create,
            owner_id=owner.pk,
            key=key,
            fingerprint=request_hash("POST", "/api/runs", payload.model_dump(mode="json")),
            resource_type="run",
            create=create,
            resource_id=lambda run: run.pk,
            load=lambda run_id: with_pending(Run.objects.get(pk=run_id)),
        )
    except services.RunServiceError as exc:
        raise HttpError(exc.status_code, str(exc)) from None
    if replayed:
        return run, True
    set_current_attributes(
        **{
            "harness.run_id": run.id,
            "harness.agent": run.agent,
            "session.id": run.session_id,
            "user.id": str(run.owner_id),
            "metadata": json.dumps({"run_id": run.id, "agent": run.agent, "principal": str(run.owner_id)}),
        }
    )
    return run, False


@router.get("/runs", response=RunPage, summary="List your runs, newest first")
def list_runs(request: HttpRequest, filters: Query[RunFilter]) -> dict[str, object]:
    runs = run_list_for_principal(principal=request.auth).order_by("-id")  # type: ignore[attr-defined]
    if filters.status:
        runs = runs.filter(status=filters.status)
    if filters.agent:
        runs = runs.filter(agent=filters.agent)
    if filters.session_id:
        runs = runs.filter(session_id=filters.session_id)
    if filters.cursor:
        runs = runs.filter(id__lt=filters.cursor)
    page = list(runs[: filters.limit + 1])
    more = len(page) > filters.limit
    page = page[: filters.limit]
    attach_pending(page)  # a query only when a run of the page waits for approval
    return {"items": page, "next_cursor": page[-1].id if more else None}


@router.get("/runs/{run_id}", response={200: RunOut, 404: ErrorOut}, auth=async_api_key_auth, summary="Get a run")
async def get_run(request: HttpRequest, run_id: SafeStr) -> Run:
    principal = request.auth  # type: ignore[attr-defined]
    run = await db_call(lambda: with_pending(run_get_for_principal(principal=principal, run_id=run_id)))
    if run is None:
        raise HttpError(404, f"run {run_id!r} not found")
    return run


@router.post("/runs/{run_id}/cancel", response={200: RunOut, 404: ErrorOut, 409: ErrorOut}, summary="Cancel a run")
def cancel_run(request: HttpRequest, run_id: SafeStr) -> Run:
    run = get_run_or_404(request, run_id)
    try:
        return services.run_cancel(run=run, actor=Actor.for_api_key(request.api_key))  # type: ignore[attr-defined]
    except services.RunNotCancellable as exc:
        raise HttpError(409, str(exc)) from None


class StreamTokenOut(Schema):
    token: str
    expires_in: int
    websocket_path: str
    events_path: str


@router.post(
    "/runs/{run_id}/stream-token",
    response={200: StreamTokenOut, 404: ErrorOut},
    summary="A token to follow a run's stream",
)
def create_stream_token(request: HttpRequest, run_id: SafeStr) -> dict[str, object]:
    """A short-lived token for this run only: for browsers, which cannot set headers on a WebSocket."""
    run = get_run_or_404(request, run_id)
    token = stream_token_issue(run_id=run.pk, user_id=request.auth.pk, api_key_id=request.api_key.pk)  # type: ignore[attr-defined]
    return {
        "token": token,
        "expires_in": settings.HARNESS_STREAM_TOKEN_SECONDS,
        "websocket_path": f"/ws/runs/{run.pk}/?token={token}",
        "events_path": f"/api/runs/{run.pk}/events?token={token}",
    }


@router.get("/agents", response=AgentsOut, summary="The agents and models you may run")
def list_agents(request: HttpRequest) -> dict[str, object]:
    """What the run engine's workers published they run (never this process's own idea of it),
    and whether every live worker runs that same registry."""
    from execution.beats import live_workers

    agents = published_agents()
    version = published_version(agents)
    workers = [
        {"worker_id": worker.worker_id, "registry_version": worker.registry_version} for worker in live_workers()
    ]
    return {
        "agents": [
            {
                "name": agent.name,
                "description": agent.description,
                "tools": agent.tools,
                "sandbox": agent.sandbox,
                "models": agent.models,
                "version": agent.version,
                "spec": agent.spec,
            }
            for agent in agents.values()
        ],
        "registry_version": version,
        "workers": workers,
        "consistent": bool(workers) and all(worker["registry_version"] == version for worker in workers),
        "models": settings.HARNESS_ALLOWED_MODELS,
        "default_model": settings.HARNESS_MODEL,
        "openai_configured": bool(settings.OPENAI_API_KEY),
    }
