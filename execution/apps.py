from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    """The SDK side: the run engine, offline model, cassettes, trace capture and session memory.

    Only worker processes import this app's modules beyond this file: the web process
    never imports the Agents SDK.
    """

    name = "execution"
    verbose_name = "Run execution"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        post_migrate.connect(_publish_agents, sender=self, dispatch_uid="execution.catalog.publish")


def _publish_agents(sender: Any = None, using: str = "default", plan: Any = None, **kwargs: Any) -> None:
    """After every migrate (and flush): the agents of HARNESS_AGENT_MODULES are published
    (imported here, not at startup: most commands never need the SDK)."""
    from django.db import connections

    if "execution_publishedagent" not in connections[using].introspection.table_names():
        return  # a partial migrate: the next full one (or the first worker) publishes
    from execution.catalog import publish_after_migrate

    publish_after_migrate(using=using)
