from django.apps import AppConfig


class HarnessSiteConfig(AppConfig):
    name = "harness_site"
    verbose_name = "Harness"

    def ready(self) -> None:
        from common.db import statement_cache_widen

        statement_cache_widen()  # every process: the web and the run engine alike
