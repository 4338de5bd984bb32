from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Agent runs"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from runs import checks  # noqa: F401  (registers system checks)
        from runs.schedules import ensure_schedules

        post_migrate.connect(ensure_schedules, sender=self)
