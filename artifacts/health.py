"""`r2` in /health: true only when a bucket is configured and answers a head-bucket now."""

from __future__ import annotations

from typing import Any

from artifacts.storage import artifact_storage, uses_object_store
from harness_site.health import backend_check


@backend_check("r2")
def r2_live() -> bool:
    if not uses_object_store():
        return False
    storage: Any = artifact_storage()
    client = storage.connection.meta.client
    client.head_bucket(Bucket=storage.bucket_name)
    return True
