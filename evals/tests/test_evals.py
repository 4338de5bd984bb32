"""Golden cases, promotion, replay, divergence, versioning and the admin's eval surfaces."""

from __future__ import annotations

import dataclasses
import json

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from audit.models import AuditLog
from audit.services import Actor
from conftest import make_run
from evals.models import Dataset, EvalRun, GoldenCase, GoldenCaseVersion
from evals.services import LIVE_ONLY_REASON, EvalError, eval_run, golden_promote, golden_save
from execution.catalog import catalog_reset
from execution.executor import run_execute
from runs import registry

pytestmark = pytest.mark.django_db(transaction=True)


def finished_run(owner, **fields):
    run = make_run(owner, **fields)
    run_execute(run.pk)
    run.refresh_from_db()
    return run


def promoted(owner, operator, dataset="regressions", **fields):
    run = finished_run(owner, **fields)
    return golden_promote(run=run, dataset_name=dataset, user=operator)


def test_the_starter_dataset_ships_and_passes_in_replay(bwrap):
    starter = Dataset.objects.get(name="starter")
    agents = set(starter.cases.values_list("agent", flat=True))
    assert agents == set(registry.agent_names())
    assert all(case.cassette and case.versions.count() == 1 for case in starter.cases.all())
    evaluation = eval_run(datasets=["starter"])
    failures = {r.case.name: r.reasons for r in evaluation.results.filter(passed=False)}
    assert evaluation.status == "passed" and failures == {}
    assert evaluation.total == starter.cases.count()


def test_promotion_keeps_what_replay_needs(alice, operator):
    first = finished_run(alice, agent="assistant", input="one two three")
    run = finished_run(alice, agent="assistant", input="four five", session_id=first.session_id)
    case = golden_promote(run=run, dataset_name="regressions", user=operator)
    assert (case.agent, case.model, case.input, case.version) == ("assistant", "offline", "four five", 1)
    assert case.expected_output == run.output and case.output_match == "contains"
    assert case.expected_tools == [{"name": "text_stats"}]
    assert len(case.cassette) == 2 and case.cassette == run.model_calls
    assert [item.get("role") or item.get("type") for item in case.history][0] == "user"
    assert len(case.history) == 4  # the first turn: user, tool call, tool output, answer
    assert case.source_run == run and case.promoted_by == operator
    audit = AuditLog.objects.get(action="golden.promoted", target_id=case.pk)
    assert audit.actor_label == "operator" and audit.run_id == run.pk
    # It replays: the history is restored, so the answer says turn 2 again.
    evaluation = eval_run(datasets=["regressions"])
    (result,) = evaluation.results.all()
    assert result.passed, result.reasons
    assert "turn 2" in result.output and result.run.origin == "eval"


def test_replay_is_deterministic(alice, operator):
    promoted(alice, operator, agent="calculator", input="What is 12 * 12?")
    first = eval_run(datasets=["regressions"])
    second = eval_run(datasets=["regressions"], repeat=3)
    outputs = {r.output for r in [*first.results.all(), *second.results.all()]}
    assert outputs == {"12 * 12 = 144"}
    assert second.total == 3 and second.status == "passed"
    spans = [sorted(r.run.spans.values_list("kind", flat=True)) for r in second.results.all()]
    assert spans[0] == spans[1] == spans[2]


def test_a_failed_run_becomes_a_regression_test_that_fails_until_fixed(alice, operator):
    run = finished_run(alice, agent="calculator", input="What is 2 ** 100?")
    assert "exponent too large" in run.output
    case = golden_promote(
        run=run,
        dataset_name="regressions",
        user=operator,
        expected_output="2 ** 100 = 1267650600228229401496703205376",
        output_match="exact",
    )
    evaluation = eval_run(datasets=["regressions"])
    (result,) = evaluation.results.all()
    assert not result.passed and evaluation.status == "failed"
    assert result.reasons[0].startswith("output is not exactly '2 ** 100 = 1267650600228229401496703205376'")
    assert result.case_version.version == case.version == 1


def test_a_changed_prompt_or_tool_set_diverges_clearly(alice, operator, monkeypatch):
    promoted(alice, operator, agent="calculator", input="What is 3 + 4?")
    spec = registry.AGENTS["calculator"]
    monkeypatch.setitem(registry.AGENTS, "calculator", dataclasses.replace(spec, instructions="Be terse."))
    catalog_reset()  # the agents are loaded again from the changed declarations
    (result,) = eval_run(datasets=["regressions"]).results.all()
    assert result.reasons == [
        "the run failed: replay diverged at step 1: the agent's instructions (prompt) changed since the recording"
    ]
    monkeypatch.setitem(
        registry.AGENTS, "calculator", dataclasses.replace(spec, tools=(registry.calculate, registry.text_stats))
    )
    catalog_reset()
    (result,) = eval_run(datasets=["regressions"]).results.all()
    assert (
        "replay diverged at step 1: the agent's tools changed (added ['text_stats'], removed none)" in result.reasons[0]
    )


def test_a_cassette_that_runs_out_diverges(alice, operator):
    case = promoted(alice, operator, agent="calculator", input="What is 3 + 4?")
    case.cassette = case.cassette[:1]  # the answer after the tool call is missing
    golden_save(case=case, user=operator, actor=Actor.for_user(operator))
    (result,) = eval_run(datasets=["regressions"]).results.all()
    assert result.reasons == [
        "the run failed: replay diverged at step 2: the agent made a model call the cassette does not have (1 recorded)"
    ]
    assert result.case_version.version == 2


def test_editing_a_case_keeps_each_result_with_the_version_it_ran(alice, operator):
    case = promoted(alice, operator, agent="calculator", input="What is 5 * 5?")
    before = eval_run(datasets=["regressions"]).results.get()
    case.expected_output = "5 * 5 = 26"
    golden_save(case=case, user=operator, actor=Actor.for_user(operator))
    after = eval_run(datasets=["regressions"]).results.get()
    before.refresh_from_db()
    assert (
        before.passed
        and before.case_version.version == 1
        and before.case_version.data["expected_output"] == "5 * 5 = 25"
    )
    assert (
        not after.passed
        and after.case_version.version == 2
        and after.case_version.data["expected_output"] == "5 * 5 = 26"
    )
    assert list(case.versions.values_list("version", flat=True)) == [1, 2]
    assert AuditLog.objects.filter(action="golden.edited", target_id=case.pk).exists()
    version = GoldenCaseVersion.objects.get(case=case, version=1)
    with pytest.raises(TypeError):
        version.save()
    with pytest.raises(TypeError):
        GoldenCaseVersion.objects.filter(case=case).update(data={})
    with pytest.raises(TypeError):
        GoldenCaseVersion.objects.filter(case=case).delete()


def test_bad_requests_are_refused_with_a_reason():
    with pytest.raises(EvalError, match="unknown dataset"):
        eval_run(datasets=["nope"])
    with pytest.raises(EvalError, match="unknown agent"):
        eval_run(agent="nope")
    with pytest.raises(EvalError, match="between 0 and 1"):
        eval_run(min_pass_rate=2)
    assert not EvalRun.objects.exists()


def test_a_case_without_a_cassette_is_live_only_and_replay_skips_it(alice, operator):
    case = promoted(alice, operator, agent="calculator", input="What is 1 + 2?")
    kept = promoted(alice, operator, agent="calculator", input="What is 2 + 2?")
    case.cassette = []
    golden_save(case=case, user=operator, actor=Actor.for_user(operator))
    evaluation = eval_run(datasets=["regressions"])
    # Skipped, said on the eval run, and counted for neither side: the gate judges the rest.
    assert [result.case_id for result in evaluation.results.all()] == [kept.pk]
    assert evaluation.status == "passed" and (evaluation.passed, evaluation.total) == (1, 1)
    assert evaluation.skipped == [
        {"case": case.pk, "name": case.name, "dataset": "regressions", "reason": LIVE_ONLY_REASON}
    ]
    live = eval_run(datasets=["regressions"], mode="live").results.get(case=case)
    assert live.passed, live.reasons  # its model is "offline", which live mode calls directly


def test_the_nightly_eval_is_scheduled():
    from django_q.models import Schedule

    nightly = Schedule.objects.get(name="evals.nightly")
    assert nightly.func == "evals.tasks.nightly_eval" and nightly.schedule_type == Schedule.DAILY
    assert nightly.next_run.hour == 3


# --- the admin -----------------------------------------------------------------------


def test_promote_to_golden_from_the_run_page(client, operator, alice):
    run = finished_run(alice, agent="calculator", input="What is 9 * 9?")
    client.force_login(operator)
    page = client.get(reverse("admin:runs_run_change", args=[quote(run.pk)])).content.decode()
    promote_url = reverse("admin:evals_goldencase_promote", args=[quote(run.pk)])
    assert promote_url in page and "Promote to golden" in page
    form = client.get(promote_url)
    assert form.status_code == 200
    html = form.content.decode()
    assert "9 * 9 = 81" in html and "calculate" in html and "2 model response(s) recorded" in html

    bad = client.post(
        promote_url, {"dataset": "has spaces", "name": "x", "assertions": "not json", "output_match": "exact"}
    )
    assert bad.status_code == 200 and not GoldenCase.objects.filter(dataset__name="has spaces").exists()
    assert "not valid JSON" in bad.content.decode()

    response = client.post(
        promote_url,
        {
            "dataset": "arithmetic",
            "name": "nine squared",
            "expected_output": "9 * 9 = 81",
            "output_match": "exact",
            "assertions": json.dumps([{"type": "regex", "value": "= 81$"}]),
            "expected_tools": json.dumps([{"name": "calculate", "arguments": {"expression": "9 * 9"}}]),
            "forbidden_tools": "save_artifact",
            "tags": "arith, smoke",
        },
    )
    case = GoldenCase.objects.get(dataset__name="arithmetic")
    assert response.status_code == 302 and response["Location"].endswith(
        reverse("admin:evals_goldencase_change", args=[quote(case.pk)])
    )
    assert case.tags == ["arith", "smoke"] and case.forbidden_tools == ["save_artifact"] and case.cassette
    assert AuditLog.objects.get(action="golden.promoted", target_id=case.pk).actor_label == "operator"
    assert eval_run(datasets=["arithmetic"]).status == "passed"


def test_bulk_promotion_asks_for_the_dataset_then_promotes(client, operator, alice):
    runs = [finished_run(alice, agent="calculator", input=f"What is {n} + {n}?") for n in (1, 2)]
    client.force_login(operator)
    changelist = reverse("admin:runs_run_changelist")
    ids = [run.pk for run in runs]
    ask = client.post(changelist, {"action": "promote_to_golden", "_selected_action": ids})
    assert ask.status_code == 200 and "Promote 2 run(s)" in ask.content.decode()
    done = client.post(
        changelist,
        {"action": "promote_to_golden", "_selected_action": ids, "apply": "1", "dataset": "bulk"},
        follow=True,
    )
    assert "Promoted 2 run(s) to golden cases in bulk." in done.content.decode()
    assert GoldenCase.objects.filter(dataset__name="bulk").count() == 2
    assert eval_run(datasets=["bulk"]).status == "passed"


def test_promoting_a_run_without_model_calls_warns_that_the_case_is_live_only(client, operator, alice):
    run = finished_run(alice, agent="calculator", input="What is 3 + 3?", model="gpt-5.4-mini")  # no key: no call
    assert run.status == "failed" and not run.model_calls
    client.force_login(operator)
    promote_url = reverse("admin:evals_goldencase_promote", args=[quote(run.pk)])
    assert "live-only" in client.get(promote_url).content.decode()
    done = client.post(promote_url, {"dataset": "regressions", "name": "x", "output_match": "contains"}, follow=True)
    html = done.content.decode()
    assert "live-only" in html and "replay mode skips it" in html
    case = GoldenCase.objects.get(source_run=run)
    changelist = client.get(reverse("admin:evals_goldencase_changelist")).content.decode()
    assert case.pk in changelist and 'alt="False"' in changelist  # the "replay" column


def test_only_operators_with_the_permissions_promote_or_run_evals(client, alice, viewer):
    run = finished_run(alice, agent="calculator", input="What is 9 * 9?")
    promote_url = reverse("admin:evals_goldencase_promote", args=[quote(run.pk)])
    staff = User.objects.create_user("evalop", password="pw-123456789", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__in=["view_run", "view_dataset", "view_goldencase"]))
    for user in (viewer, staff):
        client.force_login(user)
        assert client.get(promote_url).status_code == 403
        assert client.post(promote_url, {"dataset": "x", "name": "x", "output_match": "exact"}).status_code == 403
        page = client.get(reverse("admin:runs_run_change", args=[quote(run.pk)])).content.decode()
        assert "Promote to golden" not in page
        assert "promote_to_golden" not in client.get(reverse("admin:runs_run_changelist")).content.decode()
        assert "run_eval" not in client.get(reverse("admin:evals_dataset_changelist")).content.decode()
    assert not GoldenCase.objects.filter(source_run=run).exists()

    staff.user_permissions.add(*Permission.objects.filter(codename__in=["promote_run", "run_eval"]))
    staff = User.objects.get(pk=staff.pk)
    client.force_login(staff)
    assert client.get(promote_url).status_code == 200
    assert "run_eval" in client.get(reverse("admin:evals_dataset_changelist")).content.decode()
    queued = client.post(
        reverse("admin:evals_dataset_changelist"),
        {"action": "run_eval", "_selected_action": [Dataset.objects.get(name="starter").pk]},
        follow=True,
    )
    assert "Eval queued for starter" in queued.content.decode()


def test_eval_results_show_reasons_and_link_runs(client, operator, alice):
    case = promoted(alice, operator, agent="calculator", input="What is 2 + 2?")
    case.expected_output = "2 + 2 = 5"
    golden_save(case=case, user=operator, actor=Actor.for_user(operator))
    evaluation = eval_run(datasets=["regressions"])
    result = evaluation.results.get()
    client.force_login(operator)
    page = client.get(reverse("admin:evals_evalrun_change", args=[quote(evaluation.pk)])).content.decode()
    assert "does not contain &#x27;2 + 2 = 5&#x27;" in page
    assert reverse("admin:runs_run_change", args=[quote(result.run_id)]) in page
    listing = client.get(reverse("admin:evals_evalresult_changelist") + "?passed__exact=0").content.decode()
    assert "does not contain" in listing
    assert "0/1 (0%)" in client.get(reverse("admin:evals_evalrun_changelist")).content.decode()


def test_editing_a_case_in_the_admin_makes_a_new_version(client, operator, alice):
    case = promoted(alice, operator, agent="calculator", input="What is 7 * 7?")
    client.force_login(operator)
    url = reverse("admin:evals_goldencase_change", args=[quote(case.pk)])
    page = client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if name in ("history", "assertions", "expected_tools", "forbidden_tools", "cassette", "tags"):
            value = json.dumps(value)
        if isinstance(value, bool):
            if value:
                data[name] = "on"
            continue
        data[name] = "" if value is None else value
    data["dataset"] = case.dataset_id
    data["expected_output"] = "7 * 7 = 49 exactly"
    data.update(
        {
            "versions-TOTAL_FORMS": "1",
            "versions-INITIAL_FORMS": "1",
            "versions-MIN_NUM_FORMS": "0",
            "versions-MAX_NUM_FORMS": "1000",
            "versions-0-id": case.versions.get().pk,
            "versions-0-case": case.pk,
        }
    )
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    case.refresh_from_db()
    assert case.version == 2 and case.expected_output == "7 * 7 = 49 exactly"
    assert [v.data["expected_output"] for v in case.versions.order_by("version")] == [
        "7 * 7 = 49",
        "7 * 7 = 49 exactly",
    ]
    assert AuditLog.objects.filter(action="golden.edited", target_id=case.pk, actor_label="operator").exists()
    bad = {**data, "assertions": '[{"type": "nope"}]'}
    assert client.post(url, bad).status_code == 200
    assert GoldenCase.objects.get(pk=case.pk).version == 2


def test_a_case_the_budgets_refuse_fails_with_the_reason_and_the_eval_goes_on(alice, operator):
    from billing.models import Budget
    from evals.services import eval_user

    promoted(alice, operator, agent="calculator", input="What is 12 * 12?")
    promoted(alice, operator, agent="calculator", input="What is 3 * 3?")
    Budget.objects.create(user=eval_user(), max_concurrent_runs=0)
    evaluation = eval_run(datasets=["regressions"])
    assert evaluation.status == "failed" and evaluation.total == 2
    for result in evaluation.results.all():
        assert result.run is None and not result.passed
        assert result.reasons[0].startswith("the run was refused: concurrent runs limit of 0 reached")
