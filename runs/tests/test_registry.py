"""The registry's offline replies read their tool's output defensively."""

from __future__ import annotations

from runs.registry import AGENTS


def test_the_scribe_says_why_when_its_tool_answered_with_text_not_json():
    reply = AGENTS["scribe"].offline_reply
    sdk_error = "An error occurred while running the tool. Please try again. Error: boom"
    assert reply("notes", sdk_error, 1) == f"I could not save the file: {sdk_error}"
    assert (
        reply("notes", "error: object store unreachable", 1)
        == "I could not save the file: error: object store unreachable"
    )
    saved = '{"name": "notes.md", "size": 5, "artifact_id": "art_1"}'
    assert reply("notes", saved, 1) == "Saved notes.md (5 bytes) as artifact art_1."
