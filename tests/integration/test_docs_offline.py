"""The API docs and the front door in a real browser, with nothing reachable but the harness."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.integration.harness import Harness

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("docs")).start()
    yield h
    h.close()


def test_api_docs_render_from_the_harness_own_files(browser, harness):
    page = browser.new_page()
    outside: list[str] = []

    def only_the_harness(route):
        if urlsplit(route.request.url).netloc == urlsplit(harness.base_url).netloc:
            route.continue_()
        else:  # a CDN, say: there is no internet where the harness may run
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_harness)
    page.goto(f"{harness.base_url}/api/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=20_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/api/runs" in path for path in paths), paths
    assert outside == []
    page.close()


def test_the_front_door_leads_to_the_console(browser, harness):
    page = browser.new_page()
    response = page.goto(f"{harness.base_url}/")
    assert response is not None and response.ok
    assert urlsplit(page.url).path == "/admin/login/"  # the admin, after its login
    assert "Page not found" not in page.content()
    page.close()
