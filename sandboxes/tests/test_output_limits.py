"""A sandbox command's output costs the worker bounded memory, whatever the command prints.

The local provider reads stdout and stderr 64 KiB at a time into windows of
HARNESS_SANDBOX_OUTPUT_MAX_BYTES (head and tail kept, the middle read and dropped), and
a tool result gives the model at most HARNESS_TOOL_OUTPUT_MAX_CHARS. These tests print
256 MB through the real path (coder -> exec_command -> ConfinedSession -> bubblewrap),
hit the exact edge of the window, and check the event loop keeps turning meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.conf import settings
from django.test import override_settings

from conftest import make_run
from execution.executor import run_execute
from runs.models import Run
from sandboxes.models import Sandbox
from sandboxes.output import OutputWindow, Taken, fit_for_model

BIG = 256 * 2**20  # 268435456 bytes
# What the worker may grow by while a command prints BIG bytes. The output window is 1 MiB a
# stream; the rest is the run itself (events, spans, the SDK's objects) and allocator slack.
RSS_GROWTH_BOUND = 200 * 2**20
# The largest pause another coroutine may see while BIG bytes are read and dropped.
LOOP_GAP_BOUND_SECONDS = 0.2
# The commands print for a few seconds; the suite's usual 5 s limit is for escape attempts.
ROOMY = {"HARNESS_SANDBOX_COMMAND_TIMEOUT_SECONDS": 60, "HARNESS_SANDBOX_CPU_SECONDS": 60}


def print_x(count: int) -> str:
    return f"head -c {count} /dev/zero | tr '\\0' x"


# --- the window itself -------------------------------------------------------------


def test_the_window_keeps_exactly_its_limit_whole_and_marks_one_byte_more():
    window = OutputWindow(4096)
    for _ in range(4):
        window.feed(b"a" * 1024)
    whole = window.take()
    assert not whole.truncated and whole.render() == b"a" * 4096

    data = bytes(range(256)) * 16 + b"!"  # 4097 bytes
    for start in range(0, len(data), 1000):
        window.feed(data[start : start + 1000])
    over = window.take()
    assert over.truncated and over.total == 4097
    assert over.head == data[:2048] and over.tail == data[-2048:]
    assert (
        over.render()
        == data[:2048] + b"\n[output truncated: 4097 bytes, kept the first 2048 and the last 2048]\n" + (data[-2048:])
    )


def test_the_window_never_holds_more_than_its_limit():
    window = OutputWindow(1000)
    for size in (1, 999, 5000, 3, 700, 64 * 1024, 17):
        window.feed(b"y" * size)
        assert window.kept <= 1000 and window.tail_size <= 500
    taken = window.take()
    assert taken.total == 1 + 999 + 5000 + 3 + 700 + 64 * 1024 + 17 and len(taken.head) + len(taken.tail) == 1000


def test_what_the_model_sees_fits_its_budget_and_gives_the_real_size():
    text, cut = fit_for_model("z" * 100, None, total_bytes=100, budget=100)
    assert (text, cut) == ("z" * 100, False)
    text, cut = fit_for_model("h" * 5000, "t" * 5000, total_bytes=BIG, budget=1000)
    assert cut and len(text) <= 1000
    assert text.startswith("hhh") and text.endswith("ttt") and f"[output truncated: {BIG} bytes in all" in text
    # A window that dropped its middle says so even when what is left would fit.
    text, cut = fit_for_model("h", "t", total_bytes=3, budget=1000)
    assert cut and "truncated" in text
    assert Taken(head=b"ab", tail=b"", total=2).render() == b"ab"


# --- a ConfinedSession, directly ---------------------------------------------------------


@asynccontextmanager
async def confined_session() -> AsyncIterator[Any]:
    from agents.sandbox import Manifest

    from sandboxes.local import ConfinedClient
    from sandboxes.policy import SandboxPolicy
    from sandboxes.providers import sandbox_root

    client = ConfinedClient(policy=SandboxPolicy.from_settings(), confine=True)
    session = await client.create(manifest=Manifest(root=str(sandbox_root() / f"sbx_{uuid.uuid4().hex[:12]}")))
    await session.start()
    try:
        yield session
    finally:
        await session.pty_terminate_all()
        await session.aclose()
        await client.delete(session)


async def exec_output(session: Any, command: str) -> bytes:
    result = await session.exec(command, timeout=60)
    assert result.exit_code == 0, result.stderr
    return bytes(result.stdout)


async def exec_command_output(session: Any, command: str) -> str:
    """What exec_command's PTY path gives back for a command (the SDK decodes these bytes)."""
    update = await session.pty_exec_start(command, shell=["sh", "-c"], yield_time_s=30)  # noqa: S604 (the sandbox's shell)
    assert update.exit_code == 0
    return str(update.output.decode())


@pytest.mark.usefixtures("bwrap")
@override_settings(HARNESS_SANDBOX_OUTPUT_MAX_BYTES=4096, HARNESS_TOOL_OUTPUT_MAX_CHARS=100_000, **ROOMY)
def test_output_of_exactly_the_limit_is_kept_whole_and_one_byte_more_is_marked():
    async def scenario() -> None:
        async with confined_session() as session:
            # exec (one-shot): each stream has its own window.
            assert await exec_output(session, print_x(4096)) == b"x" * 4096
            over = await exec_output(session, print_x(4097))
            assert (
                over
                == b"x" * 2048
                + b"\n[output truncated: 4097 bytes, kept the first 2048 and the last 2048]\n"
                + (b"x" * 2048)
            )
            both = await session.exec(f"{print_x(5000)} >&2; echo out", timeout=60)
            assert both.stdout == b"out\n" and b"[output truncated: 5000 bytes" in both.stderr

            # exec_command's path (a PTY session without a tty).
            assert await exec_command_output(session, print_x(4096)) == "x" * 4096
            marked = await exec_command_output(session, print_x(4097))
            assert "truncated" in marked and "4097 bytes" in marked and marked.count("x") == 4096

    asyncio.run(scenario())


@pytest.mark.usefixtures("bwrap")
@override_settings(**ROOMY)
def test_a_timeout_still_kills_the_command_and_raises_the_sdks_error():
    from agents.sandbox.errors import ExecTimeoutError

    async def scenario() -> None:
        async with confined_session() as session:
            started = time.monotonic()
            with pytest.raises(ExecTimeoutError):
                await session.exec(f"{print_x(BIG)}; sleep 30", timeout=1)
            assert time.monotonic() - started < 10

    asyncio.run(scenario())


@pytest.mark.usefixtures("bwrap")
@override_settings(**ROOMY)
def test_the_event_loop_keeps_turning_while_a_big_output_is_read():
    gaps: dict[str, float] = {}

    async def ticking(label: str, work: Any) -> Any:
        ticks: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        try:
            return await work
        finally:
            done.set()
            await task
            gaps[label] = max(b - a for a, b in zip(ticks, ticks[1:], strict=False))

    async def scenario() -> None:
        async with confined_session() as session:
            result = await ticking("exec", session.exec(print_x(BIG), timeout=60))
            assert result.exit_code == 0 and f"[output truncated: {BIG} bytes".encode() in result.stdout
            assert len(result.stdout) < settings.HARNESS_SANDBOX_OUTPUT_MAX_BYTES + 200
            text = await ticking("exec_command", exec_command_output(session, print_x(BIG)))
            assert f"{BIG} bytes" in text and len(text) <= settings.HARNESS_TOOL_OUTPUT_MAX_CHARS

    asyncio.run(scenario())
    print(f"largest event-loop gap while reading {BIG} bytes: {gaps}")
    assert max(gaps.values()) < LOOP_GAP_BOUND_SECONDS, gaps


@pytest.mark.usefixtures("bwrap")
@override_settings(HARNESS_TOOL_OUTPUT_MAX_CHARS=1000, **ROOMY)
def test_the_bounded_shell_tools_fit_the_tool_output_limit():
    from agents.sandbox.capabilities import Shell
    from agents.sandbox.capabilities.tools.shell_tool import ExecCommandArgs

    from sandboxes.shell import BoundedExecCommandTool, bound_shell_tools, fit_tool_result

    async def scenario() -> None:
        async with confined_session() as session:
            shell = Shell(configure_tools=bound_shell_tools)
            shell.bind(session)
            tools = shell.tools()
            assert [type(tool).__name__ for tool in tools] == ["BoundedExecCommandTool", "BoundedWriteStdinTool"]
            exec_command = tools[0]
            assert isinstance(exec_command, BoundedExecCommandTool)
            result = await exec_command.run(ExecCommandArgs(cmd=print_x(50_000), max_output_tokens=10**6))
            assert len(result) <= 1000 and "Process exited with code 0" in result and "truncated" in result

    asyncio.run(scenario())
    long = "Chunk ID: abc\nWall time: 1 seconds\nOutput:\n" + "q" * 5000
    fitted = fit_tool_result(long)
    assert len(fitted) <= 1000 and fitted.startswith("Chunk ID: abc\nWall time: 1 seconds\nOutput:\nqqq")


# --- a whole coder run -----------------------------------------------------------


@contextmanager
def peak_rss(interval: float = 0.05) -> Iterator[dict[str, int]]:
    """The process's RSS before, and its peak while the block runs (sampled every `interval` s)."""
    process = psutil.Process()
    found = {"before": process.memory_info().rss, "peak": 0}
    found["peak"] = found["before"]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            found["peak"] = max(found["peak"], process.memory_info().rss)
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield found
    finally:
        stop.set()
        sampler.join()
        found["peak"] = max(found["peak"], process.memory_info().rss)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("bwrap")
@override_settings(**ROOMY)
def test_a_coder_run_printing_256_mb_costs_the_worker_little_memory(alice):
    # Warm up (the SDK's imports, the first run's caches) so only the command's cost is measured.
    warm = make_run(alice, agent="coder", input=f"```sh\n{print_x(1000)}\n```")
    run_execute(warm.pk)

    run = make_run(alice, agent="coder", input=f"```sh\n{print_x(BIG)}\n```")
    with peak_rss() as rss:
        run_execute(run.pk)
    growth = rss["peak"] - rss["before"]
    print(f"RSS growth while a coder run printed {BIG} bytes: {growth / 2**20:.1f} MiB")

    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.error
    outputs = [event.data["output"] for event in run.events.filter(type="tool.output").order_by("seq")]
    assert len(outputs) == 1
    output = outputs[0]
    assert len(output) <= settings.HARNESS_TOOL_OUTPUT_MAX_CHARS
    assert "Process exited with code 0" in output
    assert f"[output truncated: {BIG} bytes in all" in output
    assert growth < RSS_GROWTH_BOUND, f"the worker grew by {growth / 2**20:.1f} MiB"
    sandbox = Sandbox.objects.get(run=run)
    assert sandbox.cleanup_state == Sandbox.Cleanup.DONE and not Path(sandbox.provider_session_id).exists()
