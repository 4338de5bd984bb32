"""Plain b-tree indexes for the audit log's indexed string columns (common.plain_indexes)."""

from django.db import migrations, models

from common.plain_indexes import Swap, swap_indexes

SWAPS = [
    Swap("audit_auditlog", "action", "audit_action"),
    Swap("audit_auditlog", "run_id", "audit_run"),
    Swap("audit_auditlog", "target_id", "audit_target"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="auditlog",
                    name="action",
                    field=models.CharField(max_length=64),
                ),
                migrations.AlterField(
                    model_name="auditlog",
                    name="run_id",
                    field=models.CharField(blank=True, max_length=64),
                ),
                migrations.AlterField(
                    model_name="auditlog",
                    name="target_id",
                    field=models.CharField(max_length=64),
                ),
                migrations.AddIndex(
                    model_name="auditlog",
                    index=models.Index(fields=["action"], name="audit_action"),
                ),
                migrations.AddIndex(
                    model_name="auditlog",
                    index=models.Index(fields=["target_id"], name="audit_target"),
                ),
                migrations.AddIndex(
                    model_name="auditlog",
                    index=models.Index(fields=["run_id"], name="audit_run"),
                ),
            ],
            database_operations=[migrations.RunPython(*swap_indexes(SWAPS))],
        ),
    ]
