"""Plain b-tree indexes only, and none that another index already covers (common.plain_indexes).

The indexed fields become `Meta.indexes`; the foreign keys that lead a composite index (Run.owner,
RunEvent.run, SessionItem.session) lose their own; the string primary keys' `_like` indexes go.
On Postgres the existing indexes are renamed, not rebuilt.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from common.plain_indexes import Swap, drop_primary_key_like_indexes, swap_indexes

SWAPS = [
    Swap("runs_run", "agent", "run_agent"),
    Swap("runs_run", "model", "run_model"),
    Swap("runs_run", "origin", "run_origin"),
    Swap("runs_run", "owner_id", None, string=False),  # run_owner_recent (owner_id, id DESC)
    Swap("runs_run", "retry_of_id", "run_retry_of"),
    Swap("runs_run", "session_id", "run_session"),
    Swap("runs_run", "status", "run_status"),
    Swap("runs_runevent", "run_id", None),  # run_event_seq_unique (run_id, seq)
    Swap("runs_sessionitem", "run_id", "session_item_run"),
    Swap("runs_sessionitem", "session_id", None),  # (session_id, id)
    Swap("runs_span", "kind", "span_kind"),
    Swap("runs_span", "run_id", "span_run"),
    Swap("runs_span", "trace_id", "span_trace"),
    Swap("runs_trace", "run_id", "trace_run"),
]
PRIMARY_KEYS = [("runs_run", "id"), ("runs_session", "id"), ("runs_span", "id"), ("runs_trace", "id")]


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0006_output_json_offline_script"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="run",
                    name="agent",
                    field=models.CharField(max_length=64),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="model",
                    field=models.CharField(max_length=100),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="origin",
                    field=models.CharField(default="api", max_length=16),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="owner",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="agent_runs",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="retry_of",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="retries",
                        to="runs.run",
                    ),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="session",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="runs",
                        to="runs.session",
                    ),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="status",
                    field=models.CharField(
                        choices=[
                            ("queued", "Queued"),
                            ("running", "Running"),
                            ("succeeded", "Succeeded"),
                            ("failed", "Failed"),
                            ("cancelled", "Cancelled"),
                            ("awaiting_approval", "Awaiting approval"),
                        ],
                        default="queued",
                        max_length=24,
                    ),
                ),
                migrations.AlterField(
                    model_name="runevent",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="runs.run",
                    ),
                ),
                migrations.AlterField(
                    model_name="sessionitem",
                    name="run",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="runs.run",
                    ),
                ),
                migrations.AlterField(
                    model_name="sessionitem",
                    name="session",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="items",
                        to="runs.session",
                    ),
                ),
                migrations.AlterField(
                    model_name="span",
                    name="kind",
                    field=models.CharField(max_length=32),
                ),
                migrations.AlterField(
                    model_name="span",
                    name="run",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="spans",
                        to="runs.run",
                    ),
                ),
                migrations.AlterField(
                    model_name="span",
                    name="trace",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="spans",
                        to="runs.trace",
                    ),
                ),
                migrations.AlterField(
                    model_name="trace",
                    name="run",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="traces",
                        to="runs.run",
                    ),
                ),
                migrations.AddIndex(
                    model_name="run",
                    index=models.Index(fields=["session"], name="run_session"),
                ),
                migrations.AddIndex(
                    model_name="run",
                    index=models.Index(fields=["agent"], name="run_agent"),
                ),
                migrations.AddIndex(
                    model_name="run",
                    index=models.Index(fields=["model"], name="run_model"),
                ),
                migrations.AddIndex(
                    model_name="run",
                    index=models.Index(fields=["status"], name="run_status"),
                ),
                migrations.AddIndex(
                    model_name="run",
                    index=models.Index(fields=["origin"], name="run_origin"),
                ),
                migrations.AddIndex(
                    model_name="run",
                    index=models.Index(fields=["retry_of"], name="run_retry_of"),
                ),
                migrations.AddIndex(
                    model_name="sessionitem",
                    index=models.Index(fields=["run"], name="session_item_run"),
                ),
                migrations.AddIndex(
                    model_name="span",
                    index=models.Index(fields=["trace"], name="span_trace"),
                ),
                migrations.AddIndex(
                    model_name="span",
                    index=models.Index(fields=["run"], name="span_run"),
                ),
                migrations.AddIndex(
                    model_name="span",
                    index=models.Index(fields=["kind"], name="span_kind"),
                ),
                migrations.AddIndex(
                    model_name="trace",
                    index=models.Index(fields=["run"], name="trace_run"),
                ),
            ],
            database_operations=[migrations.RunPython(*swap_indexes(SWAPS))],
        ),
        migrations.RunPython(*drop_primary_key_like_indexes(PRIMARY_KEYS)),
    ]
