from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer

from accounts.models import ApiKey
from accounts.services import apikey_authenticate
from common.db import db_call
from common.ratelimits import api_rate_count


class ApiAuthError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def bearer_token(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    if not header:
        raise ApiAuthError("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiAuthError("malformed Authorization header: expected 'Bearer <key>'")
    return token.strip()


def apikey_authenticate_counted(*, raw_key: str) -> ApiKey:
    """The active key for `raw_key`, with this request counted against its rate limit.

    Raises ApiAuthError (nothing counted: a bad key is nobody's request) or RateLimited.
    """
    api_key = apikey_authenticate(raw_key=raw_key)
    if api_key is None:
        raise ApiAuthError("invalid or revoked API key")
    api_rate_count(key_id=api_key.pk)
    return api_key


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer <key>`; each failure says what is wrong, never whose key it was.

    Every request of a valid key counts against its HARNESS_API_RATE_LIMIT here, where the
    key is first known (common/ratelimits.py says why not in a ninja throttle).
    """

    def __call__(self, request: HttpRequest) -> Any:
        return self.authenticate(request, bearer_token(request))

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        api_key = apikey_authenticate_counted(raw_key=token)
        request.api_key = api_key  # type: ignore[attr-defined]
        return api_key.user


class AsyncApiKeyAuth(ApiKeyAuth):
    """The same check for async operations: the key lookup and the count run on a shared database thread."""

    async def __call__(self, request: HttpRequest) -> Any:  # type: ignore[override]
        api_key = await db_call(apikey_authenticate_counted, raw_key=bearer_token(request))
        request.api_key = api_key  # type: ignore[attr-defined]
        return api_key.user


async_api_key_auth = AsyncApiKeyAuth()
