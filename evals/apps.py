from django.apps import AppConfig


class EvalsConfig(AppConfig):
    name = "evals"
    verbose_name = "Evals"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from evals.starter import starter_after_migrate

        post_migrate.connect(starter_after_migrate, sender=self)
