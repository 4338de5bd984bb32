from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer

from accounts.services import apikey_authenticate
from common.db import db_call


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


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer <key>`; each failure says what is wrong, never whose key it was."""

    def __call__(self, request: HttpRequest) -> Any:
        return self.authenticate(request, bearer_token(request))

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        api_key = apikey_authenticate(raw_key=token)
        if api_key is None:
            raise ApiAuthError("invalid or revoked API key")
        request.api_key = api_key  # type: ignore[attr-defined]
        return api_key.user


class AsyncApiKeyAuth(ApiKeyAuth):
    """The same check for async operations: the key lookup runs on a shared database thread."""

    async def __call__(self, request: HttpRequest) -> Any:  # type: ignore[override]
        api_key = await db_call(apikey_authenticate, raw_key=bearer_token(request))
        if api_key is None:
            raise ApiAuthError("invalid or revoked API key")
        request.api_key = api_key  # type: ignore[attr-defined]
        return api_key.user


async_api_key_auth = AsyncApiKeyAuth()
