"""The E2B provider at the SDK boundary: the SDK's real E2BSandboxClient against a fake `e2b` package.

No live E2B call is made here (there is no network). These tests prove what the harness
hands to E2B and that it cleans up on every path; that E2B itself honours those options
is E2B's contract.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from audit.models import AuditLog
from audit.services import Actor
from conftest import make_run
from execution.executor import run_execute
from runs import services as run_services
from runs.models import Run
from sandboxes.models import Sandbox
from sandboxes.services import sandboxes_reap
from sandboxes.tests.e2b_fake import FakeE2B, FakePaginator, Listed

pytestmark = pytest.mark.django_db(transaction=True)

E2B_KEY = "e2b_" + "k" * 36
SECRETS = {
    "OPENAI_API_KEY": "sk-e2b-boundary-0123456789",
    "DATABASE_URL": "postgres://user:db-password-0123@db.example/harness",
    "R2_SECRET_ACCESS_KEY": "r2-secret-0123456789abcdef",
    "SECRET_KEY": "django-secret-0123456789abcdef",
}


@pytest.fixture
def e2b(monkeypatch, bwrap):
    fake = FakeE2B()
    monkeypatch.setattr(
        "agents.extensions.sandbox.e2b.sandbox._import_sandbox_class", lambda sandbox_type: fake.sandbox_class()
    )
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    # The provider exports the key for the e2b package; this restores the environment afterwards.
    monkeypatch.setenv("E2B_API_KEY", "")
    monkeypatch.setenv("MY_TOOL_HOME", "/opt/tool")
    with override_settings(
        SANDBOX_PROVIDER="e2b",
        E2B_API_KEY=E2B_KEY,
        E2B_TEMPLATE="harness-python",
        OPENAI_API_KEY=SECRETS["OPENAI_API_KEY"],
        HARNESS_SANDBOX_ENV_ALLOWLIST=["MY_TOOL_HOME"],
    ):
        yield fake


def coder(owner, script: str) -> Run:
    run = make_run(owner, agent="coder", input=f"```sh\n{script}\n```")
    run_execute(run.pk)
    run.refresh_from_db()
    return run


def assert_killed_once_and_cleaned(fake: FakeE2B, run: Run) -> Sandbox:
    sandbox = Sandbox.objects.get(run=run)
    assert sandbox.provider == "e2b" and sandbox.provider_session_id in fake.killed
    assert fake.killed.count(sandbox.provider_session_id) == 1
    assert sandbox.cleanup_state == "done" and sandbox.status in ("stopped", "failed")
    assert AuditLog.objects.filter(target_id=sandbox.pk, action="sandbox.cleaned").exists()
    assert fake.live == {}
    return sandbox


def test_a_run_gets_a_sandbox_with_the_harness_options_and_no_secret(alice, e2b):
    run = coder(alice, "echo hello-from-e2b; echo tool=$MY_TOOL_HOME; mkdir -p outputs; echo done > outputs/r.txt")
    assert run.status == "succeeded", run.error
    assert "hello-from-e2b" in run.output and "tool=/opt/tool" in run.output
    (created,) = e2b.created
    sandbox = assert_killed_once_and_cleaned(e2b, run)
    assert created["template"] == "harness-python"
    assert created["timeout"] == 900  # HARNESS_SANDBOX_TIME_BUDGET_SECONDS: E2B kills it even if we never come back
    assert created["allow_internet_access"] is False
    assert created["metadata"] == {"harness": "1", "harness_sandbox": sandbox.pk, "harness_run": run.pk}
    assert created["lifecycle"] == {"on_timeout": "kill"}
    assert created["envs"] == {"MY_TOOL_HOME": "/opt/tool"}
    everything = repr(e2b.created) + repr(e2b.commands) + repr(e2b.written)
    for secret in [*SECRETS.values(), E2B_KEY]:
        assert secret not in everything
    assert all(set(command["envs"]) <= {"MY_TOOL_HOME"} for command in e2b.commands)
    # Outputs came back as artifacts before the sandbox was killed.
    assert [a.name for a in run.artifacts.all()] == ["r.txt"]
    assert sandbox.manifest["network"] == "deny"


def test_network_allow_reaches_the_provider_option(alice, e2b):
    with override_settings(HARNESS_SANDBOX_NETWORK="allow"):
        run = coder(alice, "echo hi")
    assert run.status == "succeeded"
    assert e2b.created[0]["allow_internet_access"] is True
    assert Sandbox.objects.get(run=run).manifest["network"] == "allow"


def test_the_sandbox_is_killed_when_the_run_times_out(alice, e2b):
    with override_settings(HARNESS_RUN_TIMEOUT_SECONDS=1.5):
        run = coder(alice, "sleep 20")
    assert run.status == "failed" and "timed out" in run.error
    assert assert_killed_once_and_cleaned(e2b, run).exit_info["reason"] == "run timed out"


def test_the_sandbox_is_killed_when_the_run_is_cancelled(alice, e2b):
    run = make_run(alice, agent="coder", input="```sh\nsleep 20\n```")
    worker = threading.Thread(target=run_execute, args=(run.pk,))
    worker.start()
    deadline = time.monotonic() + 15
    while not any("sleep 20" in c["command"] for c in e2b.commands) and time.monotonic() < deadline:
        time.sleep(0.05)
    run_services.run_cancel(run=Run.objects.get(pk=run.pk), actor=Actor.system("test"))
    worker.join(20)
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert assert_killed_once_and_cleaned(e2b, run).exit_info["reason"] == "run stopped (cancelled)"


def test_the_sandbox_is_killed_when_it_fails_to_start(alice, e2b):
    from runs.models import Run as RunModel

    source = make_run(alice, agent="scribe", input="data")
    run_execute(source.pk)
    e2b.fail_writes = True  # bringing the input file in fails
    run = make_run(alice, agent="coder", input="```sh\nls inputs\n```", files=[source.artifacts.get().pk])
    run_execute(run.pk)
    run = RunModel.objects.get(pk=run.pk)
    assert run.status == "failed" and run.error.startswith("the sandbox could not start")
    sandbox = assert_killed_once_and_cleaned(e2b, run)
    assert sandbox.status == "failed" and sandbox.exit_info["reason"] == "start failed"


def test_the_reaper_kills_orphans_and_sandboxes_past_budget(alice, e2b, monkeypatch):
    from e2b import Sandbox as E2BSandbox

    killed: list[str] = []
    running = make_run(alice)
    Run.objects.filter(pk=running.pk).update(status="running", worker_id="w:1:x")
    live = Sandbox.objects.create(
        run=running, provider="e2b", provider_session_id="e2b-live", status="live", worker_id="w:1:x",
        deadline=timezone.now() + timedelta(minutes=5),
    )  # fmt: skip
    late = Sandbox.objects.create(
        run=running, provider="e2b", provider_session_id="e2b-late", status="live", worker_id="w:1:x",
        deadline=timezone.now() - timedelta(seconds=1),
    )  # fmt: skip
    listed = [
        Listed("e2b-live", {"harness": "1", "harness_sandbox": live.pk, "harness_run": running.pk}),
        Listed("e2b-orphan", {"harness": "1", "harness_sandbox": "sbx_GONE", "harness_run": "run_GONE"}),
    ]
    calls: dict[str, object] = {}

    def fake_list(query=None, **opts):
        calls["list"] = (query.metadata, opts.get("api_key"))
        return FakePaginator(listed)

    def fake_kill(sandbox_id, **opts):
        killed.append(sandbox_id)
        return True

    monkeypatch.setattr(E2BSandbox, "list", staticmethod(fake_list))
    monkeypatch.setattr(E2BSandbox, "kill", staticmethod(fake_kill))
    report = sandboxes_reap()
    assert report.cleaned == [late.pk] and report.orphan_remote == ["e2b-orphan"]
    assert sorted(killed) == ["e2b-late", "e2b-orphan"]
    assert calls["list"] == ({"harness": "1"}, E2B_KEY)
    assert Sandbox.objects.get(pk=live.pk).cleanup_state == "pending"
    orphan = AuditLog.objects.get(action="sandbox.orphan_destroyed", target_id="sbx_GONE")
    assert orphan.data["provider_session_id"] == "e2b-orphan"


def test_health_reports_e2b_only_when_it_answers(client, monkeypatch, bwrap):
    from e2b import Sandbox as E2BSandbox

    monkeypatch.setattr(E2BSandbox, "list", staticmethod(lambda **opts: FakePaginator([])))
    with override_settings(E2B_API_KEY=E2B_KEY, SANDBOX_PROVIDER=""):
        assert client.get("/health").json()["backends"]["sandbox"] is True

    def down(**opts):
        raise ConnectionError("no route to api.e2b.app")

    monkeypatch.setattr(E2BSandbox, "list", staticmethod(down))
    with override_settings(E2B_API_KEY=E2B_KEY, SANDBOX_PROVIDER=""):
        assert client.get("/health").json()["backends"]["sandbox"] is False
    with override_settings(E2B_API_KEY="", SANDBOX_PROVIDER=""):
        assert client.get("/health").json()["backends"]["sandbox"] is False
    with override_settings(E2B_API_KEY=E2B_KEY, SANDBOX_PROVIDER="local"):
        assert client.get("/health").json()["backends"]["sandbox"] is False
