from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    """The SDK side: the run engine, offline model, cassettes, trace capture and session memory.

    Only worker processes import this app's modules beyond this file: the web process
    never imports the Agents SDK.
    """

    name = "execution"
    verbose_name = "Run execution"
