"""A wire-level fake of the OpenAI Responses API on loopback.

It speaks HTTP + Server-Sent Events like the real service, so the SDK's own
OpenAI client, retries and stream parser run unchanged. Its "model" calls the
first tool offered on the first turn and answers from the tool output after.
It checks the bearer key, and echoes a wrong key in its 401 the way the real
service does (which is what the redaction tests need).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agents import ModelSettings, ModelTracing, Usage
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

# What a big model call reports: 100k input tokens (half of them cached), 10k output tokens
# (2k of them reasoning). At gpt-5.4-mini's $0.75 / $0.075 cached / $4.50 per million tokens
# that is 0.0375 + 0.00375 + 0.045 = $0.08625 a call.
BIG_USAGE = Usage(
    requests=1,
    input_tokens=100_000,
    output_tokens=10_000,
    total_tokens=110_000,
    input_tokens_details=InputTokensDetails(cached_tokens=50_000, cache_write_tokens=0),
    output_tokens_details=OutputTokensDetails(reasoning_tokens=2_000),
)
BIG_CALL_COST = Decimal("0.08625")


def _stream_events(output: list[Any], usage: Usage) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        model = ScriptedModel([ModelStep(output=output, usage=usage, response_id="resp_fake")])
        stream = model.stream_response(
            None,
            "",
            ModelSettings(),
            [],
            None,
            [],
            ModelTracing.DISABLED,
            previous_response_id=None,
            conversation_id=None,
            prompt=None,
        )
        return [event.model_dump(mode="json") async for event in stream]

    return asyncio.run(collect())


class FakeOpenAI:
    """`usage` is what every response reports; with `keep_calling`, the model calls the
    first tool on every turn and never answers (a runaway agent); `reject_message` words
    the 401 for a wrong key (given the key it was sent)."""

    def __init__(
        self,
        api_key: str,
        *,
        usage: Usage | None = None,
        keep_calling: bool = False,
        reject_message: Callable[[str], str] | None = None,
    ) -> None:
        self.api_key = api_key
        # The 401's message for a wrong key (by default the real service's, which echoes the key).
        self.reject_message = reject_message or (lambda given: f"Incorrect API key provided: {given}.")
        self.usage = usage or Usage(requests=1, input_tokens=11, output_tokens=7, total_tokens=18)
        self.keep_calling = keep_calling
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str] = []
        # Cleared, the model answers no call until it is set again (at most a minute).
        self.open = threading.Event()
        self.open.set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.auth_headers.append(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    given = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    self._json(
                        401,
                        {
                            "error": {
                                "message": fake.reject_message(given),
                                "type": "invalid_request_error",
                                "code": "invalid_api_key",
                            }
                        },
                    )
                    return
                if not self.path.endswith("/responses"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                fake.open.wait(timeout=60)
                fake.requests.append(body)
                output = fake.respond(body)
                usage = fake.usage
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for event in _stream_events(output, usage):
                    self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def respond(self, body: dict[str, Any]) -> list[Any]:
        items = body.get("input") or []
        last = items[-1] if isinstance(items, list) and items else {}
        if last.get("type") == "function_call_output" and not self.keep_calling:
            return [assistant_message(f"The tool said {last['output']}.", item_id="msg_fake")]
        tools = body.get("tools") or []
        text = last.get("content") if isinstance(last.get("content"), str) else ""
        call_id = f"call_fake_{len(self.requests)}"
        if any(tool.get("name") == "exec_command" for tool in tools):
            return [function_call("exec_command", {"cmd": "echo wire-$((6 * 7)); id -u"}, call_id=call_id)]
        if tools and tools[0].get("name") == "calculate":
            return [function_call("calculate", {"expression": "6 * 7"}, call_id=call_id)]
        if tools:
            return [function_call(tools[0]["name"], {"text": text}, call_id=call_id)]
        return [assistant_message("no tools", item_id="msg_fake")]

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
