"""The SDK's shell tools, with results that fit HARNESS_TOOL_OUTPUT_MAX_CHARS on every provider.

Use as `Shell(configure_tools=bound_shell_tools)`. The local provider already bounds what
its PTY sessions give back (`sandboxes.local`); this bounds the tool result itself, whatever
the session: E2B's, the one-shot exec fallback, a model asking for more than the harness
allows. exec_command and write_stdin get a default (and a ceiling) for max_output_tokens, so
the SDK's own truncation applies, and the final text is cut to the limit, header kept.
"""

from __future__ import annotations

from agents.sandbox.capabilities.shell import ShellToolSet
from agents.sandbox.capabilities.tools import ExecCommandTool, WriteStdinTool
from agents.sandbox.capabilities.tools.shell_tool import ExecCommandArgs, WriteStdinArgs

from sandboxes.output import APPROX_BYTES_PER_TOKEN, fit_for_model, model_budget_chars, tool_output_max_chars

_OUTPUT_HEADER = "\nOutput:\n"


def max_output_tokens(requested: int | None) -> int:
    """The model's max_output_tokens, or the harness's, whichever is smaller."""
    ceiling = max(1, model_budget_chars(None) // APPROX_BYTES_PER_TOKEN)
    return ceiling if requested is None else min(requested, ceiling)


def fit_tool_result(result: str) -> str:
    """A shell tool's formatted result cut to HARNESS_TOOL_OUTPUT_MAX_CHARS, its header lines kept."""
    limit = tool_output_max_chars()
    if len(result) <= limit:
        return result
    header, separator, output = result.partition(_OUTPUT_HEADER)
    room = limit - len(header) - len(separator)
    if not separator or room <= 0:
        return fit_for_model(result, None, total_bytes=len(result.encode()), budget=limit)[0]
    text, _ = fit_for_model(output, None, total_bytes=len(output.encode()), budget=room)
    return header + separator + text


class BoundedExecCommandTool(ExecCommandTool):
    async def _run(self, args: ExecCommandArgs, wrapped_command: str) -> str:
        args = args.model_copy(update={"max_output_tokens": max_output_tokens(args.max_output_tokens)})
        return fit_tool_result(await super()._run(args, wrapped_command))


class BoundedWriteStdinTool(WriteStdinTool):
    async def run(self, args: WriteStdinArgs) -> str:
        args = args.model_copy(update={"max_output_tokens": max_output_tokens(args.max_output_tokens)})
        return fit_tool_result(await super().run(args))


def bound_shell_tools(toolset: ShellToolSet) -> None:
    """A Shell capability's `configure_tools`: swap in the bounded exec_command and write_stdin."""
    exec_command = toolset.exec_command
    toolset.exec_command = BoundedExecCommandTool(
        session=exec_command.session,
        user=exec_command.user,
        needs_approval=exec_command.needs_approval,
        workspace_scope=exec_command.workspace_scope,
    )
    if toolset.write_stdin is not None:
        toolset.write_stdin = BoundedWriteStdinTool(
            session=toolset.write_stdin.session, needs_approval=toolset.write_stdin.needs_approval
        )
