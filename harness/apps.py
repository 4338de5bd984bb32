from django.apps import AppConfig


class HarnessConfig(AppConfig):
    name = "harness"
    verbose_name = "Agent declarations"
    default_auto_field = "django.db.models.BigAutoField"
