"""Sandbox capabilities for a team's `SandboxAgent`, with the harness's limits.

    from agents.sandbox import SandboxAgent
    from agents.sandbox.capabilities import Filesystem
    from harness.sandbox import shell

    SandboxAgent(name="reporter", instructions="...", capabilities=[shell(), Filesystem()])

The harness opens the run's sandbox (bubblewrap locally, E2B in the cloud) and closes it,
files under outputs/ becoming the run's artifacts, as for its own sandbox agents. `shell()` is
the SDK's Shell capability with the harness's bounded exec_command and write_stdin (the
output a command returns to the model is capped; see sandboxes/shell.py). Imports the SDK:
use it in agent modules, which only the workers load.
"""

from __future__ import annotations

from typing import Any


def shell(**options: Any) -> Any:
    """The SDK's `Shell` capability with the harness's bounded shell tools (options go to Shell)."""
    from agents.sandbox.capabilities import Shell

    from sandboxes.shell import bound_shell_tools

    return Shell(configure_tools=bound_shell_tools, **options)
