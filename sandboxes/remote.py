"""The e2b provider: the SDK's E2BSandboxClient, with options the harness decides.

Network off unless HARNESS_SANDBOX_NETWORK=allow, no pause (a stopped sandbox is
killed, never parked), the provider's own timeout set to the sandbox's time budget
so E2B kills it even if the harness never comes back, the environment limited to
the allow-list, and metadata that lets the reaper find the harness's sandboxes.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from sandboxes.policy import SandboxPolicy
from sandboxes.providers import E2B_METADATA_MARK, E2B_METADATA_RUN, E2B_METADATA_SANDBOX


def e2b_options(*, policy: SandboxPolicy, sandbox_id: str, run_id: str, environment: dict[str, str]) -> Any:
    from agents.extensions.sandbox import E2BSandboxClientOptions

    return E2BSandboxClientOptions(
        sandbox_type="e2b",
        template=settings.E2B_TEMPLATE or None,
        timeout=policy.time_budget_seconds,
        metadata={E2B_METADATA_MARK: "1", E2B_METADATA_SANDBOX: sandbox_id, E2B_METADATA_RUN: run_id},
        envs=dict(environment),
        allow_internet_access=policy.network == "allow",
        pause_on_exit=False,
        on_timeout="kill",
        auto_resume=False,
    )


def e2b_client() -> Any:
    from agents.extensions.sandbox import E2BSandboxClient

    _export_api_key()
    return E2BSandboxClient()


def _export_api_key() -> None:
    # The e2b package reads its key from the process environment. It may have come from
    # E2B_API_KEY_FILE; it never reaches a sandbox (sandbox environments are allow-listed).
    import os

    if settings.E2B_API_KEY:
        os.environ["E2B_API_KEY"] = settings.E2B_API_KEY


def e2b_kill(sandbox_id: str) -> bool:
    """Kill one E2B sandbox by id (True if it existed)."""
    from e2b import Sandbox

    return bool(Sandbox.kill(sandbox_id, api_key=settings.E2B_API_KEY, request_timeout=15))


def e2b_list_harness_sandboxes() -> list[tuple[str, dict[str, str]]]:
    """(sandbox id, metadata) of every running E2B sandbox this harness created."""
    from e2b import Sandbox, SandboxQuery

    paginator = Sandbox.list(
        query=SandboxQuery(metadata={E2B_METADATA_MARK: "1"}), api_key=settings.E2B_API_KEY, request_timeout=15
    )
    found: list[tuple[str, dict[str, str]]] = []
    while paginator.has_next:
        for info in paginator.next_items():
            found.append((info.sandbox_id, dict(info.metadata or {})))
    return found


def e2b_answers() -> bool:
    """A live, cheap call to the E2B API with the configured key."""
    from e2b import Sandbox

    Sandbox.list(limit=1, api_key=settings.E2B_API_KEY, request_timeout=5).next_items()
    return True
