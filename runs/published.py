"""The agents the web process may accept runs for: the registry the workers published
(execution.models.PublishedAgent), read without importing any agent's code or the SDK.

What was read is kept for HARNESS_AGENT_REGISTRY_TTL_SECONDS, so a run's validation costs
no query most of the time; a publish in this process forgets it at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings


@dataclass(frozen=True)
class Published:
    name: str
    description: str
    spec: dict[str, Any]
    version: str

    @property
    def sandbox(self) -> bool:
        return bool(self.spec.get("sandbox"))

    @property
    def tools(self) -> list[str]:
        return list(self.spec.get("tools") or [])

    @property
    def models(self) -> list[str] | None:
        models = self.spec.get("models")
        return list(models) if models is not None else None

    @property
    def maxima(self) -> dict[str, Any]:
        return dict(self.spec.get("maxima") or {})


_lock = threading.Lock()
_cache: tuple[float, dict[str, Published]] | None = None


def published_fresh() -> dict[str, Published] | None:
    """What was read within the TTL, or None: the caller on an event loop reads it without a thread."""
    cached = _cache
    return cached[1] if cached is not None and time.monotonic() < cached[0] else None


def published_agents() -> dict[str, Published]:
    """Every published agent by name (empty before any worker or migrate has published)."""
    global _cache
    now = time.monotonic()
    cached = _cache
    if cached is not None and now < cached[0]:
        return cached[1]
    from execution.models import PublishedAgent

    rows = {
        row.name: Published(row.name, row.description, row.spec, row.version)
        for row in PublishedAgent.objects.order_by("name")
    }
    with _lock:
        _cache = (now + settings.HARNESS_AGENT_REGISTRY_TTL_SECONDS, rows)
    return rows


def published_clear() -> None:
    global _cache
    with _lock:
        _cache = None


def published_get(name: str) -> Published | None:
    return published_agents().get(name)


def published_version(agents: dict[str, Published] | None = None) -> str:
    """A digest of the published agents' versions (equal to the registry_version of a worker
    that runs the same agents: execution.catalog.registry_version)."""
    import hashlib
    import json

    agents = published_agents() if agents is None else agents
    payload = json.dumps(sorted((name, agent.version) for name, agent in agents.items()))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def agent_names() -> list[str]:
    return sorted(published_agents())


class UnknownAgent(ValueError):
    pass


def agent_check(name: str, model: str, agents: dict[str, Published] | None = None) -> Published:
    """The published agent a run names, allowed to use `model`; UnknownAgent says why not."""
    agents = published_agents() if agents is None else agents
    agent = agents.get(name)
    if agent is None:
        if not agents:
            raise UnknownAgent(
                f"unknown agent {name!r}: no worker has published its agents yet (start the run engine, "
                "or run manage.py migrate)"
            )
        raise UnknownAgent(f"unknown agent {name!r}; valid agents: {', '.join(sorted(agents))}")
    if agent.models is not None and model not in agent.models:
        raise UnknownAgent(f"agent {name!r} does not run on model {model!r}; its models: {', '.join(agent.models)}")
    return agent
