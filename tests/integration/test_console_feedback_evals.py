"""Feedback and comparisons in Chromium, against the real harness.

Feedback: the run's owner gives it through the API; an operator (a member of the `operator`
group) annotates on the run page; the run list filters by feedback; the "needs review" queue
promotes a run to a golden case and marks another reviewed; a viewer sees it all and can change
nothing. Comparisons: three `manage.py eval` runs of the starter dataset with a golden case
changed between them (once through the ORM as a re-recording would, once in the admin); the
eval run pages show what became failing and what was fixed with the output diff, the case shows
its version diffs, and the eval run list and the dataset page draw the pass-rate trend.
Screenshots (`make screenshots`) go to docs/console/feedback.png and docs/console/eval-compare.png."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.conftest import admin_login, member, screenshot
from tests.integration.conftest import log_in as admin_log_in
from tests.integration.harness import Harness

pytestmark = pytest.mark.integration

VIEWPORT = {"width": 1280, "height": 900}
CASE_NAME = "calculator calls calculate with the expression"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: Any) -> Any:
    h = Harness(tmp_path_factory.mktemp("feedback")).start()
    yield h
    h.close()


def admin_url(harness: Harness, model: str, object_id: str = "", view: str = "change") -> str:
    """/admin/<app>/<model>/<quoted id>/<view>/ (the admin writes "_" in an id as "_5F")."""
    if not object_id:
        return f"{harness.base_url}/admin/{model}/"
    return f"{harness.base_url}/admin/{model}/{object_id.replace('_', '_5F')}/{view}/"


def finish(harness: Harness, client: httpx.Client, text: str) -> str:
    response = client.post("/api/runs", json={"input": text, "agent": "calculator", "model": "offline"})
    assert response.status_code == 202, response.text
    done = harness.wait_for(client, response.json()["id"], ("succeeded", "failed"), timeout=60)
    assert done["status"] == "succeeded", done
    return done["id"]


def rows_of(page: Any) -> set[str]:
    return set(page.locator("#result_list tbody th a").all_inner_texts())


def test_feedback_from_the_api_to_a_golden_case(browser: Any, harness: Harness) -> None:
    alice = harness.client(harness.api_key("alice"))
    wrong, fine = finish(harness, alice, "What is 6 * 7?"), finish(harness, alice, "What is 2 + 3?")

    # 1. The owner's feedback through the API.
    given = alice.post(
        f"/api/runs/{wrong}/feedback", json={"score": -1, "label": "wrong-answer", "comment": "should show working"}
    )
    assert given.status_code == 201, given.text
    changed = alice.post(
        f"/api/runs/{wrong}/feedback", json={"score": -1, "label": "wrong-answer", "comment": "show the working"}
    )
    assert changed.status_code == 200 and changed.json()["id"] == given.json()["id"]
    assert alice.post(f"/api/runs/{fine}/feedback", json={"score": 1}).status_code == 201
    assert [item["comment"] for item in alice.get(f"/api/runs/{wrong}/feedback").json()["items"]] == [
        "show the working"
    ]
    bad = alice.post(f"/api/runs/{fine}/feedback", json={"score": 3})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("score:")
    mallory = harness.client(harness.api_key("mallory"))
    assert mallory.post(f"/api/runs/{wrong}/feedback", json={"score": 1}).status_code == 404
    assert harness.client().post(f"/api/runs/{wrong}/feedback", json={"score": 1}).status_code == 401

    # 2. An operator annotates on the run page.
    page = log_in(browser, harness, "olga", member(harness, "olga", "operator"))
    page.goto(admin_url(harness, "runs/run", fine))
    panel = page.locator("#feedback")
    assert "alice (api)" in panel.inner_text() and "+1" in panel.inner_text()
    page.check("#feedback-form input[name=score][value='-1']")
    page.fill("#feedback_label", "needs-review")
    page.fill("#feedback_comment", "the tool result was not checked")
    page.click("#feedback-save")
    page.wait_for_selector("text=Annotated run")
    panel_text = page.locator("#feedback").inner_text()
    assert "olga (operator)" in panel_text and "needs-review" in panel_text and "needs review" in panel_text
    assert page.locator("#feedback-save").inner_text() == "Change annotation"
    page.locator("#feedback").screenshot(path=str(harness.workdir / "feedback-panel.png"))

    # 3. The run list filters by feedback and by label.
    page.goto(admin_url(harness, "runs/run"))
    with page.expect_navigation():
        page.click("#changelist-filter a:has-text('Negative')")
    assert rows_of(page) == {wrong, fine}  # olga's annotation of `fine` is negative too
    with page.expect_navigation():
        page.click("#changelist-filter a:has-text('Positive')")
    assert "feedback=positive" in page.url and rows_of(page) == {fine}
    page.goto(admin_url(harness, "runs/run") + "?feedback_label=wrong-answer")
    assert rows_of(page) == {wrong}
    page.goto(admin_url(harness, "runs/run") + "?feedback=none")
    assert rows_of(page) == set()

    # 4. The review queue: promote one run, mark the other reviewed.
    page.goto(f"{harness.base_url}/admin/feedback/feedback/review/")
    queue = page.locator("#review-queue")
    assert queue.locator(f"tr[data-run='{wrong}']").count() == 1
    assert queue.locator(f"tr[data-run='{fine}']").count() == 1
    screenshot(page, "feedback.png", full_page=True)
    page.click(f"tr[data-run='{wrong}'] a.promote-golden")
    page.wait_for_selector("#promote-form")
    page.fill("#id_dataset", "from-feedback")
    page.click("input[name=_save]")
    page.wait_for_selector("text=Promoted")
    case = harness.sql(
        "from evals.models import GoldenCase\n"
        f"case = GoldenCase.objects.get(source_run_id={wrong!r})\n"
        "print(json.dumps([case.pk, case.dataset.name, case.promoted_by.username]))"
    )
    assert case[1:] == ["from-feedback", "olga"]
    page.goto(f"{harness.base_url}/admin/feedback/feedback/review/")
    assert page.locator(f"tr[data-run='{wrong}']").count() == 0
    page.click(f"tr[data-run='{fine}'] button.mark-reviewed")
    page.wait_for_selector("text=Marked 1 run(s) reviewed.")
    assert page.locator("#review-empty").count() == 1
    reviewed = harness.sql(
        "from feedback.models import Feedback\n"
        "print(json.dumps(sorted((f.run_id, f.reviewed_by.username) for f in Feedback.objects.all())))"
    )
    assert sorted(reviewed) == sorted([[wrong, "olga"], [fine, "olga"], [fine, "olga"]])
    page.close()

    # 5. A viewer reads the feedback and the queue, and can change nothing.
    viewer = log_in(browser, harness, "vera", member(harness, "vera", "viewer"))
    viewer.goto(admin_url(harness, "runs/run", fine))
    assert "needs-review" in viewer.locator("#feedback").inner_text()
    assert viewer.locator("#feedback-form").count() == 0
    refused = viewer.goto(f"{harness.base_url}/admin/feedback/feedback/add/")
    assert refused is not None and refused.status == 403
    viewer.goto(f"{harness.base_url}/admin/feedback/feedback/review/")
    assert viewer.locator("#review-empty").count() == 1
    viewer.close()


def eval_runs(harness: Harness) -> list[str]:
    return harness.sql(
        "from evals.models import EvalRun\nprint(json.dumps(list(EvalRun.objects.order_by('id').values_list('id', flat=True))))"
    )


def test_an_eval_run_shows_what_changed_since_the_previous_one(browser: Any, harness: Harness) -> None:
    assert harness.manage("eval", "--dataset", "starter", check=False).returncode == 0
    # The calculator's recorded answer changes (as a re-recording after a prompt change would).
    case_id = harness.sql(
        "from evals.models import GoldenCase\n"
        "from evals.services import golden_save\n"
        "from audit.services import Actor\n"
        f"case = GoldenCase.objects.get(name={CASE_NAME!r})\n"
        "case.cassette = json.loads(json.dumps(case.cassette).replace('(2 + 3) * 4 = 20', '(2 + 3) * 4 = 21'))\n"
        "golden_save(case=case, user=None, actor=Actor.system('test'))\n"
        "print(json.dumps(case.pk))"
    )
    second = harness.manage("eval", "--dataset", "starter", check=False)
    assert second.returncode == 1 and "FAIL    starter  calculator calls calculate" in second.stdout

    # An operator accepts the new answer: the case's expectation is edited in the admin.
    page = admin_login(browser, harness)
    page.set_viewport_size(VIEWPORT)
    page.goto(admin_url(harness, "evals/goldencase", case_id))
    page.fill("#id_expected_output", "(2 + 3) * 4 = 21")
    page.click("input[name=_save]")
    page.wait_for_selector("text=was changed successfully")
    assert harness.manage("eval", "--dataset", "starter", check=False).returncode == 0
    first_id, second_id, third_id = eval_runs(harness)[-3:]

    # The second eval: the case became failing, with the output diff.
    page.goto(admin_url(harness, "evals/evalrun", second_id))
    compare = page.locator("#eval-compare")
    assert first_id in compare.inner_text() and "1 newly failing" in " ".join(compare.inner_text().split())
    change = compare.locator(f".eval-change.newly_failing[data-case='{case_id}']")
    assert CASE_NAME in change.inner_text()
    assert change.locator(".eval-diff .del").all_inner_texts() == ["(2 + 3) * 4 = 20"]
    assert change.locator(".eval-diff .add").all_inner_texts() == ["(2 + 3) * 4 = 21"]
    assert "the case was edited between the two evals" in change.inner_text()
    screenshot(page, "eval-compare.png", full_page=False)

    # The third: fixed by the edit, the same output as before.
    page.goto(admin_url(harness, "evals/evalrun", third_id))
    fixed = page.locator(f"#eval-compare .eval-change.fixed[data-case='{case_id}']")
    assert "same output as before: the case's expectations changed" in fixed.inner_text()
    assert second_id in page.locator("#previous-eval").inner_text()

    # The case's versions, each change a diff.
    page.goto(admin_url(harness, "evals/goldencase", case_id))
    versions = page.locator("#version-diffs")
    assert "v2 → v3" in versions.inner_text() and "v1 → v2" in versions.inner_text()
    v3 = versions.locator("#version-3")
    assert v3.locator("[data-field='expected_output'] .add").all_inner_texts() == ["(2 + 3) * 4 = 21"]
    assert "by admin" in v3.inner_text()
    assert versions.locator("#version-2 [data-field='cassette'] .add").count() >= 1

    # The pass-rate trend: on the eval run list and on the dataset's page.
    page.goto(admin_url(harness, "evals/evalrun"))
    chart = page.locator("#eval-trend svg")
    assert chart.count() == 1
    points = chart.locator("circle title").all_text_contents()
    first, middle, last = [p.rsplit(": ", 1)[1] for p in points if "starter" in p][-3:]
    assert (first, last) == ("100%", "100%") and middle != "100%", points
    page.screenshot(path=str(harness.workdir / "eval-trend.png"), full_page=False)
    dataset = harness.sql("from evals.models import Dataset\nprint(json.dumps(Dataset.objects.get(name='starter').pk))")
    page.goto(admin_url(harness, "evals/dataset", str(dataset)))
    assert page.locator("#eval-trend svg circle").count() >= 3
    page.close()


def log_in(browser: Any, harness: Harness, username: str, password: str) -> Any:
    return admin_log_in(browser, harness, username, password, viewport=VIEWPORT)
