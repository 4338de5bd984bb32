from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings

# Tight limits so the escape attempts end in seconds.
TEST_LIMITS = {
    "HARNESS_SANDBOX_COMMAND_TIMEOUT_SECONDS": 5,
    "HARNESS_SANDBOX_CPU_SECONDS": 5,
    "HARNESS_SANDBOX_MEMORY_MB": 512,
    "HARNESS_SANDBOX_MAX_PROCESSES": 32,
    "HARNESS_SANDBOX_MAX_FILE_MB": 8,
}


@pytest.fixture
def sandbox_root() -> Iterator[Path]:
    """A sandbox root of its own under /tmp (which the unprivileged sandbox uid can traverse)."""
    root = Path(tempfile.mkdtemp(prefix="harness-sbx-test-"))
    with override_settings(HARNESS_SANDBOX_ROOT=root, SANDBOX_PROVIDER="", E2B_API_KEY="", **TEST_LIMITS):
        yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def bwrap(sandbox_root: Path) -> Path:
    """The local provider must be usable: `make test` installs bubblewrap (make system-deps)."""
    from sandboxes.bwrap import bwrap_path

    assert bwrap_path() is not None, "bubblewrap is not installed: run `make system-deps` (apt-get install bubblewrap)"
    return sandbox_root
