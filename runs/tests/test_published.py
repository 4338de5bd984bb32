"""The web's side of the agents: what POST /api/runs accepts, from what the workers published."""

from __future__ import annotations

import pytest
from django.utils import timezone

from execution.models import PublishedAgent
from harness.agents import SCRIPT_MAX_STEPS, OfflineScript, ScriptError
from runs.models import Run
from runs.published import published_clear

pytestmark = pytest.mark.django_db(transaction=True)


def publish(name: str, **spec):
    PublishedAgent.objects.update_or_create(
        name=name,
        defaults={
            "description": f"{name}, published",
            "spec": {"tools": [], "models": None, "sandbox": False, **spec},
            "version": "v1",
            "publisher": "tests",
            "published_at": timezone.now(),
        },
    )
    published_clear()


def test_an_agent_limited_to_some_models_refuses_others(api, alice, settings):
    settings.HARNESS_ALLOWED_MODELS = ["offline", "gpt-x"]
    publish("narrow", models=["gpt-x"])
    response = api.post("/api/runs", {"input": "hi", "agent": "narrow", "model": "offline"}, who=alice)
    assert response.status_code == 422
    assert response.json()["detail"] == "agent: agent 'narrow' does not run on model 'offline'; its models: gpt-x"
    assert Run.objects.count() == 0


def test_before_any_worker_published_the_error_says_so(api, alice):
    PublishedAgent.objects.all().delete()
    published_clear()
    response = api.post("/api/runs", {"input": "hi", "agent": "assistant", "model": "offline"}, who=alice)
    assert response.status_code == 422
    assert "no worker has published its agents yet" in response.json()["detail"]


def test_a_newly_published_agent_is_accepted_and_listed(api, alice):
    publish("team-agent", tools=["lookup"])
    response = api.post("/api/runs", {"input": "hi", "agent": "team-agent", "model": "offline"}, who=alice)
    assert response.status_code == 202, response.content
    listed = {agent["name"]: agent for agent in api.get("/api/agents", who=alice).json()["agents"]}
    assert listed["team-agent"]["tools"] == ["lookup"] and listed["team-agent"]["version"] == "v1"


def test_the_registry_is_read_again_after_its_ttl(api, alice, settings, monkeypatch):
    import time

    from runs import published

    now = [time.monotonic()]
    monkeypatch.setattr(published.time, "monotonic", lambda: now[0])
    settings.HARNESS_AGENT_REGISTRY_TTL_SECONDS = 30
    api.get("/api/agents", who=alice)  # read and kept
    assert PublishedAgent.objects.filter(name="assistant").delete()[0] == 1  # another process publishes
    now[0] += 29
    kept = api.post("/api/runs", {"input": "hi", "agent": "assistant", "model": "offline"}, who=alice)
    assert kept.status_code == 202  # within the TTL this process trusts what it read
    now[0] += 2
    gone = api.post("/api/runs", {"input": "hi", "agent": "assistant", "model": "offline"}, who=alice)
    assert gone.status_code == 422


@pytest.mark.parametrize(
    ("script", "detail"),
    [
        ([], "offline_script: Input should be a valid dictionary"),
        ({"steps": 3}, "offline_script: steps must be a list"),
        ({"steps": [{"arguments": {}}]}, "offline_script: steps[0] must be an object with a tool name"),
        ({"steps": [{"tool": "x", "arguments": []}]}, "offline_script: steps[0].arguments must be an object"),
        ({"steps": [{"tool": "x", "when": 1}]}, "offline_script: steps[0]: unknown field(s) when"),
        ({"answer": "x", "extra": 1}, "offline_script: unknown field(s) extra; it takes steps and answer"),
        (
            {"steps": [{"tool": "x"}] * (SCRIPT_MAX_STEPS + 1)},
            f"offline_script: steps: at most {SCRIPT_MAX_STEPS} steps",
        ),
    ],
)
def test_a_malformed_offline_script_is_a_422(api, alice, script, detail):
    body = {"input": "hi", "agent": "assistant", "model": "offline", "offline_script": script}
    response = api.post("/api/runs", body, who=alice)
    assert response.status_code == 422, response.content
    assert response.json()["detail"].startswith(detail), response.json()
    assert Run.objects.count() == 0


def test_a_client_script_cannot_read_back_the_agent_instructions(api, alice):
    body = {"input": "hi", "agent": "assistant", "model": "offline", "offline_script": {"answer": "{instructions}"}}
    response = api.post("/api/runs", body, who=alice)
    assert response.status_code == 422
    assert response.json()["detail"] == "offline_script: {instructions} is only for scripts declared with the agent"


def test_the_script_limits_are_settings(api, alice, settings):
    settings.HARNESS_OFFLINE_SCRIPT_MAX_STEPS = 2
    body = {"input": "hi", "agent": "assistant", "model": "offline"}
    two = {"steps": [{"tool": "text_stats", "arguments": {"text": "a"}}] * 2, "answer": "ok"}
    assert api.post("/api/runs", {**body, "offline_script": two}, who=alice).status_code == 202
    three = {**two, "steps": two["steps"] * 2}
    refused = api.post("/api/runs", {**body, "offline_script": three}, who=alice)
    assert refused.status_code == 422
    assert "at most 2 steps (HARNESS_OFFLINE_SCRIPT_MAX_STEPS)" in refused.json()["detail"]


def test_an_offline_script_is_for_the_offline_model_only(api, alice, settings):
    settings.OPENAI_API_KEY = "sk-test"
    settings.HARNESS_ALLOWED_MODELS = ["offline", "gpt-x"]
    body = {"input": "hi", "agent": "assistant", "model": "gpt-x", "offline_script": {"answer": "x"}}
    response = api.post("/api/runs", body, who=alice)
    assert response.status_code == 422
    assert response.json()["detail"] == "offline_script: only for model \"offline\" (this run is on 'gpt-x')"


def test_a_script_at_its_size_limit_is_taken_and_over_it_refused():
    at_limit = {"steps": [{"tool": "t"}] * SCRIPT_MAX_STEPS, "answer": "ok"}
    assert len(OfflineScript.from_data(at_limit).steps) == SCRIPT_MAX_STEPS
    with pytest.raises(ScriptError, match="over 64000 characters"):
        OfflineScript.from_data({"answer": "x" * 64_000})


def test_a_rendered_answer_is_bounded(settings):
    settings.HARNESS_MAX_STORED_CHARS = 5000
    script = OfflineScript.from_data({"answer": "{input}" * 9000})
    assert len(script.render_answer(input="x" * 32_000, output=None, instructions="", agent="a")) == 5000


def test_an_answer_fills_its_placeholders_and_json_stays_json():
    script = OfflineScript(answer={"summary": "{input}", "n": 2, "tags": ["{agent}"]})
    rendered = script.render_answer(input="hello", output=None, instructions="be kind", agent="support")
    assert rendered == '{"summary": "hello", "n": 2, "tags": ["support"]}'
    text = OfflineScript(answer="{output} / {instructions} / {unknown}")
    assert text.render_answer(input="", output="42", instructions="be kind", agent="a") == "42 / be kind / {unknown}"
