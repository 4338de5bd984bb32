"""A recording fake of the Azure CLI (`az`) for deploy/azure/deploy.sh's tests.

Installed as an executable named `az` first on PATH. Every call is appended to
$FAKE_AZ_LOG (one JSON object a line: argv, and for `--yaml FILE` a summary of the file
with each secret's value replaced by its sha256, the file's mode and whether it still
exists). Answers come from the JSON state in $FAKE_AZ_STATE, which calls update like
Azure would: revisions, traffic weights, jobs and their executions, environments.
Anything deploy.sh might call that is not modelled here exits 2, so the script cannot
rely on a command the fake does not know.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import yaml

NOT_FOUND = 3  # what az exits with for ResourceNotFound


class Fail(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


FLAGS = {"--yes", "--all"}  # options without a value
MULTI = {"--revision-weight"}  # options with one or more values


def parse(argv: list[str]) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Command words, options and the positional arguments after them (acr build's source)."""
    words: list[str] = []
    options: dict[str, list[str]] = {}
    positionals: list[str] = []
    index = 0
    while index < len(argv) and not argv[index].startswith("-"):
        words.append(argv[index])
        index += 1
    current = ""
    while index < len(argv):
        token = argv[index]
        if token.startswith("-"):
            current = {"-n": "--name", "-g": "--resource-group", "-l": "--location", "-o": "--output"}.get(token, token)
            if current in options:
                raise Fail(f"fake az: {current} given twice", 2)
            options[current] = []
            if current in FLAGS:
                current = ""
        elif current:
            options[current].append(token)
            if current not in MULTI:
                current = ""
        else:
            positionals.append(token)
        index += 1
    for name, values in options.items():
        if name not in FLAGS and not values:
            raise Fail(f"fake az: {name} needs a value", 2)
    return words, options, positionals


def one(options: dict[str, list[str]], name: str) -> str:
    values = options.get(name)
    if not values or len(values) != 1:
        raise Fail(f"fake az: {name} needs exactly one value, got {values!r}", 2)
    return values[0]


def need_yes(options: dict[str, list[str]]) -> None:
    if "--yes" not in options:
        raise Fail("fake az: a delete without --yes would wait for a prompt", 2)


def summarize_yaml(path: str) -> dict[str, Any]:
    file = Path(path)
    mode = stat.S_IMODE(file.stat().st_mode)
    dir_mode = stat.S_IMODE(file.parent.stat().st_mode)
    doc = yaml.safe_load(file.read_text())
    secrets = doc.get("properties", {}).get("configuration", {}).get("secrets", [])
    for secret in secrets:
        value = secret.get("value")
        if not isinstance(value, str) or not value:
            raise Fail(f"fake az: secret {secret.get('name')} has no value", 1)
        secret["value"] = "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return {"path": path, "mode": oct(mode), "dir_mode": oct(dir_mode), "doc": doc}


class Azure:
    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.out: list[str] = []
        self.positionals: list[str] = []

    # --- helpers -------------------------------------------------------------------
    def print(self, value: Any, options: dict[str, list[str]]) -> None:
        output = (options.get("--output") or ["json"])[0]
        if output == "none":
            return
        if output == "tsv":
            self.out.append(str(value))
        else:
            self.out.append(json.dumps(value, indent=2))

    def query(self, value: dict[str, Any], options: dict[str, list[str]], allowed: dict[str, Any]) -> Any:
        if "--query" not in options:
            return value
        query = one(options, "--query")
        if query not in allowed:
            raise Fail(f"fake az: unsupported --query {query!r}", 2)
        return allowed[query]

    def group(self, options: dict[str, list[str]]) -> str:
        group = one(options, "--resource-group")
        if group not in self.state["groups"]:
            raise Fail(f"(ResourceGroupNotFound) Resource group '{group}' could not be found.", NOT_FOUND)
        return group

    def app(self, options: dict[str, list[str]]) -> dict[str, Any]:
        self.group(options)
        name = one(options, "--name")
        if name not in self.state["apps"]:
            raise Fail(
                f"(ResourceNotFound) The Resource 'Microsoft.App/containerApps/{name}' was not found.", NOT_FOUND
            )
        app: dict[str, Any] = self.state["apps"][name]
        return app

    def revision(self, app: dict[str, Any], name: str) -> dict[str, Any]:
        for revision in app["revisions"]:
            if revision["name"] == name:
                return revision  # type: ignore[no-any-return]
        raise Fail(f"(ContainerAppRevisionNotFound) revision {name} not found", NOT_FOUND)

    def fqdn(self, name: str) -> str:
        return f"{name}.localhost:{self.state['health_port']}"

    def add_revision(self, app_name: str, doc: dict[str, Any]) -> None:
        template = doc["properties"]["template"]
        suffix = template.get("revisionSuffix")
        if not suffix:
            raise Fail("fake az: the spec has no revisionSuffix", 2)
        app = self.state["apps"].setdefault(app_name, {"revisions": [], "spec": None})
        name = f"{app_name}--{suffix}"
        if any(r["name"] == name for r in app["revisions"]):
            raise Fail(f"(ContainerAppRevisionConflict) revision suffix {suffix} is already used", 1)
        self.state["clock"] += 1
        app["revisions"].append(
            {
                "name": name,
                "active": True,
                "createdTime": f"2026-01-01T00:00:{self.state['clock']:02d}Z",
                "trafficWeight": 0,
            }
        )
        app["spec"] = {"image": template["containers"][0]["image"]}
        traffic = doc["properties"]["configuration"].get("ingress", {}).get("traffic")
        if traffic:
            for revision in app["revisions"]:
                revision["trafficWeight"] = 0
            for entry in traffic:
                target = name if entry.get("latestRevision") else entry["revisionName"]
                self.revision(app, target)["trafficWeight"] = entry["weight"]

    # --- commands ------------------------------------------------------------------
    def run(self, words: list[str], options: dict[str, list[str]], positionals: list[str]) -> None:
        key = " ".join(words)
        handler = getattr(self, "cmd_" + key.replace(" ", "_").replace("-", "_"), None)
        if handler is None:
            raise Fail(f"fake az: unsupported command {key!r}", 2)
        if positionals and key != "acr build":
            raise Fail(f"fake az: {key} takes no positional arguments, got {positionals!r}", 2)
        self.positionals = positionals
        handler(options)

    def cmd_account_show(self, options: dict[str, list[str]]) -> None:
        account = {"id": self.state["subscription"]}
        self.print(self.query(account, options, {"id": account["id"]}), options)

    def cmd_group_show(self, options: dict[str, list[str]]) -> None:
        name = one(options, "--name")
        if name not in self.state["groups"]:
            raise Fail(f"(ResourceGroupNotFound) Resource group '{name}' could not be found.", NOT_FOUND)
        self.print({"name": name}, options)

    def cmd_group_create(self, options: dict[str, list[str]]) -> None:
        one(options, "--location")
        self.state["groups"].append(one(options, "--name"))
        self.print({"name": one(options, "--name")}, options)

    def cmd_group_delete(self, options: dict[str, list[str]]) -> None:
        need_yes(options)
        name = one(options, "--name")
        if name not in self.state["groups"]:
            raise Fail("not found", NOT_FOUND)
        self.state["groups"].remove(name)

    def cmd_containerapp_env_show(self, options: dict[str, list[str]]) -> None:
        self.group(options)
        name = one(options, "--name")
        env = self.state["envs"].get(name)
        if env is None:
            raise Fail(f"(ResourceNotFound) environment {name} not found", NOT_FOUND)
        body = {"id": env["id"], "name": name, "properties": {"defaultDomain": env["defaultDomain"]}}
        self.print(
            self.query(body, options, {"id": env["id"], "properties.defaultDomain": env["defaultDomain"]}), options
        )

    def cmd_containerapp_env_create(self, options: dict[str, list[str]]) -> None:
        group = self.group(options)
        name = one(options, "--name")
        one(options, "--location")
        env_id = f"/subscriptions/{self.state['subscription']}/resourceGroups/{group}/providers/Microsoft.App/managedEnvironments/{name}"
        self.state["envs"][name] = {"id": env_id, "defaultDomain": "localhost"}

    def cmd_containerapp_env_delete(self, options: dict[str, list[str]]) -> None:
        need_yes(options)
        self.group(options)
        self.state["envs"].pop(one(options, "--name"))

    def cmd_acr_show(self, options: dict[str, list[str]]) -> None:
        name = one(options, "--name")
        server = f"{name}.azurecr.io"
        self.print(self.query({"loginServer": server}, options, {"loginServer": server}), options)

    def cmd_acr_build(self, options: dict[str, list[str]]) -> None:
        one(options, "--registry")
        image = one(options, "--image")
        dockerfile = Path(one(options, "--file"))
        if not dockerfile.is_file():
            raise Fail(f"fake az: no Dockerfile at {dockerfile}", 1)
        if len(self.positionals) != 1 or not Path(self.positionals[0], ".dockerignore").is_file():
            raise Fail(f"fake az: the build context must be the repository, got {self.positionals!r}", 1)
        self.state["images"].append(image)
        self.out.append(f"Run ID: ca1 was successful after 1s (image {image})")

    def cmd_acr_repository_show(self, options: dict[str, list[str]]) -> None:
        image = one(options, "--image")
        if image not in self.state["images"]:
            raise Fail(f"(ManifestUnknown) {image} is not in {one(options, '--name')}", 1)
        self.print({"name": image}, options)

    def cmd_containerapp_job_show(self, options: dict[str, list[str]]) -> None:
        self.group(options)
        name = one(options, "--name")
        if name not in self.state["jobs"]:
            raise Fail(f"(ResourceNotFound) job {name} not found", NOT_FOUND)
        self.print({"name": name}, options)

    def _job_spec(self, options: dict[str, list[str]]) -> None:
        doc = yaml.safe_load(Path(one(options, "--yaml")).read_text())
        job = self.state["jobs"].setdefault(one(options, "--name"), {"executions": {}, "image": None})
        job["image"] = doc["properties"]["template"]["containers"][0]["image"]

    def cmd_containerapp_job_create(self, options: dict[str, list[str]]) -> None:
        self.group(options)
        one(options, "--environment")
        self._job_spec(options)

    def cmd_containerapp_job_update(self, options: dict[str, list[str]]) -> None:
        self.cmd_containerapp_job_show({**options, "--output": ["none"]})
        self._job_spec(options)

    def cmd_containerapp_job_delete(self, options: dict[str, list[str]]) -> None:
        need_yes(options)
        self.group(options)
        self.state["jobs"].pop(one(options, "--name"))

    def cmd_containerapp_job_start(self, options: dict[str, list[str]]) -> None:
        self.group(options)
        job = self.state["jobs"][one(options, "--name")]
        name = f"{one(options, '--name')}-exec{len(job['executions']) + 1}"
        job["executions"][name] = list(self.state["job_statuses"])
        self.print(self.query({"name": name}, options, {"name": name}), options)

    def cmd_containerapp_job_execution_show(self, options: dict[str, list[str]]) -> None:
        self.group(options)
        statuses = self.state["jobs"][one(options, "--name")]["executions"][one(options, "--job-execution-name")]
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        self.print(self.query({"properties": {"status": status}}, options, {"properties.status": status}), options)

    def cmd_containerapp_show(self, options: dict[str, list[str]]) -> None:
        app = self.app(options)
        self.print({"name": one(options, "--name"), "properties": {"template": app["spec"]}}, options)

    def cmd_containerapp_create(self, options: dict[str, list[str]]) -> None:
        self.group(options)
        name = one(options, "--name")
        if name in self.state["apps"]:
            raise Fail(f"fake az: {name} exists already", 1)
        if one(options, "--environment") not in self.state["envs"]:
            raise Fail("fake az: no such environment", NOT_FOUND)
        self.add_revision(name, yaml.safe_load(Path(one(options, "--yaml")).read_text()))

    def cmd_containerapp_update(self, options: dict[str, list[str]]) -> None:
        self.app(options)
        self.add_revision(one(options, "--name"), yaml.safe_load(Path(one(options, "--yaml")).read_text()))

    def cmd_containerapp_delete(self, options: dict[str, list[str]]) -> None:
        need_yes(options)
        self.app(options)
        self.state["apps"].pop(one(options, "--name"))

    def cmd_containerapp_revision_list(self, options: dict[str, list[str]]) -> None:
        app = self.app(options)
        listed = [r for r in app["revisions"] if r["active"] or "--all" in options]
        self.print(
            [
                {
                    "name": r["name"],
                    "properties": {
                        "active": r["active"],
                        "createdTime": r["createdTime"],
                        "trafficWeight": r["trafficWeight"],
                        "fqdn": self.fqdn(r["name"]),
                    },
                }
                for r in listed
            ],
            options,
        )

    def cmd_containerapp_revision_show(self, options: dict[str, list[str]]) -> None:
        revision = self.revision(self.app(options), one(options, "--revision"))
        fqdn = self.fqdn(revision["name"])
        self.print(self.query({"properties": {"fqdn": fqdn}}, options, {"properties.fqdn": fqdn}), options)

    def cmd_containerapp_revision_activate(self, options: dict[str, list[str]]) -> None:
        self.revision(self.app(options), one(options, "--revision"))["active"] = True

    def cmd_containerapp_revision_deactivate(self, options: dict[str, list[str]]) -> None:
        revision = self.revision(self.app(options), one(options, "--revision"))
        if revision["trafficWeight"]:
            raise Fail(f"fake az: {revision['name']} still receives {revision['trafficWeight']}% of the traffic", 1)
        revision["active"] = False

    def cmd_containerapp_ingress_traffic_set(self, options: dict[str, list[str]]) -> None:
        app = self.app(options)
        weights: dict[str, int] = {}
        for pair in options.get("--revision-weight") or []:
            name, _, weight = pair.partition("=")
            weights[name] = int(weight)
        for name, share in weights.items():
            if share and not self.revision(app, name)["active"]:
                raise Fail(f"fake az: {name} is inactive", 1)
        total = sum(weights.get(r["name"], r["trafficWeight"]) for r in app["revisions"])
        if total != 100:
            raise Fail(f"fake az: the weights add up to {total}, not 100", 1)
        for revision in app["revisions"]:
            revision["trafficWeight"] = weights.get(revision["name"], revision["trafficWeight"])


def main() -> int:
    argv = sys.argv[1:]
    record: dict[str, Any] = {"argv": argv, "tmpdir": os.environ.get("TMPDIR", "")}
    state_path = Path(os.environ["FAKE_AZ_STATE"])
    code = 0
    try:
        words, options, positionals = parse(argv)
        if "--yaml" in options:
            record["yaml"] = summarize_yaml(one(options, "--yaml"))
        state = json.loads(state_path.read_text())
        azure = Azure(state)
        azure.run(words, options, positionals)
        state_path.write_text(json.dumps(state, indent=2))
        if azure.out:
            print("\n".join(azure.out))
    except Fail as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        code = exc.code
    record["exit"] = code
    with open(os.environ["FAKE_AZ_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
