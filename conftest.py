"""Fixtures shared by every app's tests: an operator, a viewer and an outsider."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.services import apikey_create
from audit.services import Actor
from runs.models import Run
from runs.services import run_create


@dataclass
class Principal:
    user: User
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_principal(username: str, **fields: Any) -> Principal:
    user = User.objects.create_user(username=username, **fields)
    _, raw = apikey_create(user=user, actor=Actor.system("tests"))
    return Principal(user, raw)


@pytest.fixture
def alice(db: Any) -> Principal:
    return make_principal("alice")


@pytest.fixture
def outsider(db: Any) -> Principal:
    return make_principal("mallory")


@pytest.fixture
def operator(db: Any) -> User:
    return User.objects.create_superuser("operator", password="operator-pass-123")


@pytest.fixture
def viewer(db: Any) -> User:
    from django.contrib.auth.models import Permission

    user = User.objects.create_user("viewer", password="viewer-pass-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    return user


class Api:
    """The HTTP API as a client sees it."""

    def __init__(self) -> None:
        self.client = Client()

    def post(self, path: str, body: Any = None, *, who: Principal | None = None, raw: str | None = None) -> Any:
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        headers = who.headers if who else {}
        return self.client.post(path, data=data, content_type="application/json", headers=headers)

    def get(self, path: str, *, who: Principal | None = None, **params: Any) -> Any:
        return self.client.get(path, params, headers=who.headers if who else {})


@pytest.fixture
def api() -> Api:
    return Api()


def make_run(owner: Principal, **overrides: Any) -> Run:
    fields: dict[str, Any] = {"input": "What is 6 * 7?", "agent": "calculator", "model": "offline"}
    fields.update(overrides)
    return run_create(owner=owner.user, actor=Actor.system("tests"), **fields)
