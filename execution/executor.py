"""Execute one run in a worker: the agent loop with the SDK, events, leases, outcome.

The route handler never gets here; a django-q2 worker calls `run_execute(run_id)`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from agents import Agent, ItemHelpers, Model, ModelProvider, MultiProvider, RunConfig, Runner
from agents.models.openai_provider import OpenAIProvider
from agents.run_config import SandboxRunConfig
from agents.tracing import gen_trace_id
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from execution.cassette import CassetteModel, RecordingModel, ReplayDiverged
from execution.memory import DjangoSession
from execution.offline import OFFLINE_MODEL, OfflineModel
from execution.tracing import processor, trace_rows, tracing_install
from harness_site.logs import run_logging_context
from harness_site.redaction import redact
from runs import events, services
from runs.models import Run
from runs.registry import AgentSpec, agent_get
from sandboxes.services import OpenSandbox, SandboxError, sandbox_close, sandbox_open

logger = logging.getLogger(__name__)

TOOL_OUTPUT_LIMIT = 16_000


class ModelUnavailable(Exception):
    """The run's model cannot be used with this configuration."""


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def agent_for_run(
    spec: AgentSpec, model: str, replay: list[dict[str, Any]] | None = None
) -> tuple[Agent[Any], ModelProvider, RecordingModel]:
    """The SDK agent for this run, the provider behind it, and the recorder of its model calls.

    With `replay`, the recorded model responses answer instead of the model.
    """
    inner: Model
    provider: ModelProvider = MultiProvider()
    if replay is not None:
        inner = CassetteModel(replay)
    elif model == OFFLINE_MODEL:
        inner = OfflineModel(spec, delay_ms=settings.HARNESS_OFFLINE_DELAY_MS)
    else:
        if not settings.OPENAI_API_KEY:
            raise ModelUnavailable(
                f"OPENAI_API_KEY is not set, so model {model!r} cannot be called. Set OPENAI_API_KEY "
                f'(and OPENAI_BASE_URL for an OpenAI-compatible server), or run with model "offline".'
            )
        provider = OpenAIProvider(
            api_key=settings.OPENAI_API_KEY,
            base_url=settings.OPENAI_BASE_URL or None,
            use_responses=settings.HARNESS_OPENAI_API == "responses",
        )
        inner = provider.get_model(model)
    recorder = RecordingModel(inner)
    return spec.build(recorder), provider, recorder


def usage_dict(usage: Any) -> dict[str, int]:
    return {
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def translate_event(event: Any, tool_names: dict[str, str]) -> events.EventSpec | None:
    """An SDK stream event as a run event, or None for events the log does not keep."""
    if event.type == "agent_updated_stream_event":
        return events.AGENT_UPDATED, {"agent": event.new_agent.name}
    if event.type != "run_item_stream_event":
        return None
    item = event.item
    raw = item.raw_item
    if event.name == "tool_called":
        call_id = getattr(raw, "call_id", None) or getattr(raw, "id", "") or ""
        name = str(getattr(raw, "name", None) or getattr(raw, "type", "tool"))
        tool_names[call_id] = name
        return events.TOOL_CALLED, {"call_id": call_id, "name": name, "arguments": getattr(raw, "arguments", None)}
    if event.name == "tool_output":
        call_id = raw.get("call_id", "") if isinstance(raw, dict) else getattr(raw, "call_id", "")
        output = str(item.output)
        return events.TOOL_OUTPUT, {
            "call_id": call_id,
            "name": tool_names.get(call_id, ""),
            "output": output[:TOOL_OUTPUT_LIMIT],
            "truncated": len(output) > TOOL_OUTPUT_LIMIT,
        }
    if event.name == "message_output_created":
        return events.MESSAGE, {"text": ItemHelpers.text_message_output(item)}
    if event.name in ("handoff_requested", "handoff_occured"):
        return events.HANDOFF, {"stage": event.name, "agent": item.agent.name}
    return None


class EventWriter:
    """Appends a run's events from the event loop without blocking it.

    Events are queued; one writer task drains the queue in batches, so while a
    write is in flight new events gather into the next batch. Text deltas are
    merged and written at most every HARNESS_STREAM_COALESCE_MS (a long answer
    costs a write per interval, not per token); any other event is written at
    once, with the deltas before it. If a batch is refused the run is no longer
    ours (cancelled or reaped) and `lost` is set.
    """

    def __init__(self, run_id: str, worker_id: str) -> None:
        self.run_id, self.worker_id = run_id, worker_id
        self.pending: list[events.EventSpec] = []
        self.wake = asyncio.Event()
        self.coalesce = settings.HARNESS_STREAM_COALESCE_MS / 1000
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.lost = False
        self.task = asyncio.create_task(self._drain())

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.pending.append((kind, data))
        self.wake.set()

    def emit_delta(self, text: str) -> None:
        if self.pending and self.pending[-1][0] == events.TEXT_DELTA:
            self.pending[-1][1]["text"] += text
        else:
            # When the first merged token left the model: clients measure their lag with it.
            self.pending.append((events.TEXT_DELTA, {"text": text, "emitted_at": round(time.time(), 6)}))
        self._schedule()

    def _schedule(self) -> None:
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.coalesce, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.wake.set()

    def _only_deltas_pending(self) -> bool:
        return all(kind == events.TEXT_DELTA for kind, _ in self.pending)

    async def _drain(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending and not self.lost:
                if self.timer is not None and self._only_deltas_pending() and not self.closing:
                    break  # deltas wait for their interval
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
                batch, self.pending = self.pending, []
                ok = await sync_to_async(services.run_record_events)(
                    run_id=self.run_id, worker_id=self.worker_id, batch=batch
                )
                self.lost = self.lost or not ok
            if self.closing:
                return

    async def close(self) -> None:
        self.closing = True
        self.wake.set()
        await self.task


@dataclass
class Watch:
    """Why the run was stopped from outside, if it was."""

    stopped: str | None = None


async def _watch(run: Run, worker_id: str, result: Any, watch: Watch) -> None:
    """Stop the run when its status changes (cancel) and keep the lease alive."""
    loop = asyncio.get_running_loop()
    heartbeat_every = settings.HARNESS_RUN_LEASE_SECONDS / 3
    next_heartbeat = loop.time() + heartbeat_every
    while True:
        await asyncio.sleep(settings.HARNESS_CANCEL_CHECK_SECONDS)
        status = await sync_to_async(services.run_status)(run_id=run.id)
        alive = status == Run.Status.RUNNING
        if alive and loop.time() >= next_heartbeat:
            alive = await sync_to_async(services.run_heartbeat)(run_id=run.id, worker_id=worker_id)
            next_heartbeat = loop.time() + heartbeat_every
        if not alive:
            watch.stopped = status or "deleted"
            logger.info("run stopped from outside", extra={"status": status})
            result.cancel(mode="immediate")
            return


async def _execute_claimed(
    run: Run, spec: AgentSpec, worker_id: str, replay: list[dict[str, Any]] | None = None
) -> services.RunOutcome:
    trace_id = gen_trace_id()
    writer = EventWriter(run.id, worker_id)
    watch = Watch()
    watcher: asyncio.Task[None] | None = None
    result: Any = None
    sandbox: Any = None
    recorder: RecordingModel | None = None
    outcome: services.RunOutcome
    try:
        await sync_to_async(close_old_connections)()
        agent, provider, recorder = agent_for_run(spec, run.model, replay)
        if spec.sandbox:
            sandbox = await _sandbox_open(run, spec, worker_id, writer)
        run_config = RunConfig(
            model_provider=provider,
            workflow_name=f"harness:{spec.name}",
            trace_id=trace_id,
            group_id=run.session_id,
            trace_metadata={"run_id": run.id, "agent": spec.name, "model": run.model},
            trace_include_sensitive_data=settings.HARNESS_TRACE_INCLUDE_SENSITIVE_DATA,
            sandbox=SandboxRunConfig(session=sandbox.session) if sandbox is not None else None,
        )
        result = Runner.run_streamed(
            agent,
            run.input,
            session=DjangoSession(run.session_id, run_id=run.id),
            run_config=run_config,
            max_turns=settings.HARNESS_RUN_MAX_TURNS,
        )
        watcher = asyncio.create_task(_watch(run, worker_id, result, watch))
        tool_names: dict[str, str] = {}
        async with asyncio.timeout(settings.HARNESS_RUN_TIMEOUT_SECONDS):
            async for sdk_event in result.stream_events():
                if sdk_event.type == "raw_response_event":
                    if getattr(sdk_event.data, "type", "") == "response.output_text.delta":
                        writer.emit_delta(sdk_event.data.delta)
                    continue
                translated = translate_event(sdk_event, tool_names)
                if translated is not None:
                    writer.emit(*translated)
        if watch.stopped:
            outcome = services.RunOutcome(status=Run.Status.CANCELLED, error=f"stopped: run is {watch.stopped}")
        else:
            output = result.final_output
            outcome = services.RunOutcome(
                status=Run.Status.SUCCEEDED, output=output if isinstance(output, str) else str(output)
            )
    except TimeoutError:
        if result is not None:
            result.cancel(mode="immediate")
        seconds = settings.HARNESS_RUN_TIMEOUT_SECONDS
        outcome = services.RunOutcome(
            status=Run.Status.FAILED, error=f"Run timed out after {seconds:g} s (HARNESS_RUN_TIMEOUT_SECONDS)."
        )
    except (ModelUnavailable, SandboxError, ReplayDiverged) as exc:
        outcome = services.RunOutcome(status=Run.Status.FAILED, error=str(exc))
    except Exception as exc:
        logger.exception("run failed")
        outcome = services.RunOutcome(status=Run.Status.FAILED, error=redact(f"{type(exc).__name__}: {exc}"))
    finally:
        if watcher is not None:
            watcher.cancel()
        if sandbox is not None:
            # However the run ended: outputs become artifacts, then the sandbox is destroyed.
            reason = _ending(locals().get("outcome"), watch)
            outputs = await sandbox_close(sandbox, run=run, reason=reason)
            writer.emit(events.SANDBOX_STOPPED, {"sandbox_id": sandbox.row.pk, "reason": reason, **outputs})
        await writer.close()
    if result is not None:
        outcome.usage = usage_dict(result.context_wrapper.usage)
    if recorder is not None:
        outcome.model_calls = recorder.calls
    buffer = processor.pop(trace_id)
    if buffer is not None:
        outcome.trace, outcome.spans = trace_rows(buffer, run_id=run.id)
    # Like the end of a request: the ORM thread's connection honours DATABASE_CONN_MAX_AGE.
    await sync_to_async(close_old_connections)()
    return outcome


async def _sandbox_open(run: Run, spec: AgentSpec, worker_id: str, writer: EventWriter) -> OpenSandbox:
    opened = await sandbox_open(run=run, worker_id=worker_id, tools=spec.tool_names)
    writer.emit(
        events.SANDBOX_STARTED,
        {"sandbox_id": opened.row.pk, "provider": opened.row.provider, "manifest": opened.row.manifest},
    )
    return opened


def _ending(outcome: services.RunOutcome | None, watch: Watch) -> str:
    """Why the sandbox is being closed, in the words of the run's ending."""
    if watch.stopped:
        return f"run stopped ({watch.stopped})"
    if outcome is None:
        return "run interrupted"
    if outcome.status == Run.Status.FAILED and "timed out" in outcome.error:
        return "run timed out"
    return f"run {outcome.status}"


def warm_up() -> None:
    """Run each registry agent once on the offline model, in memory, with tracing off."""
    from runs.registry import AGENTS

    async def warm() -> None:
        for spec in AGENTS.values():
            if spec.sandbox:
                continue  # needs a sandbox; the agent loop it shares is warmed by the others
            agent = spec.build(OfflineModel(spec))
            await Runner.run(agent, "What is 1 + 1?", run_config=RunConfig(tracing_disabled=True))

    asyncio.run(warm())


def run_execute(run_id: str, *, replay: list[dict[str, Any]] | None = None) -> str | None:
    """Claim and execute one run (synchronous entry point for the worker).

    1. Claim it (QUEUED -> RUNNING, lease); if another worker or a cancel won, stop.
    2. Run the agent with Runner.run_streamed, appending events as they happen,
       while a watcher extends the lease and stops the run on cancel.
    3. Write the outcome, usage, trace and spans, the final event and audit row.
    Returns the final status this worker recorded, or None if it recorded none.
    """
    tracing_install()
    worker_id = new_worker_id()
    close_old_connections()
    run = services.run_claim(run_id=run_id, worker_id=worker_id)
    if run is None:
        logger.info("run not claimed: already taken, cancelled or finished", extra={"run_id": run_id})
        return None
    with run_logging_context(run.id):
        logger.info("run started", extra={"agent": run.agent, "model": run.model, "attempt": run.attempts})
        spec = agent_get(run.agent)
        if spec is None:
            outcome = services.RunOutcome(
                status=Run.Status.FAILED, error=f"agent {run.agent!r} is no longer in the registry"
            )
        else:
            outcome = asyncio.run(_execute_claimed(run, spec, worker_id, replay))
        recorded = services.run_finish(run_id=run.id, worker_id=worker_id, outcome=outcome)
        logger.info(
            "run finished",
            extra={
                "status": outcome.status if recorded else "superseded",
                "usage": outcome.usage,
                "error": outcome.error or None,
            },
        )
        close_old_connections()
        return outcome.status if recorded else None
