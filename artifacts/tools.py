"""Function tools that let agents produce artifacts (wrapped for the SDK by the registry)."""

from __future__ import annotations

import json

from asgiref.sync import sync_to_async

from artifacts.storage import InvalidName
from audit.services import Actor
from harness_site.logs import current_run_id

MAX_TOOL_CONTENT_CHARS = 1_000_000


async def save_artifact(name: str, content: str, content_type: str = "text/plain") -> str:
    """Save text as a file artifact of this run, stored in the object store.

    Args:
        name: A file name such as "report.md" (no directories).
        content: The file's text.
        content_type: Its media type, for example "text/markdown" or "application/json".
    """
    from artifacts.services import ArtifactError, artifact_save
    from runs.models import Run

    run_id = current_run_id.get()
    if run_id is None:
        return "error: save_artifact only works inside a harness run"
    if len(content) > MAX_TOOL_CONTENT_CHARS:
        return f"error: content is over {MAX_TOOL_CONTENT_CHARS} characters"
    try:
        artifact = await sync_to_async(artifact_save)(
            run=Run(pk=run_id),
            name=name,
            content=content.encode(),
            content_type=content_type,
            actor=Actor.system("tool save_artifact"),
        )
    except (InvalidName, ArtifactError) as exc:
        return f"error: {exc}"
    return json.dumps(
        {"artifact_id": artifact.pk, "name": artifact.name, "size": artifact.size, "sha256": artifact.sha256}
    )
