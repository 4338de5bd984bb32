from django.apps import AppConfig


class SandboxesConfig(AppConfig):
    name = "sandboxes"
    verbose_name = "Sandboxes"

    def ready(self) -> None:
        from sandboxes import health  # noqa: F401  (registers the /health check)
