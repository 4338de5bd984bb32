"""Execute one claimed run on the worker's event loop: the agent loop with the SDK, its
events, its sandbox, its outcome.

The run engine (execution/engine.py) hosts many of these at once; `run_execute` runs
one to the end on a loop of its own (tests, the eval runner).

A run may pause on tool calls that need a person (approvals/): its SDK RunState, the
conversation it added, what it cost so far and its workspace (a snapshot in the artifact
store) are stored, and the worker lets it go. Once decided it is queued again; the worker
that claims it restores the state with the same agent, applies the decisions and carries
on: events continue the same sequence, usage, cost and spans add up, and the conversation
is written once, with the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from agents import (
    Agent,
    InputGuardrailTripwireTriggered,
    ItemHelpers,
    MaxTurnsExceeded,
    Model,
    ModelProvider,
    ModelSettings,
    MultiProvider,
    OutputGuardrailTripwireTriggered,
    RunConfig,
    RunContextWrapper,
    Runner,
)
from agents.models.openai_provider import OpenAIProvider
from agents.run_config import SandboxRunConfig
from agents.tracing import gen_trace_id
from django.conf import settings

from approvals.models import CALL_ID_MAX
from approvals.services import Pause, PauseRequest, Resume, parse_arguments, paused_state_drop, run_pause
from audit.services import Actor
from billing.pricing import TokenUsage
from billing.services import RunLimits
from common.limits import clip_data, clip_text
from common.text import safe_text
from execution.budget import BudgetExceeded, RunMeter
from execution.cassette import CassetteModel, RecordingModel, ReplayDiverged
from execution.catalog import (
    CatalogAgent,
    CatalogError,
    agent_get,
    catalog,
    mcp_servers,
    registry_version,
    tool_output_text,
    tool_outputs_capped,
)
from execution.memory import RunMemory
from execution.offline import OFFLINE_MODEL, OfflineModel, OfflineScriptError
from execution.sdk import install_or_warn as sdk_install
from execution.tracing import processor, trace_rows
from harness.agents import OfflineScript, RunContext
from harness_site.logs import run_logging_context
from harness_site.redaction import redact, redact_data
from harness_site.telemetry import run_span
from runs import events, services
from runs.models import Run
from sandboxes.services import OpenSandbox, SandboxError, sandbox_close, sandbox_open, sandbox_suspend

if TYPE_CHECKING:
    from execution.engine import Engine, InFlight

logger = logging.getLogger(__name__)
sdk_install()


class ModelUnavailable(Exception):
    """The run's model cannot be used with this configuration."""


def agent_for_run(
    spec: CatalogAgent,
    model: str,
    replay: list[dict[str, Any]] | None = None,
    meter: RunMeter | None = None,
    script: dict[str, Any] | None = None,
) -> tuple[Agent[Any], ModelProvider, RecordingModel]:
    """The SDK agent for this run, the provider behind it, and the recorder of its model calls
    (which asks `meter` before each call and tells it each call's usage). The recorder answers
    for every agent of the run (handoffs too): the run's config names it as the model.

    With `replay`, the recorded model responses answer instead of the model; `script` is the
    run's own offline script (model "offline").
    """
    inner: Model
    provider: ModelProvider = MultiProvider()
    if replay is not None:
        inner = CassetteModel(replay)
    elif model == OFFLINE_MODEL:
        inner = OfflineModel(
            spec,
            delay_ms=settings.HARNESS_OFFLINE_DELAY_MS,
            script=OfflineScript.from_data(script) if script is not None else None,
        )
    else:
        if not settings.OPENAI_API_KEY:
            raise ModelUnavailable(
                f"OPENAI_API_KEY is not set, so model {model!r} cannot be called. Set OPENAI_API_KEY "
                f'(and OPENAI_BASE_URL for an OpenAI-compatible server), or run with model "offline".'
            )
        provider = _openai_provider()
        inner = provider.get_model(model)
    recorder = RecordingModel(inner, meter)
    return spec.build(model), provider, recorder


_providers: dict[tuple[str, str, str], OpenAIProvider] = {}


def _openai_provider() -> OpenAIProvider:
    """One provider (and so one HTTP client and its connection pool) per process and configuration."""
    key = (settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL, settings.HARNESS_OPENAI_API)
    provider = _providers.get(key)
    if provider is None:
        provider = _providers[key] = OpenAIProvider(
            api_key=settings.OPENAI_API_KEY,
            base_url=settings.OPENAI_BASE_URL or None,
            use_responses=settings.HARNESS_OPENAI_API == "responses",
        )
    return provider


def usage_dict(usage: Any) -> dict[str, int]:
    counted = TokenUsage.of(usage)
    return {
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": counted.cached_input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": counted.reasoning_tokens,
        "total_tokens": usage.total_tokens,
    }


def translate_event(event: Any, tool_names: dict[str, str]) -> events.EventSpec | None:
    """An SDK stream event as a run event (texts capped), or None for events the log does not keep."""
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
        return events.TOOL_CALLED, {
            "call_id": call_id,
            "name": name,
            "arguments": clip_data(getattr(raw, "arguments", None)),
        }
    if event.name == "tool_output":
        call_id = raw.get("call_id", "") if isinstance(raw, dict) else getattr(raw, "call_id", "")
        output, truncated = clip_text(_output_text(raw, item.output))
        return events.TOOL_OUTPUT, {
            "call_id": call_id,
            "name": tool_names.get(call_id, ""),
            "output": output,
            "truncated": truncated,
        }
    if event.name == "message_output_created":
        text, truncated = clip_text(ItemHelpers.text_message_output(item))
        return events.MESSAGE, {"text": text, **({"truncated": True} if truncated else {})}
    if event.name == "handoff_requested":
        return events.HANDOFF, {"stage": event.name, "agent": item.agent.name, "tool": getattr(raw, "name", "")}
    if event.name == "handoff_occured":
        source, target = getattr(item, "source_agent", item.agent), getattr(item, "target_agent", None)
        return events.HANDOFF, {
            "stage": event.name,
            "agent": item.agent.name,
            "from": source.name,
            "to": target.name if target is not None else "",
        }
    return None


def _output_text(raw: Any, output: Any) -> str:
    """A tool output as the model reads it (see tool_output_text), else the tool's return value
    as a string."""
    sent = raw.get("output") if isinstance(raw, dict) else getattr(raw, "output", None)
    text = tool_output_text(sent)
    return text if text is not None else str(output)


class EventWriter:
    """Gathers a run's events on the event loop and writes them in batches.

    The first event of a batch starts a timer of HARNESS_STREAM_COALESCE_MS; every event
    that arrives before it fires joins the batch, so a run costs a write per interval,
    not per event or token (text deltas are merged into one event per batch). What is
    still pending when the run ends is written with its outcome, in the same
    transaction as the final event. If a batch is refused the run is no longer this
    worker's (cancelled or reaped) and `lost` is set.
    Text deltas stop being stored once a run has stored HARNESS_MAX_STORED_CHARS of them
    (the last one says so); the message itself is stored, capped, all the same.
    """

    def __init__(self, run_id: str, worker_id: str, engine: Engine) -> None:
        self.run_id, self.worker_id, self.engine = run_id, worker_id, engine
        self.pending: list[events.EventSpec] = []
        self.coalesce = settings.HARNESS_STREAM_COALESCE_MS / 1000
        self.timer: asyncio.TimerHandle | None = None
        self.flushing: asyncio.Task[None] | None = None
        self.lost = False
        self.delta_chars = 0
        self.deltas_capped = False

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.pending.append((kind, data))
        self._schedule()

    def emit_delta(self, text: str) -> None:
        if self.deltas_capped:
            return
        self.delta_chars += len(text)
        if self.delta_chars > settings.HARNESS_MAX_STORED_CHARS:
            self.deltas_capped = True
            text = "[truncated: further text deltas of this run are not stored; see its message]"
        if self.pending and self.pending[-1][0] == events.TEXT_DELTA:
            self.pending[-1][1]["text"] += text
        else:
            # When the first merged token left the model: clients measure their lag with it.
            self.pending.append((events.TEXT_DELTA, {"text": text, "emitted_at": round(time.time(), 6)}))
        if self.deltas_capped:
            self.pending[-1][1]["truncated"] = True
        self._schedule()

    def _schedule(self) -> None:
        if self.timer is None and self.flushing is None:
            self.timer = asyncio.get_running_loop().call_later(self.coalesce, self._fire)

    def _fire(self) -> None:
        self.timer = None
        if self.pending and not self.lost:
            self.flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            batch, self.pending = self.pending, []
            ok = await self.engine.db(
                services.run_record_events, run_id=self.run_id, worker_id=self.worker_id, batch=batch
            )
            self.lost = self.lost or not ok
        finally:
            self.flushing = None
            if self.pending and not self.lost:
                self._schedule()

    async def close(self) -> list[events.EventSpec]:
        """Stop writing; the events not yet written, for the outcome's transaction."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.flushing is not None:
            await asyncio.shield(self.flushing)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        pending, self.pending = self.pending, []
        return [] if self.lost else pending


async def execute_claimed(
    engine: Engine, handle: InFlight, claim: services.Claim, replay: list[dict[str, Any]] | None = None
) -> str | None:
    """Execute a claimed run to its end and record the outcome. Returns the final status
    this worker recorded, or None if the run had been ended elsewhere."""
    run = claim.run
    with (
        run_logging_context(run.id),
        run_span(
            run_id=run.id,
            session_id=run.session_id,
            agent=run.agent,
            model=run.model,
            principal=str(run.owner_id),
            carrier=run.trace_context,
        ) as span,
    ):
        logger.info("run started", extra={"agent": run.agent, "model": run.model, "attempt": run.attempts})
        spec, missing = _catalog_agent(run.agent)
        writer = EventWriter(run.id, handle.token, engine)
        memory = RunMemory(run.session_id, history=claim.history)
        resume: Resume | None = claim.resume
        if resume is not None:
            _memory_resumed(memory, resume.memory)
        pause: Pause | None = None
        if spec is None:
            outcome = services.RunOutcome(status=Run.Status.FAILED, error=missing)
        else:
            outcome, pause = await _run_agent(engine, handle, run, spec, writer, memory, replay, resume)
        if outcome.output is not None:
            # A model may answer with NUL or lone surrogates, which no database stores (common.text).
            outcome.output = safe_text(outcome.output)
        if outcome.status == Run.Status.SUCCEEDED and outcome.output is not None:
            await _cap_output(engine, run, outcome, handle.token)
        outcome.otel_trace_id = span.trace_id
        span.finish(status=outcome.status, error=outcome.error, cost_usd=outcome.cost_usd, usage=outcome.usage)
        pending = await writer.close()
        handle.finishing = True
        if pause is not None:
            recorded = await engine.db(
                run_pause,
                run_id=run.id,
                worker_id=handle.token,
                outcome=outcome,
                pause=pause,
                pending=pending,
                owner_id=run.owner_id,
            )
            logger.info(
                "run paused for approval" if recorded else "run ended while pausing",
                extra={"calls": [request.call_id for request in pause.requests], "usage": outcome.usage},
            )
            return outcome.status if recorded else None
        recorded = await engine.db(
            services.run_finish,
            run_id=run.id,
            worker_id=handle.token,
            outcome=outcome,
            pending=pending,
            memory=memory.changes,
            session_id=run.session_id,
            owner_id=run.owner_id,
        )
        logger.info(
            "run finished",
            extra={
                "status": outcome.status if recorded else "superseded",
                "usage": outcome.usage,
                "cost_usd": None if outcome.cost_usd is None else str(outcome.cost_usd),
                "error": outcome.error or None,
            },
        )
        if resume is not None:
            await engine.db(paused_state_drop, run_id=run.id, trace_id=outcome.trace.id if outcome.trace else "")
        return outcome.status if recorded else None


def _catalog_agent(name: str) -> tuple[CatalogAgent | None, str]:
    """The agent a run names, from this worker's agents, or why this worker cannot run it."""
    try:
        spec = agent_get(name)
    except CatalogError as exc:
        return None, f"this worker cannot load HARNESS_AGENT_MODULES: {exc}"
    if spec is not None:
        return spec, ""
    return None, (
        f"agent {name!r} is not among this worker's agents (registry {registry_version()}: "
        f"{', '.join(sorted(catalog()))}); it was published by a worker running other code "
        "(a deploy in progress?). Retry the run once every worker runs the same agents."
    )


def _jsonable(value: Any) -> Any:
    """A structured final output (a pydantic model, a dataclass, ...) as JSON data."""
    from pydantic import TypeAdapter

    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    try:
        return TypeAdapter(type(value)).dump_python(value, mode="json")
    except Exception:
        return str(value)


def _final_output(output: Any) -> services.RunOutcome:
    """A succeeded run's outcome: text as it is, a structured output as JSON (and its text)."""
    import json

    if isinstance(output, str):
        return services.RunOutcome(status=Run.Status.SUCCEEDED, output=output)
    data = _jsonable(output)
    text = json.dumps(data, ensure_ascii=False)
    if clip_text(text)[1]:
        # Over HARNESS_MAX_STORED_CHARS: the text is stored capped, whole as an artifact; no JSON.
        return services.RunOutcome(status=Run.Status.SUCCEEDED, output=text)
    return services.RunOutcome(status=Run.Status.SUCCEEDED, output=text, output_json=data)


def _guardrail_outcome(exc: InputGuardrailTripwireTriggered | OutputGuardrailTripwireTriggered) -> services.RunOutcome:
    kind = "input" if isinstance(exc, InputGuardrailTripwireTriggered) else "output"
    result = exc.guardrail_result
    name = result.guardrail.get_name()
    info = result.output.output_info
    facts = {"kind": kind, "guardrail": name, "output_info": clip_data(_jsonable(info) if info is not None else None)}
    return services.RunOutcome(
        status=Run.Status.FAILED,
        error=f"guardrail_tripped: the {kind} guardrail {name!r} tripped",
        guardrail=redact_data(facts),
    )


def _memory_resumed(memory: RunMemory, stash: dict[str, Any]) -> None:
    """The run's view of its conversation as it was when it paused: what it added then is not
    yet stored (it is written once, with the outcome), so it is added to the view here."""
    removed = [int(item_id) for item_id in stash.get("removed_ids") or []]
    cleared = bool(stash.get("cleared"))
    added = list(stash.get("added") or [])
    kept = [] if cleared else [(item_id, item) for item_id, item in memory._items if item_id not in set(removed)]
    memory._items = [*kept, *((None, item) for item in added)]
    memory.changes = services.MemoryChanges(added=added, removed_ids=removed, cleared=cleared)


class ApprovalMissing(Exception):
    """A resumed run's state waits on a call nobody decided (never expected: said plainly)."""


async def _restored_state(agent: Agent[Any], resume: Resume, context: RunContext) -> Any:
    """The stored RunState (written by a worker, never by a client) with the decisions applied."""
    from agents.run_state import RunState

    state = await RunState.from_string(agent, resume.state, context_override=RunContextWrapper(context=context))
    for item in state.get_interruptions():
        call_id = _call_id(item.raw_item)
        decision = resume.decisions.get(call_id)
        if decision is None:
            raise ApprovalMissing(f"tool call {call_id} ({item.tool_name}) has no decision; the run cannot resume")
        if decision[0] == "approved":
            state.approve(item)
        else:
            state.reject(item, rejection_message=resume.rejection_message(call_id))
    return state


def _raw_field(raw: Any, name: str) -> Any:
    return raw.get(name) if isinstance(raw, dict) else getattr(raw, name, None)


def _call_id(raw: Any) -> str:
    """A paused call's id, the same at the pause and on resume: its call_id (or, for calls that
    have none, its item id), as long as an Approval row keeps it."""
    return str(_raw_field(raw, "call_id") or _raw_field(raw, "id") or "")[:CALL_ID_MAX]


def _context_data(context: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(context) if dataclasses.is_dataclass(context) and not isinstance(context, type) else {}


def _meter_resumed(meter: RunMeter, carry: dict[str, Any]) -> None:
    """The run's limits count what it used before it paused."""
    meter.cost = Decimal(carry.get("cost") or "0")
    meter.charged = Decimal(carry.get("charged") or "0")
    meter.tokens = int(carry.get("tokens") or 0)
    meter.unpriced = bool(carry.get("unpriced"))


class _ResumedTrace:
    """The run's trace as the SDK started it before the pause: a resumed run continues it
    (the SDK does not start it again), so the harness's processor is told it is open."""

    def __init__(self, trace_id: str, export: dict[str, Any]) -> None:
        self.trace_id, self._export = trace_id, export

    def export(self) -> dict[str, Any]:
        return self._export


def _interrupted(result: Any) -> tuple[list[PauseRequest], str]:
    """The calls a paused run waits on, and its RunState as text."""
    requests = []
    for item in result.interruptions:
        raw = item.raw_item
        arguments = _raw_field(raw, "arguments")
        requests.append(
            PauseRequest(
                call_id=_call_id(raw),
                tool=str(item.tool_name or _raw_field(raw, "name") or "tool"),
                # A custom tool (apply_patch) sends free text as its input.
                arguments=parse_arguments(arguments if arguments is not None else _raw_field(raw, "input")),
            )
        )
    # The run's context (harness.RunContext) is rebuilt on resume, not restored from the state.
    return requests, result.to_state().to_string(context_serializer=_context_data)


async def _pause(
    result: Any,
    *,
    requests: list[PauseRequest],
    state: str,
    run: Run,
    sandbox: OpenSandbox | None,
    writer: EventWriter,
    memory: RunMemory,
    meter: RunMeter,
    trace_id: str,
    resume: Resume | None,
) -> Pause:
    """What to store of a run that reached tool calls needing approval; its sandbox's
    workspace becomes a snapshot and the sandbox is destroyed (SandboxError if it cannot be kept)."""
    snapshot: dict[str, Any] = {}
    if sandbox is not None:
        reason = "run paused for approval"
        try:
            snapshot = await sandbox_suspend(sandbox, run=run)
        except SandboxError as exc:
            reason = f"{reason}; {exc}"
            raise
        finally:
            kept = {"snapshot_bytes": snapshot["snapshot_bytes"]} if snapshot else {}
            writer.emit(events.SANDBOX_STOPPED, {"sandbox_id": sandbox.row.pk, "reason": reason, **kept})
    previous = resume.carry if resume is not None else {}
    started = previous.get("started_at") or (run.started_at.isoformat() if run.started_at else None)
    carry: dict[str, Any] = {
        "trace_id": trace_id,
        "started_at": started,
        "cost": str(meter.cost),
        # run_pause charges the principal what the run cost so far and was not yet charged.
        "charged": str(meter.charged if meter.run_cost is None else meter.run_cost),
        "unpriced": meter.unpriced,
        "tokens": meter.tokens,
        "sandbox_seconds": meter.sandbox_seconds,
        "tools": {request.call_id: request.tool for request in requests},
        "usage": usage_dict(result.context_wrapper.usage),
        "trace_export": previous.get("trace_export"),
    }
    changes = memory.changes
    return Pause(
        state=state,
        requests=requests,
        memory={"added": changes.added, "removed_ids": changes.removed_ids, "cleared": changes.cleared},
        carry=carry,
        snapshot_key=snapshot.get("snapshot_key", ""),
        snapshot_bytes=snapshot.get("snapshot_bytes", 0),
    )


async def _run_agent(
    engine: Engine,
    handle: InFlight,
    run: Run,
    spec: CatalogAgent,
    writer: EventWriter,
    memory: RunMemory,
    replay: list[dict[str, Any]] | None,
    resume: Resume | None = None,
) -> tuple[services.RunOutcome, Pause | None]:
    carried = resume.carry if resume is not None else {}
    trace_id = carried.get("trace_id") or gen_trace_id()
    result: Any = None
    sandbox: OpenSandbox | None = None
    recorder: RecordingModel | None = None
    outcome: services.RunOutcome | None = None
    pause: Pause | None = None
    limits = RunLimits.from_json(run.limits)
    meter = RunMeter(
        model="replay" if replay is not None else run.model, owner_id=run.owner_id, limits=limits, db=engine.db
    )
    if resume is not None:
        _meter_resumed(meter, carried)
    servers: list[Any] = []
    context = RunContext(
        run_id=run.id,
        session_id=run.session_id,
        agent=spec.name,
        model=run.model,
        principal_id=run.owner_id,
        attempt=run.attempts,
    )
    timeout = settings.HARNESS_RUN_TIMEOUT_SECONDS
    if spec.timeout_seconds is not None:
        timeout = min(timeout, spec.timeout_seconds)
    try:
        agent, provider, recorder = agent_for_run(spec, run.model, replay, meter, run.offline_script)
        async with asyncio.timeout(timeout):  # starting them counts against the run's time
            for server in mcp_servers(agent):  # the run's own MCP servers (a factory built them for it)
                servers.append(server)  # closed however the run ends, even if it never connected
                await server.connect()
        if spec.sandbox:
            snapshot_key = resume.snapshot_key if resume is not None else ""
            sandbox = await _sandbox_open(run, spec, handle.token, writer, snapshot_key=snapshot_key)
            # The sandbox seconds a run may use count the time its earlier sandboxes were up.
            meter.sandbox_started = time.monotonic() - float(carried.get("sandbox_seconds") or 0)
        run_config = RunConfig(
            model=recorder,
            model_provider=provider,
            workflow_name=f"harness:{spec.name}",
            trace_id=trace_id,
            group_id=run.session_id,
            trace_metadata={"run_id": run.id, "agent": spec.name, "model": run.model},
            trace_include_sensitive_data=settings.HARNESS_TRACE_INCLUDE_SENSITIVE_DATA,
            # Token usage on every call (Chat Completions servers send it only when asked): it is what prices a run.
            model_settings=ModelSettings(include_usage=True),
            sandbox=SandboxRunConfig(session=sandbox.session) if sandbox is not None else None,
            # Whatever a tool answered, the model is given at most HARNESS_TOOL_OUTPUT_MAX_CHARS of it.
            call_model_input_filter=tool_outputs_capped,
        )
        start: Any = run.input
        tool_names: dict[str, str] = {}
        if resume is not None:
            start = await _restored_state(agent, resume, context)
            tool_names.update(carried.get("tools") or {})
            if carried.get("trace_export"):
                processor.on_trace_start(_ResumedTrace(trace_id, carried["trace_export"]))
        result = Runner.run_streamed(
            agent, start, context=context, session=memory, run_config=run_config, max_turns=limits.max_turns
        )
        handle.result = result
        if handle.stopped:
            result.cancel(mode="immediate")
        async with asyncio.timeout(timeout):
            async for sdk_event in result.stream_events():
                if sdk_event.type == "raw_response_event":
                    if getattr(sdk_event.data, "type", "") == "response.output_text.delta":
                        writer.emit_delta(sdk_event.data.delta)
                    continue
                translated = translate_event(sdk_event, tool_names)
                if translated is not None:
                    writer.emit(*translated)
        if handle.stopped:
            outcome = services.RunOutcome(status=Run.Status.CANCELLED, error=f"stopped: run is {handle.stopped}")
        elif result.interruptions:
            requests, state = _interrupted(result)
            opened, sandbox = sandbox, None  # suspended (snapshot, then destroyed), not closed
            pause = await _pause(
                result,
                requests=requests,
                state=state,
                run=run,
                sandbox=opened,
                writer=writer,
                memory=memory,
                meter=meter,
                trace_id=trace_id,
                resume=resume,
            )
            outcome = services.RunOutcome(status=Run.Status.AWAITING_APPROVAL)
        else:
            outcome = _final_output(result.final_output)
    except TimeoutError:
        if result is not None:
            result.cancel(mode="immediate")
        which = (
            f"agent {spec.name!r}'s timeout_seconds"
            if timeout < settings.HARNESS_RUN_TIMEOUT_SECONDS
            else "HARNESS_RUN_TIMEOUT_SECONDS"
        )
        outcome = services.RunOutcome(status=Run.Status.FAILED, error=f"Run timed out after {timeout:g} s ({which}).")
    except (InputGuardrailTripwireTriggered, OutputGuardrailTripwireTriggered) as exc:
        outcome = _guardrail_outcome(exc)
    except BudgetExceeded as exc:
        outcome = services.RunOutcome(status=Run.Status.FAILED, error=str(exc), budget=exc.facts)
    except MaxTurnsExceeded:
        exceeded = BudgetExceeded(
            "max_turns",
            f"max_turns of {limits.max_turns} reached: the agent did not finish",
            max_turns=limits.max_turns,
        )
        outcome = services.RunOutcome(status=Run.Status.FAILED, error=str(exceeded), budget=exceeded.facts)
    except (ModelUnavailable, SandboxError, ReplayDiverged, OfflineScriptError) as exc:
        outcome = services.RunOutcome(status=Run.Status.FAILED, error=str(exc))
    except Exception as exc:
        logger.exception("run failed")
        outcome = services.RunOutcome(status=Run.Status.FAILED, error=redact(f"{type(exc).__name__}: {exc}"))
    finally:
        for server in reversed(servers):
            try:
                await server.cleanup()
            except Exception:
                logger.warning("MCP server did not stop cleanly", extra={"server": server.name}, exc_info=True)
        if sandbox is not None:
            # However the run ended: outputs become artifacts, then the sandbox is destroyed.
            reason = _ending(outcome, handle.stopped)
            outputs = await sandbox_close(sandbox, run=run, reason=reason)
            writer.emit(events.SANDBOX_STOPPED, {"sandbox_id": sandbox.row.pk, "reason": reason, **outputs})
    if result is not None:
        outcome.usage = usage_dict(result.context_wrapper.usage)  # a resumed run's counts from its first start
    elif carried.get("usage"):
        outcome.usage = dict(carried["usage"])
    outcome.cost_usd, outcome.unpriced, outcome.charged = meter.run_cost, meter.unpriced, meter.charged
    if recorder is not None:
        outcome.model_calls = clip_data([*(carried.get("model_calls") or []), *recorder.calls])
    buffer = processor.pop(trace_id)
    if buffer is not None:
        outcome.trace, outcome.spans = trace_rows(buffer, run_id=run.id, model=meter.model)
    if pause is not None:
        pause.carry["model_calls"] = outcome.model_calls or []
        if buffer is not None:
            pause.carry["trace_export"] = buffer.export
    return outcome, pause


async def _cap_output(engine: Engine, run: Run, outcome: services.RunOutcome, worker_id: str) -> None:
    """An output over HARNESS_MAX_STORED_CHARS is stored capped; the whole of it becomes an artifact."""
    if outcome.output is None:
        return
    if not clip_text(outcome.output)[1]:
        return
    from artifacts.services import ArtifactError, artifact_save

    try:
        artifact = await engine.db(
            artifact_save,
            run=run,
            name="output.txt",
            content=outcome.output.encode(),
            content_type="text/plain; charset=utf-8",
            actor=Actor.worker(worker_id),
        )
    except ArtifactError as exc:
        note = f"\n[the whole output could not be kept as an artifact: {exc}]"
    else:
        outcome.output_artifact_id = artifact.pk
        note = f"\n[the whole output is artifact {artifact.pk} (output.txt)]"
    limit = settings.HARNESS_MAX_STORED_CHARS
    outcome.output = clip_text(outcome.output, max(0, limit - len(note)))[0] + note[: max(0, limit)]
    outcome.output_truncated = True


async def _sandbox_open(
    run: Run, spec: CatalogAgent, worker_id: str, writer: EventWriter, *, snapshot_key: str = ""
) -> OpenSandbox:
    opened = await sandbox_open(run=run, worker_id=worker_id, tools=spec.tool_names, snapshot_key=snapshot_key)
    writer.emit(
        events.SANDBOX_STARTED,
        {"sandbox_id": opened.row.pk, "provider": opened.row.provider, "manifest": opened.row.manifest},
    )
    return opened


def _ending(outcome: services.RunOutcome | None, stopped: str | None) -> str:
    """Why the sandbox is being closed, in the words of the run's ending."""
    if stopped:
        return f"run stopped ({stopped})"
    if outcome is None:
        return "run interrupted"
    if outcome.status == Run.Status.FAILED and "timed out" in outcome.error:
        return "run timed out"
    return f"run {outcome.status}"


def warm_up() -> None:
    """Run each built-in agent without a sandbox once on the offline model, in memory, with
    tracing off: the agent loop every agent shares is warm before the first run."""

    async def warm() -> None:
        for spec in catalog().values():
            if spec.sandbox or spec.facts.get("kind") != "builtin":
                continue  # a team's agents are not run here: their tools may act on the world
            model = OfflineModel(spec)
            try:
                await Runner.run(
                    spec.build(model), "What is 1 + 1?", run_config=RunConfig(model=model, tracing_disabled=True)
                )
            except Exception as exc:  # a guardrail, a script that wants other input: warm enough
                logger.debug("warm-up run ended early", extra={"agent": spec.name, "error": type(exc).__name__})

    asyncio.run(warm())


def run_execute(run_id: str, *, replay: list[dict[str, Any]] | None = None) -> str | None:
    """Claim and execute one run to its end, on an event loop of its own (tests, evals).

    1. Claim it (QUEUED -> RUNNING, lease); if another worker or a cancel won, stop.
    2. Run the agent with Runner.run_streamed, appending events as they happen,
       while the engine's watcher extends the lease and stops the run on cancel.
    3. Write the outcome, usage, trace and spans, the final event and audit row.
    Returns the final status this worker recorded, or None if it recorded none.
    """
    from execution.engine import Engine

    with run_logging_context(run_id):
        return asyncio.run(Engine(concurrency=1).run_once(run_id, replay=replay))
