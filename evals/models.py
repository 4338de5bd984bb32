"""The golden dataset and eval results.

A golden case is a row operators edit; every save appends an immutable version, and an
eval result points at the version it ran against, so editing a case never rewrites what
an earlier eval saw.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from harness_site.ids import id_field_length, new_id


def new_case_id() -> str:
    return new_id("gold")


def new_eval_run_id() -> str:
    return new_id("eval")


class Dataset(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class GoldenCase(models.Model):
    class Match(models.TextChoices):
        EXACT = "exact", "Exactly equal"
        CONTAINS = "contains", "Contains"
        REGEX = "regex", "Matches the regular expression"
        NONE = "none", "Not checked"

    # The fields a version snapshots, in order.
    VERSIONED_FIELDS = (
        "name",
        "agent",
        "model",
        "input",
        "history",
        "expected_output",
        "output_match",
        "assertions",
        "expected_tools",
        "forbidden_tools",
        "cassette",
        "tags",
        "active",
    )

    id = models.CharField(primary_key=True, max_length=id_field_length("gold"), default=new_case_id, editable=False)
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="cases")
    name = models.CharField(max_length=200)
    agent = models.CharField(max_length=64)
    model = models.CharField(max_length=100, help_text="The model the run used; replay mode plays its cassette.")
    input = models.TextField()
    history = models.JSONField(
        default=list, blank=True, help_text="Session items before the input, when the run continued a session."
    )
    expected_output = models.TextField(blank=True)
    output_match = models.CharField(max_length=16, choices=Match.choices, default=Match.CONTAINS)
    assertions = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            'More output checks, e.g. [{"type": "contains", "value": "42"}, {"type": "regex", "value": "^\\\\d+$"}, '
            '{"type": "json_field", "path": "total", "equals": 3}, {"type": "json_schema", "schema": {...}}]'
        ),
    )
    expected_tools = models.JSONField(
        default=list, blank=True, help_text='Tools that must be called: [{"name": "calculate", "arguments": {...}?}]'
    )
    forbidden_tools = models.JSONField(default=list, blank=True, help_text='Tools that must not be called: ["..."]')
    cassette = models.JSONField(default=list, blank=True, help_text="The recorded model calls replayed offline.")
    tags = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    source_run = models.ForeignKey(
        "runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="golden_cases"
    )
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    promoted_at = models.DateTimeField(auto_now_add=True)
    version = models.PositiveIntegerField(default=0, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["dataset", "id"]
        permissions = [("promote_run", "Can promote runs to the golden dataset")]

    def __str__(self) -> str:
        return f"{self.dataset_id}/{self.name}"

    def snapshot(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in self.VERSIONED_FIELDS}


class GoldenCaseVersionQuerySet(models.QuerySet["GoldenCaseVersion"]):
    def update(self, **kwargs: Any) -> int:
        raise TypeError("golden case versions are immutable")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("golden case versions are immutable")


class GoldenCaseVersion(models.Model):
    """One immutable state of a golden case."""

    case = models.ForeignKey(GoldenCase, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    data = models.JSONField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = GoldenCaseVersionQuerySet.as_manager()

    class Meta:
        ordering = ["case", "version"]
        constraints = [models.UniqueConstraint(fields=["case", "version"], name="golden_version_unique")]

    def __str__(self) -> str:
        return f"{self.case_id} v{self.version}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise TypeError("golden case versions are immutable")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("golden case versions are immutable")


class EvalRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"

    id = models.CharField(primary_key=True, max_length=id_field_length("eval"), default=new_eval_run_id, editable=False)
    datasets = models.JSONField(default=list)
    mode = models.CharField(max_length=16)
    agent = models.CharField(max_length=64, blank=True)
    repeat = models.PositiveSmallIntegerField(default=1)
    min_pass_rate = models.FloatField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    total = models.PositiveIntegerField(default=0)
    passed = models.PositiveIntegerField(default=0)
    # Live-only cases a replay eval did not run: [{"case", "name", "dataset", "reason"}].
    skipped = models.JSONField(default=list, blank=True)
    triggered_by = models.CharField(max_length=150)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("run_eval", "Can run evals from the admin")]

    def __str__(self) -> str:
        return self.id

    @property
    def failed(self) -> int:
        return self.total - self.passed

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0


class EvalResult(models.Model):
    eval_run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    case = models.ForeignKey(GoldenCase, on_delete=models.PROTECT, related_name="results")
    case_version = models.ForeignKey(GoldenCaseVersion, on_delete=models.PROTECT, related_name="results")
    attempt = models.PositiveSmallIntegerField(default=1)
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    passed = models.BooleanField(db_index=True)
    reasons = models.JSONField(default=list, blank=True)
    output = models.TextField(blank=True)
    duration_ms = models.FloatField(default=0)

    class Meta:
        ordering = ["eval_run", "id"]

    def __str__(self) -> str:
        return f"{self.eval_run_id} {self.case_id} {'pass' if self.passed else 'FAIL'}"
