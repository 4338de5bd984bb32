"""Print (and with --apply, set) the bucket lifecycle rule that backs up retention on R2.

The harness's retention job deletes expired artifacts and marks their metadata; the
bucket rule is the safety net that removes objects under runs/ a day after the
retention period even if the job never ran, and aborts stale multipart uploads.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from artifacts.storage import artifact_storage, uses_object_store


def lifecycle_rules() -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {
            # Uploads are copied to runs/ on confirm; what is left here was never confirmed.
            "ID": "harness-stale-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": "uploads/"},
            "Expiration": {"Days": 1},
        },
        {
            "ID": "harness-abort-incomplete-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        },
    ]
    if settings.ARTIFACTS_RETENTION_DAYS:
        rules.insert(
            0,
            {
                "ID": "harness-artifact-retention",
                "Status": "Enabled",
                "Filter": {"Prefix": "runs/"},
                "Expiration": {"Days": settings.ARTIFACTS_RETENTION_DAYS + 1},
            },
        )
    return {"Rules": rules}


class Command(BaseCommand):
    help = "Print the bucket lifecycle rule for artifact retention; --apply sets it on the R2 bucket."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--apply", action="store_true", help="Set the rule on the configured bucket.")

    def handle(self, *args: Any, apply: bool, **options: Any) -> None:
        config = lifecycle_rules()
        self.stdout.write(json.dumps(config, indent=2))
        if not apply:
            return
        if not uses_object_store():
            raise CommandError(
                "No object store is configured (R2_BUCKET is unset): there is no bucket to set a rule on."
            )
        storage: Any = artifact_storage()
        client = storage.connection.meta.client
        try:
            client.put_bucket_lifecycle_configuration(Bucket=storage.bucket_name, LifecycleConfiguration=config)
        except Exception as exc:
            raise CommandError(
                f"Setting the lifecycle rule on {storage.bucket_name!r} failed: {type(exc).__name__}: {exc}"
            ) from None
        self.stdout.write(f"Lifecycle rule set on bucket {storage.bucket_name!r}.")
