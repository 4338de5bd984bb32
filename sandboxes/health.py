"""`sandbox` in /health: true only when a remote provider (E2B) is configured and answers now.

The local bubblewrap provider is not a production backend and never makes this
true; GET /api/sandbox/status reports it (and E2B) in detail, behind an API key.
"""

from __future__ import annotations

from django.conf import settings

from harness_site.health import backend_check


@backend_check("sandbox")
def sandbox_live() -> bool:
    if not settings.E2B_API_KEY or settings.SANDBOX_PROVIDER not in ("", "e2b"):
        return False
    from sandboxes.remote import e2b_answers

    return e2b_answers()
