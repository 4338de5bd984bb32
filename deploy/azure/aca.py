#!/usr/bin/env python3
"""Helpers for deploy.sh (standard library only; runs with any python3 >= 3.9).

    aca.py render TEMPLATE OUTPUT   fill a container app spec from the environment
    aca.py serving                  (stdin: `az containerapp revision list --all -o json`)
                                    the active revision with the most traffic
    aca.py previous BAD             the revision to roll back to from BAD (created before it)
    aca.py active [EXCEPT ...]      active revisions, newest first, minus EXCEPT
    aca.py has NAME                 exit 0 when the revision NAME exists

Rendering rules (the templates in this directory follow them):
- `${NAME}` becomes the value of NAME as a double-quoted YAML string (JSON escaping is valid
  YAML), so a value cannot break the document whatever characters it holds. `${NAME|int}`
  and `${NAME|num}` become a bare whole or decimal number (checked). A value comes from NAME, else from the file named by
  NAME_FILE (as the harness reads its secrets), else from the derived values below.
- A line ending in `# only-if-set: NAME` is kept only when NAME is non-empty;
  `# only-if-unset: NAME` only when it is empty.
- A line `#@passthrough INDENT` expands to one `{name, value}` env entry per variable of this
  environment whose name starts with one of PASSTHROUGH_PREFIXES and that the template does
  not already name (so any HARNESS_* tunable reaches the containers without editing a
  template). A name that looks like a credential is refused: secrets go through secretRef.
- Every placeholder left in a kept line must have a non-empty value, or rendering fails,
  naming the missing variables (never a value).
- Derived from REDIS_URL (for KEDA's redis scaler, which wants the parts, not a URL):
  REDIS_ADDRESS (host:port), REDIS_DATABASE_INDEX, REDIS_ENABLE_TLS, REDIS_PASSWORD.
Comment lines are left out of the output. The output file is created with mode 0600 and
must not exist yet.
"""

from __future__ import annotations

import json
import os
import re
import sys
from urllib.parse import unquote, urlsplit

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?:\|(int|num))?\}")
NUMBER = {"int": re.compile(r"^[0-9]+$"), "num": re.compile(r"^[0-9]+(\.[0-9]+)?$")}
DIRECTIVE = re.compile(r"\s+# only-if-(set|unset): ([A-Z][A-Z0-9_]*)\s*$")
PASSTHROUGH = re.compile(r"^(\s*)#@passthrough\s*$")
PASSTHROUGH_PREFIXES = (
    "HARNESS_",
    "ARTIFACTS_",
    "DATABASE_POOL_",
    "DATABASE_CONN_MAX_AGE",
    "DATABASE_CONNECT_TIMEOUT_SECONDS",
    "DATABASE_TCP_TIMEOUT_SECONDS",
    "OTEL_",
    "PHOENIX_",
    "E2B_TEMPLATE",
    "R2_REGION",
)
# Set by deploy.sh for the deploy itself, or read by preflight on the deploy machine only.
PASSTHROUGH_SKIP = {"HARNESS_BACKUPS_ACKNOWLEDGED", "HARNESS_VAR_DIR", "HARNESS_SANDBOX_ROOT"}
# What the harness reads as secrets (harness_site/settings.py env_secret, and OTLP headers),
# and name endings that mean a credential: never passed as a plain value.
SECRET_NAMES = {
    "SECRET_KEY",
    "DATABASE_URL",
    "DIRECT_DATABASE_URL",
    "REDIS_URL",
    "OPENAI_API_KEY",
    "E2B_API_KEY",
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
}
CREDENTIAL_ENDINGS = ("_SECRET", "_PASSWORD", "_PASSWD", "_API_KEY", "_ACCESS_KEY", "_HEADERS", "_CREDENTIALS", "_DSN")


class RenderError(Exception):
    pass


def value_of(name: str, derived: dict[str, str]) -> str:
    raw = os.environ.get(name, "")
    if raw.strip():
        return raw.strip()
    file_name = os.environ.get(f"{name}_FILE", "").strip()
    if file_name:
        try:
            with open(file_name, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise RenderError(f"{name}_FILE: cannot read {file_name}: {exc.strerror}") from exc
    return derived.get(name, "")


def redis_parts() -> dict[str, str]:
    url = value_of("REDIS_URL", {})
    if not url:
        return {}
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise RenderError("REDIS_URL: expected redis://[:password@]host[:port][/db] or rediss://...")
    database = (parts.path or "/").strip("/") or "0"
    if not database.isdigit():
        raise RenderError("REDIS_URL: the database (the path) must be a number")
    tls = parts.scheme == "rediss"
    return {
        "REDIS_ADDRESS": f"{parts.hostname}:{parts.port or (6380 if tls else 6379)}",
        "REDIS_DATABASE_INDEX": database,
        "REDIS_ENABLE_TLS": "true" if tls else "false",
        "REDIS_PASSWORD": unquote(parts.password or ""),
    }


def passthrough_lines(indent: str, named: set[str]) -> list[str]:
    lines = []
    for name in sorted(os.environ):
        if not name.startswith(PASSTHROUGH_PREFIXES) or name in named or name in PASSTHROUGH_SKIP:
            continue
        if name.endswith("_FILE"):
            continue
        if name in SECRET_NAMES or name.endswith(CREDENTIAL_ENDINGS):
            raise RenderError(
                f"{name} looks like a credential: it is not passed as a plain value. "
                "Add it to the template's secrets with a secretRef instead."
            )
        value = os.environ[name]
        lines.append(f"{indent}- {{name: {name}, value: {json.dumps(value)}}}\n")
    return lines


def render(template: str) -> str:
    derived = redis_parts()
    named = set(re.findall(r"name: ([A-Z][A-Z0-9_]*)", template))
    out: list[str] = []
    missing: set[str] = set()
    for line in template.splitlines(keepends=True):
        passthrough = PASSTHROUGH.match(line)
        if passthrough:
            out.extend(passthrough_lines(passthrough.group(1), named))
            continue
        if line.lstrip().startswith("#"):
            continue  # comments (which may mention ${NAME}) are not copied
        directive = DIRECTIVE.search(line)
        if directive:
            present = bool(value_of(directive.group(2), derived))
            if present != (directive.group(1) == "set"):
                continue
            line = line[: directive.start()] + "\n"

        def substitute(match: re.Match[str]) -> str:
            name, kind = match.group(1), match.group(2)
            value = value_of(name, derived)
            if not value:
                missing.add(name)
                return '""'
            if kind:
                if not NUMBER[kind].match(value):
                    raise RenderError(f"{name}: expected a {'whole ' if kind == 'int' else ''}number")
                return value
            return json.dumps(value)

        out.append(PLACEHOLDER.sub(substitute, line))
    if missing:
        raise RenderError("missing values for: " + ", ".join(sorted(missing)))
    return "".join(out)


def write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def revisions_from_stdin() -> list[dict]:
    items = json.load(sys.stdin) or []
    revisions = []
    for item in items:
        props = item.get("properties") or {}
        revisions.append(
            {
                "name": item["name"],
                "active": bool(props.get("active")),
                "created": props.get("createdTime") or "",
                "weight": int(props.get("trafficWeight") or 0),
            }
        )
    return revisions


def newest_first(revisions: list[dict]) -> list[dict]:
    return sorted(revisions, key=lambda r: (r["created"], r["name"]), reverse=True)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    try:
        if command == "render" and len(args) == 2:
            with open(args[0], encoding="utf-8") as handle:
                text = render(handle.read())
            write_private(args[1], text)
            return 0
        if command == "serving" and not args:
            active = [r for r in newest_first(revisions_from_stdin()) if r["active"]]
            if active:
                print(max(active, key=lambda r: r["weight"])["name"])  # max keeps the first (newest) of ties
            return 0
        if command == "previous" and len(args) == 1:
            # The newest revision created before BAD, an active one first (deploy.sh keeps the
            # previous release active at 0%); never a newer one (an abandoned deploy's).
            revisions = newest_first(revisions_from_stdin())
            bad = [r for r in revisions if r["name"] == args[0]]
            older = [r for r in revisions if bad and (r["created"], r["name"]) < (bad[0]["created"], bad[0]["name"])]
            choice = [r for r in older if r["active"]] or older
            if choice:
                print(choice[0]["name"])
            return 0
        if command == "active":
            for revision in newest_first(revisions_from_stdin()):
                if revision["active"] and revision["name"] not in args:
                    print(revision["name"])
            return 0
        if command == "has" and len(args) == 1:
            return 0 if any(r["name"] == args[0] for r in revisions_from_stdin()) else 1
    except RenderError as exc:
        print(f"aca.py: {exc}", file=sys.stderr)
        return 2
    print(f"aca.py: unknown command {' '.join(argv)!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
