"""Fixtures for the integration tests."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.phoenix import PhoenixServer


@pytest.fixture(scope="session")
def phoenix_server() -> Iterator[PhoenixServer]:
    """One real Phoenix server (`phoenix serve`) for the whole session; tests separate by project name."""
    server = PhoenixServer().start()
    try:
        yield server
    finally:
        server.stop()


CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run `make system-deps` (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


def admin_login(browser: Any, harness: Any, *, wait_for: str = "text=Operations") -> Any:
    """A new page, logged in to the admin as the operator `ensureadmin` creates."""
    login = harness.manage("ensureadmin", "--reset").stdout
    password = login.split("password '")[1].split("'")[0]
    page = browser.new_page()
    page.goto(f"{harness.base_url}/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector(wait_for)
    return page


def member(harness: Any, username: str, role: str) -> str:
    """A user of the role group `role`, made as an operator would (`manage.py setrole`); its password."""
    password = f"{username}-password-0123"
    harness.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User\n"
        f"user, _ = User.objects.get_or_create(username={username!r})\n"
        f"user.set_password({password!r})\n"
        "user.save()",
    )
    assert f"{username}: {role}" in harness.manage("setrole", username, role).stdout
    return password


def log_in(
    browser: Any,
    harness: Any,
    username: str,
    password: str,
    *,
    next_url: str = "/admin/",
    wait_for: str = "#site-name",
    viewport: dict[str, int] | None = None,
) -> Any:
    """A new page, logged in to the admin as `username`, at `next_url`."""
    page = browser.new_page(viewport=viewport or {"width": 1280, "height": 800})
    page.goto(f"{harness.base_url}/admin/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector(wait_for)
    return page


# The README's screenshots (docs/console/) are written by the browser tests when
# HARNESS_SCREENSHOTS=1 (`make screenshots`); otherwise into a temporary folder of this
# process, so that `make test` leaves the checkout as it found it.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
_scratch: list[Path] = []


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save the page as `name`: into docs/console/ when asked for, else into a scratch folder."""
    if os.environ.get("HARNESS_SCREENSHOTS") == "1":
        folder = SCREENSHOTS
    else:
        if not _scratch:
            _scratch.append(Path(tempfile.mkdtemp(prefix="harness-screenshots-")))
            atexit.register(shutil.rmtree, _scratch[0], True)
        folder = _scratch[0]
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=full_page)
    return folder / name
