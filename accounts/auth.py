from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer

from accounts.services import apikey_authenticate


class ApiAuthError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer <key>`; each failure says what is wrong, never whose key it was."""

    def __call__(self, request: HttpRequest) -> Any:
        header = request.headers.get("Authorization", "")
        if not header:
            raise ApiAuthError("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiAuthError("malformed Authorization header: expected 'Bearer <key>'")
        return self.authenticate(request, token.strip())

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        api_key = apikey_authenticate(raw_key=token)
        if api_key is None:
            raise ApiAuthError("invalid or revoked API key")
        request.api_key = api_key  # type: ignore[attr-defined]
        return api_key.user
