"""The one NinjaAPI: every app's router is mounted here under /api/."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from accounts.auth import ApiAuthError, ApiKeyAuth
from accounts.idempotency import IdempotencyError
from billing.services import BudgetError
from common.ratelimits import RateLimited
from harness_site.middleware import database_unavailable_response

api = NinjaAPI(
    title="Agent harness API",
    version="1",
    description="Start agent runs, follow them, cancel them. Authenticate with `Authorization: Bearer <API key>`.",
    auth=ApiKeyAuth(),
    urls_namespace="api",
)


@api.exception_handler(ApiAuthError)
def auth_error(request: HttpRequest, exc: ApiAuthError) -> HttpResponse:
    response = api.create_response(request, {"detail": exc.message}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


@api.exception_handler(AuthenticationError)
def authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return auth_error(request, ApiAuthError("invalid or missing API key"))


@api.exception_handler(RateLimited)
def rate_limited(request: HttpRequest, exc: RateLimited) -> HttpResponse:
    response = api.create_response(request, {"detail": exc.message}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(IdempotencyError)
def idempotency_refused(request: HttpRequest, exc: IdempotencyError) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc)}, status=exc.status_code)


@api.exception_handler(BudgetError)
def budget_refused(request: HttpRequest, exc: BudgetError) -> HttpResponse:
    """A run the budgets refuse: why, the spend so far and when the limit resets; nothing was written."""
    response = api.create_response(request, exc.body(), status=exc.status_code)
    if exc.status_code == 429:
        response["Retry-After"] = str(settings.HARNESS_RETRY_AFTER_SECONDS)
    return response


@api.exception_handler(RequestDataTooBig)
def too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return api.create_response(
        request, {"detail": "request body: over the size limit (HARNESS_MAX_REQUEST_BYTES)"}, status=413
    )


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    return database_unavailable_response(request, exc)


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    message = str(exc)
    if exc.status_code == 400 and "parse" in message.lower():
        # Malformed JSON is a body the client must fix, like any other invalid field.
        return api.create_response(
            request,
            {"detail": [{"type": "json_invalid", "loc": ["body"], "msg": f"malformed JSON body: {message}"}]},
            status=422,
        )
    return api.create_response(request, {"detail": message}, status=exc.status_code)


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [{key: value for key, value in error.items() if key in ("type", "loc", "msg")} for error in exc.errors]
    return api.create_response(request, {"detail": errors}, status=422)


def _mount() -> None:
    from artifacts.api import router as artifacts_router
    from billing.api import router as billing_router
    from runs.api import router as runs_router
    from sandboxes.api import router as sandboxes_router

    api.add_router("/", runs_router)
    api.add_router("/", artifacts_router)
    api.add_router("/", sandboxes_router)
    api.add_router("/", billing_router)


_mount()
