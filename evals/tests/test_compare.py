"""Comparisons: an eval run against the previous one, a golden case between versions, the pass-rate trend."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit.services import Actor
from conftest import make_run
from evals import compare
from evals.models import EvalRun
from evals.services import eval_run, golden_promote, golden_save
from execution.executor import run_execute

pytestmark = pytest.mark.django_db(transaction=True)


def promoted(owner, operator, *, input, dataset="regressions", **fields):
    run = make_run(owner, agent="calculator", input=input, **fields)
    run_execute(run.pk)
    run.refresh_from_db()
    return golden_promote(run=run, dataset_name=dataset, user=operator)


def edit(case, operator, **fields):
    for name, value in fields.items():
        setattr(case, name, value)
    return golden_save(case=case, user=operator, actor=Actor.for_user(operator))


# --- text diffs -------------------------------------------------------------------------------


def test_a_text_diff_is_line_based_and_bounded():
    assert compare.text_diff("same", "same") == []
    lines = compare.text_diff("a\nb\nc", "a\nB\nc")
    assert [(line.kind, line.text) for line in lines] == [
        ("hunk", "@@ -1,3 +1,3 @@"),
        ("ctx", "a"),
        ("del", "b"),
        ("add", "B"),
        ("ctx", "c"),
    ]
    clipped = compare.text_diff("x" * 500 + "1", "x" * 500 + "2", max_chars=100)
    assert [line.kind for line in clipped] == ["note", "note"]
    assert "HARNESS_EVAL_DIFF_MAX_CHARS" in clipped[-1].text


# --- an eval run against the previous one -----------------------------------------------------


def test_an_eval_run_shows_what_changed_since_the_previous_one(alice, operator):
    stable = promoted(alice, operator, input="What is 2 + 2?")
    flipping = promoted(alice, operator, input="What is 3 * 3?")
    first = eval_run(datasets=["regressions"])
    assert compare.eval_compare(first).previous is None  # nothing before it

    edit(flipping, operator, expected_output="3 * 3 = 10", output_match="exact")
    second = eval_run(datasets=["regressions"])
    changes = compare.eval_compare(second)
    assert changes.previous == first
    assert [c.case_id for c in changes.newly_failing] == [flipping.pk]
    assert changes.fixed == [] and changes.still_failing == [] and changes.still_passing == 1
    (change,) = changes.newly_failing
    assert change.edited and (change.before.version, change.after.version) == (1, 2)
    assert change.after.reasons == ["output is not exactly '3 * 3 = 10' (got '3 * 3 = 9')"]
    assert change.diff == []  # the same output: the expectation changed, not the agent

    third = eval_run(datasets=["regressions"])
    still = compare.eval_compare(third)
    assert [c.case_id for c in still.still_failing] == [flipping.pk] and not still.newly_failing

    edit(flipping, operator, expected_output="3 * 3 = 9")
    fourth = eval_run(datasets=["regressions"])
    fixed = compare.eval_compare(fourth)
    assert fixed.previous == third and [c.case_id for c in fixed.fixed] == [flipping.pk]
    assert fixed.still_passing == 1 and stable.pk not in [c.case_id for c in fixed.fixed]


def test_a_changed_output_is_diffed_and_added_and_removed_cases_are_named(alice, operator):
    case = promoted(alice, operator, input="What is 6 * 7?")
    first = eval_run(datasets=["regressions"])
    # The same case now replays a different answer: its recorded final message changed.
    assert "6 * 7 = 42" in str(case.cassette[-1])
    edit(case, operator, cassette=_replace_text(case.cassette, "6 * 7 = 42", "6 * 7 = <b>41</b>"))
    added = promoted(alice, operator, input="What is 1 + 1?")
    second = eval_run(datasets=["regressions"])
    changes = compare.eval_compare(second)
    assert changes.previous == first
    (failing,) = changes.newly_failing
    assert [(line.kind, line.text) for line in failing.diff if line.kind in ("add", "del")] == [
        ("del", "6 * 7 = 42"),
        ("add", "6 * 7 = <b>41</b>"),
    ]
    assert [c.case_id for c in changes.added] == [added.pk]

    edit(added, operator, active=False)
    third = eval_run(datasets=["regressions"])
    assert [c.case_id for c in compare.eval_compare(third).removed] == [added.pk]


def _replace_text(value, old, new):
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replace_text(item, old, new) for item in value]
    if isinstance(value, dict):
        return {key: _replace_text(item, old, new) for key, item in value.items()}
    return value


def test_only_the_same_datasets_mode_and_agent_filter_are_compared(alice, operator):
    promoted(alice, operator, input="What is 2 + 5?")
    promoted(alice, operator, input="What is 2 + 6?", dataset="other")
    both = eval_run(datasets=["regressions", "other"])
    one = eval_run(datasets=["regressions"])
    live = eval_run(datasets=["regressions"], mode="live")
    filtered = eval_run(datasets=["regressions"], agent="calculator")
    again = eval_run(datasets=["regressions"])
    assert compare.previous_eval_run(one) is None
    assert compare.previous_eval_run(live) is None
    assert compare.previous_eval_run(filtered) is None
    assert compare.previous_eval_run(again) == one
    assert compare.previous_eval_run(eval_run(datasets=["other", "regressions"])) == both
    # An eval still running is never "the previous one".
    EvalRun.objects.filter(pk=again.pk).update(status=EvalRun.Status.RUNNING)
    assert compare.previous_eval_run(eval_run(datasets=["regressions"])) == one


# --- a golden case between versions ---------------------------------------------------------


def test_a_golden_cases_versions_show_what_changed(alice, operator):
    case = promoted(alice, operator, input="What is 4 * 4?")
    diffs, more = compare.version_diffs(case)
    assert diffs == [] and not more
    edit(case, operator, expected_output="4 * 4 = 16\nexactly", output_match="exact", tags=["smoke"])
    edit(case, operator, name="sixteen")
    diffs, more = compare.version_diffs(case)
    assert [(d.previous, d.version) for d in diffs] == [(2, 3), (1, 2)] and not more
    (renamed,) = diffs[0].changes
    assert (renamed.field, renamed.after) == ("name", "sixteen") and diffs[0].created_by == "operator"
    fields = {change.field: change for change in diffs[1].changes}
    assert set(fields) == {"expected_output", "output_match", "tags"}
    assert (fields["output_match"].before, fields["output_match"].after) == ("contains", "exact")
    assert ("add", "exactly") in [(line.kind, line.text) for line in fields["expected_output"].diff]
    assert ("add", '  "smoke"') in [(line.kind, line.text) for line in fields["tags"].diff]
    # Only the latest versions are read.
    diffs, more = compare.version_diffs(case, limit=1)
    assert [(d.previous, d.version) for d in diffs] == [(2, 3)] and more


# --- the pass-rate trend ----------------------------------------------------------------------


def test_the_pass_rate_trend_is_per_dataset_and_mode(alice, operator):
    case = promoted(alice, operator, input="What is 8 + 8?")
    promoted(alice, operator, input="What is 8 + 9?")
    promoted(alice, operator, input="What is 9 + 9?", dataset="other")
    first = eval_run()
    edit(case, operator, expected_output="wrong")
    second = eval_run(datasets=["regressions"])
    live = eval_run(datasets=["other"], mode="live")
    trend = compare.pass_rate_trend()
    assert trend.eval_runs[-3:] == [first.pk, second.pk, live.pk]
    assert trend.series["regressions"][-3:] == [1.0, 0.5, None]
    assert trend.series["other"][-3:] == [1.0, None, None]
    assert trend.series["other (live)"][-3:] == [None, None, 1.0]
    only = compare.pass_rate_trend(dataset="regressions")
    assert only.eval_runs == [first.pk, second.pk] and only.series == {"regressions": [1.0, 0.5]}
    assert compare.pass_rate_trend(limit=2).eval_runs == [second.pk, live.pk]
    svg = compare.trend_chart(only, title="regressions <trend>")
    assert svg.startswith("<svg") and "regressions &lt;trend&gt;" in svg and "50%" in svg


# --- the admin pages --------------------------------------------------------------------------


def test_the_eval_run_page_shows_the_comparison_in_a_fixed_number_of_queries(client, alice, operator):
    cases = [promoted(alice, operator, input=f"What is {n} + {n}?") for n in (1, 2)]
    eval_run(datasets=["regressions"])
    edit(cases[0], operator, expected_output="<script>alert(1)</script>")
    small = eval_run(datasets=["regressions"])
    client.force_login(operator)
    url = reverse("admin:evals_evalrun_change", args=[quote(small.pk)])
    client.get(url)  # the first request fills the content types cache
    with CaptureQueriesContext(connection) as few:
        page = client.get(url).content.decode()
    assert 'id="eval-compare"' in page and "Newly failing" in page and cases[0].name in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "the case was edited between the two evals" in page

    for n in range(3, 9):
        promoted(alice, operator, input=f"What is {n} + {n}?")
    eval_run(datasets=["regressions"], repeat=2)
    large = eval_run(datasets=["regressions"], repeat=2)
    assert large.total == 16 and small.total == 2
    with CaptureQueriesContext(connection) as many:
        page = client.get(reverse("admin:evals_evalrun_change", args=[quote(large.pk)])).content.decode()
    assert "still passing" in page
    assert len(many.captured_queries) == len(few.captured_queries), [q["sql"] for q in many.captured_queries]
    assert len(few.captured_queries) <= 16


def test_the_eval_run_list_and_dataset_page_show_the_trend(client, alice, operator):
    promoted(alice, operator, input="What is 5 + 5?")
    eval_run(datasets=["regressions"])
    eval_run(datasets=["regressions"])
    client.force_login(operator)
    listing = client.get(reverse("admin:evals_evalrun_changelist")).content.decode()  # (and fills caches)
    assert 'id="eval-trend"' in listing and "<svg" in listing and "regressions" in listing
    dataset = client.get(
        reverse("admin:evals_dataset_change", args=[quote(str(_dataset_pk("regressions")))])
    ).content.decode()
    assert "Pass rate of regressions" in dataset and "<svg" in dataset
    with CaptureQueriesContext(connection) as few:
        client.get(reverse("admin:evals_evalrun_changelist"))
    for _ in range(3):
        eval_run(datasets=["regressions"])
    with CaptureQueriesContext(connection) as many:
        client.get(reverse("admin:evals_evalrun_changelist"))
    assert len(many.captured_queries) == len(few.captured_queries)


def _dataset_pk(name):
    from evals.models import Dataset

    return Dataset.objects.get(name=name).pk


def test_the_golden_case_page_shows_its_version_diff(client, alice, operator):
    case = promoted(alice, operator, input="What is 7 + 7?")
    edit(case, operator, expected_output="7 + 7 = <14>")
    client.force_login(operator)
    page = client.get(reverse("admin:evals_goldencase_change", args=[quote(case.pk)])).content.decode()
    assert 'id="version-diffs"' in page and "v1 → v2" in page
    assert '<span class="add">7 + 7 = &lt;14&gt;</span>' in page
    assert '<span class="del">7 + 7 = 14</span>' in page


def test_a_viewer_sees_comparisons_but_cannot_run_or_edit(client, alice, operator):
    case = promoted(alice, operator, input="What is 3 + 3?")
    evaluation = eval_run(datasets=["regressions"])
    viewer = User.objects.create_user("evalviewer", password="pw-123456789", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__in=["view_evalrun", "view_goldencase"]))
    client.force_login(viewer)
    assert client.get(reverse("admin:evals_evalrun_change", args=[quote(evaluation.pk)])).status_code == 200
    page = client.get(reverse("admin:evals_goldencase_change", args=[quote(case.pk)])).content.decode()
    assert 'id="version-diffs"' in page and 'name="_save"' not in page


def test_the_version_diffs_and_the_trend_stop_at_their_settings(alice, operator, settings):
    settings.HARNESS_EVAL_VERSION_DIFFS = 1
    settings.HARNESS_EVAL_TREND_RUNS = 2
    case = promoted(alice, operator, input="What is 5 + 5?")
    edit(case, operator, name="ten")
    diffs, more = compare.version_diffs(case)
    assert [(d.previous, d.version) for d in diffs] == [(1, 2)] and not more  # exactly the limit
    edit(case, operator, name="ten again")
    diffs, more = compare.version_diffs(case)
    assert [(d.previous, d.version) for d in diffs] == [(2, 3)] and more  # one past it
    runs = [eval_run() for _ in range(3)]
    assert compare.pass_rate_trend().eval_runs == [runs[1].pk, runs[2].pk]
