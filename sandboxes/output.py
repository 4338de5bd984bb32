"""Bounded command output: what the worker keeps of a sandbox command's output, and what the model sees.

A sandbox command may print gigabytes; the worker must not hold them. Output is read
incrementally (64 KiB at a time, so the event loop keeps turning) into an `OutputWindow`,
which keeps at most HARNESS_SANDBOX_OUTPUT_MAX_BYTES of it: the first half and the last
half. The middle is read and dropped, and a marker stands where it was:

    <first half>
    [output truncated: 268435456 bytes, kept the first 524288 and the last 524288]
    <last half>

Head and tail, because a command's end (an error, a test summary, the exit banner) is
usually what matters, and its start says what ran. Output of exactly the limit is kept
whole, with no marker.

What a tool result gives back to the model is smaller still: `fit_for_model` cuts the
kept text to HARNESS_TOOL_OUTPUT_MAX_CHARS characters (less room for the SDK's header
lines), again as head and tail around a marker that gives the command's real size.
"""

from __future__ import annotations

import asyncio
import codecs
from collections import deque
from dataclasses import dataclass

from django.conf import settings

# How much is read from a pipe at a time.
READ_CHUNK_BYTES = 64 * 1024
# The SDK's tool result puts a few header lines (chunk id, wall time, exit code, session id,
# original token count) before the output; this much of HARNESS_TOOL_OUTPUT_MAX_CHARS is theirs.
TOOL_HEADER_RESERVE_CHARS = 200
# The SDK's own estimate (agents.sandbox.util.token_truncation.APPROX_BYTES_PER_TOKEN).
APPROX_BYTES_PER_TOKEN = 4


def output_max_bytes() -> int:
    return int(settings.HARNESS_SANDBOX_OUTPUT_MAX_BYTES)


def tool_output_max_chars() -> int:
    return int(settings.HARNESS_TOOL_OUTPUT_MAX_CHARS)


@dataclass(frozen=True)
class Taken:
    """What a window held: its first and last bytes, and how many bytes went through it in all."""

    head: bytes
    tail: bytes
    total: int

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def marker(self) -> bytes:
        return (
            f"\n[output truncated: {self.total} bytes, kept the first {len(self.head)} and the last {len(self.tail)}]\n"
        ).encode()

    def render(self) -> bytes:
        """The kept bytes; when some were dropped, the marker stands where they were."""
        if not self.truncated:
            return self.head + self.tail
        return self.head + self.marker() + self.tail


class OutputWindow:
    """Keeps the first `limit - limit // 2` and the last `limit // 2` bytes of a stream fed to it.

    Memory never exceeds `limit` bytes (plus the chunk being fed): bytes that fall between
    the head and the tail are dropped as they arrive, only counted.
    """

    def __init__(self, limit: int) -> None:
        if limit < 2:
            raise ValueError("an output window needs at least 2 bytes")
        self.limit = limit
        self.head_limit = limit - limit // 2
        self.tail_limit = limit // 2
        self._reset()

    def _reset(self) -> None:
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            if len(chunk) <= room:
                return
            chunk = chunk[room:]
        if len(chunk) >= self.tail_limit:
            self.tail.clear()
            self.tail.append(chunk[len(chunk) - self.tail_limit :])
            self.tail_size = self.tail_limit
            return
        self.tail.append(chunk)
        self.tail_size += len(chunk)
        excess = self.tail_size - self.tail_limit
        while excess > 0:
            first = self.tail[0]
            if len(first) <= excess:
                self.tail.popleft()
                self.tail_size -= len(first)
                excess -= len(first)
            else:
                self.tail[0] = first[excess:]
                self.tail_size -= excess
                excess = 0

    @property
    def kept(self) -> int:
        return len(self.head) + self.tail_size

    def take(self) -> Taken:
        """What the window holds now; it starts over empty (a new window for the next read)."""
        taken = Taken(head=bytes(self.head), tail=b"".join(self.tail), total=self.total)
        self._reset()
        return taken


async def read_into(stream: asyncio.StreamReader | None, window: OutputWindow) -> None:
    """Read a stream to its end, 64 KiB at a time, into the window (which drops what it cannot keep)."""
    if stream is None:
        return
    while True:
        chunk = await stream.read(READ_CHUNK_BYTES)
        if not chunk:
            return
        window.feed(chunk)


def model_budget_chars(max_output_tokens: int | None) -> int:
    """How many characters of output a tool result may carry to the model."""
    budget = max(tool_output_max_chars() - TOOL_HEADER_RESERVE_CHARS, 0)
    if max_output_tokens is not None:
        budget = min(budget, max_output_tokens * APPROX_BYTES_PER_TOKEN)
    return budget


def approx_tokens(total_bytes: int) -> int:
    return -(-total_bytes // APPROX_BYTES_PER_TOKEN)


def fit_for_model(first: str, last: str | None, *, total_bytes: int, budget: int) -> tuple[str, bool]:
    """The text a tool result carries, at most `budget` characters, and whether it was cut.

    `last` is None when `first` is the whole output; otherwise the output's middle is already
    gone and `first`/`last` are its head and tail. A cut text keeps the start and the end
    around a marker with the command's real size in bytes.
    """
    if last is None and len(first) <= budget:
        return first, False
    first_source, last_source = first, (first if last is None else last)
    template = "\n[output truncated: {total} bytes in all, showing the first {a} and the last {b} characters]\n"
    widest = template.format(total=total_bytes, a=budget, b=budget)
    room = budget - len(widest)
    if room <= 0:
        return f"[output truncated: {total_bytes} bytes]"[:budget], True
    a = min(len(first_source), room - room // 2)
    b = min(len(last_source), room - a)
    a = min(len(first_source), room - b)
    if last is None and a + b >= len(first):
        # Cannot happen (the text is longer than the budget), but never show a line twice.
        return first[:budget], True
    head = first_source[:a]
    tail = last_source[len(last_source) - b :] if b else ""
    return head + template.format(total=total_bytes, a=a, b=b) + tail, True


class StreamDecoder:
    """UTF-8 decoding across reads of a running command: a character split between reads stays whole."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, taken: Taken, *, final: bool) -> tuple[str, str | None]:
        """(text, None) for output kept whole; (head text, tail text) when its middle was dropped."""
        if not taken.truncated:
            return self._decoder.decode(taken.head + taken.tail, final=final), None
        head = self._decoder.decode(taken.head, final=True)
        self._decoder.reset()
        # The tail may start inside a character: that shows as one replacement character.
        return head, self._decoder.decode(taken.tail, final=final)
