"""The one NinjaAPI: every app's router is mounted here under /api/."""

from __future__ import annotations

from typing import Any

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
from runs.schemas import ErrorOut, FieldError


class HarnessAPI(NinjaAPI):
    """The API, with the answers every operation can give in its OpenAPI document: 401 without a
    valid key, 422 for invalid input, 413 for a body over the size limit, 429 when the key's rate
    limit is used up, and 503 when the database is unreachable or busy."""

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:
        schema = super().get_openapi_schema(*args, **kwargs)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (ErrorOut, FieldError):
            if model.__name__ not in components:
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(definition.pop("$defs", {}))
                components[model.__name__] = definition
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        retry = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                # ninja keys declared statuses by int; JSON keys are strings: one key per status.
                responses = {str(status): answer for status, answer in operation.get("responses", {}).items()}
                operation["responses"] = responses
                wanted = {"503": ("The database is unreachable or busy; nothing was changed.", retry)}
                if operation.get("security"):
                    wanted["401"] = ("A missing, invalid or revoked API key.", {})
                    wanted["429"] = ("The key's rate limit is used up.", retry)
                if operation.get("parameters") or operation.get("requestBody"):
                    wanted["422"] = ("Invalid input: `detail` says what, `errors` lists each field.", {})
                if operation.get("requestBody"):
                    wanted["413"] = ("The request body is over HARNESS_MAX_REQUEST_BYTES.", {})
                for status, (description, headers) in wanted.items():
                    if status not in responses:
                        responses[status] = {"description": description, "content": error}
                        if headers:
                            responses[status]["headers"] = headers
        return schema


api = HarnessAPI(
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
        errors = [{"type": "json_invalid", "loc": ["body"], "msg": f"malformed JSON body: {message}"}]
        return api.create_response(request, invalid_input_body(errors), status=422)
    return api.create_response(request, {"detail": message}, status=exc.status_code)


def _field(loc: list[Any]) -> str:
    """["body", "payload", "input"] -> "input"; ["query", "cursor"] -> "cursor"."""
    named = [str(part) for part in loc if part not in ("body", "payload", "query", "path", "header")]
    return ".".join(named) or (str(loc[0]) if loc else "request")


def invalid_input_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """One shape for every 422: `detail` a sentence (as every other error), `errors` each field."""
    sentences = [f"{_field(error['loc'])}: {str(error['msg']).removeprefix('Value error, ')}" for error in errors]
    return {"detail": "; ".join(sentences), "errors": errors}


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        {"type": str(error.get("type", "")), "loc": list(error.get("loc", [])), "msg": str(error.get("msg", ""))}
        for error in exc.errors
    ]
    return api.create_response(request, invalid_input_body(errors), status=422)


def _mount() -> None:
    from artifacts.api import router as artifacts_router
    from billing.api import router as billing_router
    from runs.api import router as runs_router
    from sandboxes.api import router as sandboxes_router

    api.add_router("/", runs_router)
    api.add_router("/", artifacts_router)
    api.add_router("/", sandboxes_router)
    api.add_router("/", billing_router)
    api.add_router("/", "harness_site.stats_api.router")
    api.add_router("/", "feedback.api.router")
    api.add_router("/", "approvals.api.router")


_mount()
