"""Fixtures shared by every app's tests: an operator, a viewer, an outsider, a sandbox root."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

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


def redis_reachable() -> bool:
    """Whether the Redis of the machine (127.0.0.1:6379) answers: the Redis paths' tests skip without it."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def settings_import(**variables: str) -> subprocess.CompletedProcess[str]:
    """`import harness_site.settings` in a fresh process with only these variables (and DEBUG):
    how a process starting with them would fare."""
    from django.conf import settings

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", tempfile.gettempdir()),
        "DEBUG": "true",
        "HARNESS_IGNORE_ENV_FILE": "true",
        **variables,
    }
    return subprocess.run(
        [sys.executable, "-c", "import harness_site.settings"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def make_principal(username: str, **fields: Any) -> Principal:
    user = User.objects.create_user(username=username, **fields)
    _, raw = apikey_create(user=user, actor=Actor.system("tests"))
    return Principal(user, raw)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that drives the real browser is marked `browser` (CI runs those once)."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(autouse=True)
def fresh_agent_catalog() -> Iterator[None]:
    """Each test loads HARNESS_AGENT_MODULES afresh (tests add agents to runs.registry.AGENTS
    or change the setting) and reads the published registry afresh."""
    from execution.catalog import catalog_reset
    from runs.published import published_clear

    catalog_reset()
    published_clear()
    yield
    catalog_reset()
    published_clear()


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


# Tight limits so the escape attempts end in seconds.
TEST_LIMITS = {
    "HARNESS_SANDBOX_COMMAND_TIMEOUT_SECONDS": 5,
    "HARNESS_SANDBOX_CPU_SECONDS": 5,
    "HARNESS_SANDBOX_MEMORY_MB": 512,
    "HARNESS_SANDBOX_MAX_PROCESSES": 32,
    "HARNESS_SANDBOX_MAX_FILE_MB": 8,
}


@pytest.fixture
def sandbox_root() -> Iterator[Path]:
    """A sandbox root of its own under /tmp (which the unprivileged sandbox uid can traverse)."""
    root = Path(tempfile.mkdtemp(prefix="harness-sbx-test-"))
    with override_settings(HARNESS_SANDBOX_ROOT=root, SANDBOX_PROVIDER="", E2B_API_KEY="", **TEST_LIMITS):
        yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def bwrap(sandbox_root: Path) -> Path:
    """The local provider must be usable: `make test` installs bubblewrap (make sandbox-deps)."""
    from sandboxes.bwrap import bwrap_path

    if bwrap_path() is None:
        pytest.fail("bubblewrap is not installed: run `make sandbox-deps` (apt-get install bubblewrap)")
    return sandbox_root
