from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models


def money(**options: object) -> models.DecimalField:  # type: ignore[type-arg]
    """US dollars, to a millionth."""
    return models.DecimalField(max_digits=14, decimal_places=6, **options)  # type: ignore[arg-type]


class Budget(models.Model):
    """One principal's limits. Empty fields are no limit (the server maxima still apply)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budget")
    daily_limit_usd = money(null=True, blank=True, validators=[MinValueValidator(0)], help_text="Spend per UTC day.")
    monthly_limit_usd = money(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="Spend per UTC calendar month."
    )
    max_concurrent_runs = models.PositiveIntegerField(
        null=True, blank=True, help_text="Runs queued or running at once; more are refused with 429."
    )
    max_run_cost_usd = money(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="The most one run may spend."
    )
    max_run_tokens = models.PositiveIntegerField(null=True, blank=True, help_text="The most tokens one run may use.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "budget"

    def __str__(self) -> str:
        return f"budget of {self.user}"

    @property
    def limits_spend(self) -> bool:
        return self.daily_limit_usd is not None or self.monthly_limit_usd is not None


class SpendDay(models.Model):
    """What a principal spent on one UTC day: charged after each model call of a run
    whose principal has a spend limit, and when the run ends otherwise."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="spend_days")
    day = models.DateField()
    cost_usd = money(default=0)

    class Meta:
        ordering = ["-day"]
        verbose_name = "spend"
        verbose_name_plural = "spend"
        constraints = [models.UniqueConstraint(fields=["owner", "day"], name="spend_day_unique")]

    def __str__(self) -> str:
        return f"{self.owner} {self.day}: ${self.cost_usd}"
