"""What a sandbox may use: limits, time budget, network and environment, from settings.

Kept free of the SDK so the web process, the admin and the reaper can read it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings

# Every sandbox gets these and nothing else from the host, plus the names operators
# allow-list in HARNESS_SANDBOX_ENV_ALLOWLIST.
BASE_ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TMPDIR": "/tmp",
    "PYTHONDONTWRITEBYTECODE": "1",
}

# Files an agent should hand back are written here; they leave as artifacts.
OUTPUTS_DIR = "outputs"
# Files the harness brings in for the run land here.
INPUTS_DIR = "inputs"


@dataclass(frozen=True)
class SandboxPolicy:
    time_budget_seconds: int
    command_timeout_seconds: int
    cpu_seconds: int
    memory_mb: int
    max_processes: int
    max_file_mb: int
    tmp_mb: int
    network: str
    max_output_files: int
    environment_names: tuple[str, ...] = field(default_factory=tuple)
    # All of a sandbox's processes together (its cgroup's memory.max; see sandboxes.cgroups).
    total_memory_mb: int = 4096
    # The workspace's own filesystem (see sandboxes.quota); 0: none.
    disk_mb: int = 0

    @classmethod
    def from_settings(cls) -> SandboxPolicy:
        return cls(
            time_budget_seconds=settings.HARNESS_SANDBOX_TIME_BUDGET_SECONDS,
            command_timeout_seconds=settings.HARNESS_SANDBOX_COMMAND_TIMEOUT_SECONDS,
            cpu_seconds=settings.HARNESS_SANDBOX_CPU_SECONDS,
            memory_mb=settings.HARNESS_SANDBOX_MEMORY_MB,
            max_processes=settings.HARNESS_SANDBOX_MAX_PROCESSES,
            max_file_mb=settings.HARNESS_SANDBOX_MAX_FILE_MB,
            tmp_mb=settings.HARNESS_SANDBOX_TMP_MB,
            network=settings.HARNESS_SANDBOX_NETWORK,
            max_output_files=settings.HARNESS_SANDBOX_OUTPUT_MAX_FILES,
            environment_names=tuple(settings.HARNESS_SANDBOX_ENV_ALLOWLIST),
            total_memory_mb=settings.HARNESS_SANDBOX_TOTAL_MEMORY_MB,
            disk_mb=settings.HARNESS_SANDBOX_DISK_MB,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sandbox_environment(policy: SandboxPolicy) -> dict[str, str]:
    """The whole environment a sandboxed command sees (HOME is set by the provider)."""
    env = dict(BASE_ENVIRONMENT)
    for name in policy.environment_names:
        if name in os.environ:
            env[name] = os.environ[name]
    return env
