"""Misbehaving stream clients against the real web server: keepalive pings, and a client
that never reads (WebSocket or SSE) is dropped without slowing the run or anyone else.

Each test runs twice: with live events over Redis, and with the streams following the
database log (no Redis)."""

from __future__ import annotations

import base64
import os
import socket
import struct
import threading
import time
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.harness import Harness
from tests.integration.test_streams import assert_complete, redis_reachable, start_run, ws_read, ws_url

pytestmark = [pytest.mark.integration, pytest.mark.one_database]

PING_SECONDS, PING_TIMEOUT_SECONDS = 1, 2


@pytest.fixture(scope="module", params=["database", "redis"])
def harness(request, tmp_path_factory):
    env = {
        "HARNESS_OFFLINE_DELAY_MS": "20",
        "HARNESS_WS_PING_SECONDS": str(PING_SECONDS),
        "HARNESS_WS_PING_TIMEOUT_SECONDS": str(PING_TIMEOUT_SECONDS),
        # Room for a run whose events are megabytes, and a small unread-buffer limit.
        "HARNESS_MAX_INPUT_CHARS": "3000000",
        "HARNESS_MAX_REQUEST_BYTES": "4000000",
        "HARNESS_MAX_STORED_CHARS": "3000000",
        "HARNESS_STREAM_MAX_BUFFER_BYTES": "262144",
        "HARNESS_STREAM_STALL_SECONDS": "2",
        # The offline model counts a 2 MB input as well over the default 1M tokens a run may use.
        "HARNESS_RUN_MAX_TOKENS": "100000000",
    }
    if request.param == "redis":
        if not redis_reachable():
            pytest.skip("no Redis on 127.0.0.1:6379: the Redis path is not tested here (CI machines run one)")
        env["REDIS_URL"] = "redis://127.0.0.1:6379/4"
    # "database": no channel layer, the streams follow the log (runs.streams.LogFollower).
    h = Harness(tmp_path_factory.mktemp(f"stream-clients-{request.param}"), **env).start()
    yield h
    h.close()


@pytest.fixture(scope="module")
def key(harness):
    return harness.api_key("alice")


def raw_websocket(harness: Harness, run_id: str, key: str, *, receive_buffer: int | None = None) -> socket.socket:
    """A WebSocket opened by hand, so the test decides whether it ever reads or answers pings."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", harness.port))
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/runs/{run_id}/?after=0 HTTP/1.1\r\nHost: 127.0.0.1:{harness.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", exactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", exactly(8))[0]
    return first & 0x0F, exactly(length)


def test_websockets_are_pinged_to_keep_proxies_from_cutting_them(harness, key):
    run = start_run(harness, key, text=" ".join(f"w{i}" for i in range(200)))
    sock = raw_websocket(harness, run["id"], key)
    sock.settimeout(10)
    started, opcodes = time.monotonic(), []
    try:
        while 9 not in opcodes and time.monotonic() - started < PING_SECONDS + 3:
            opcode, _ = read_frame(sock)
            opcodes.append(opcode)
    finally:
        sock.close()
    assert 9 in opcodes, opcodes  # a ping frame
    assert 1 in opcodes  # among the text frames of events


def daphne_process(harness: Harness) -> psutil.Process:
    assert harness.process is not None
    return next(
        p
        for p in psutil.Process(harness.process.pid).children(recursive=True)
        if "harness_site.webserver" in " ".join(p.cmdline())
    )


def server_side_ports(daphne: psutil.Process, harness: Harness) -> set[int]:
    return {
        conn.raddr.port
        for conn in daphne.net_connections(kind="tcp")
        if conn.laddr.port == harness.port and conn.raddr and conn.status == psutil.CONN_ESTABLISHED
    }


def test_a_client_that_never_reads_is_dropped_and_slows_nobody(harness, key):
    daphne = daphne_process(harness)
    rss_before = daphne.memory_info().rss
    words = 400
    run = start_run(harness, key, text=" ".join(f"word{i}" for i in range(words)))
    stalled = [raw_websocket(harness, run["id"], key, receive_buffer=4096) for _ in range(5)]
    stalled_ports = {sock.getsockname()[1] for sock in stalled}
    assert stalled_ports <= server_side_ports(daphne, harness)
    result: dict[str, Any] = {}
    reader = threading.Thread(
        target=lambda: result.update(
            zip(
                ("events", "code"),
                ws_read(ws_url(harness, run["id"]), headers={"Authorization": f"Bearer {key}"}),
                strict=True,
            )
        )
    )
    reader.start()
    try:
        reader.join(timeout=60)
        # The reading client got the whole stream while five others never read a byte.
        assert result["code"] == 1000
        assert_complete(result["events"])
        done = httpx.get(f"{harness.base_url}/api/runs/{run['id']}", headers={"Authorization": f"Bearer {key}"}).json()
        assert done["status"] == "succeeded"
        # 400 words at 20 ms each is 8 s of model time; the stalled clients added nothing to it.
        from datetime import datetime

        took = (
            datetime.fromisoformat(done["finished_at"]) - datetime.fromisoformat(done["started_at"])
        ).total_seconds()
        assert took < words * 0.02 + 4, took
        # The server dropped the clients that never answered its pings ...
        deadline = time.monotonic() + PING_SECONDS + PING_TIMEOUT_SECONDS + 10
        while stalled_ports & server_side_ports(daphne, harness) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not stalled_ports & server_side_ports(daphne, harness)
        # ... and did not keep what they would not read.
        growth_mb = (daphne.memory_info().rss - rss_before) / 2**20
        assert growth_mb < 40, growth_mb
    finally:
        for sock in stalled:
            sock.close()


def test_an_sse_client_that_never_reads_is_dropped_with_bounded_memory(harness, key):
    daphne = daphne_process(harness)
    rss_before = daphne.memory_info().rss
    # About 2 MB of text: the run's events (tool call, deltas, message, final) come to ~8 MB.
    # The offline model streams it a word at a time, HARNESS_OFFLINE_DELAY_MS apart: 200 words.
    text = " ".join("x" * 9999 for _ in range(200))
    run = start_run(harness, key, text=text)
    stalled = []
    for _ in range(3):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", harness.port))
        sock.sendall(
            f"GET /api/runs/{run['id']}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        )
        stalled.append(sock)
    stalled_ports = {sock.getsockname()[1] for sock in stalled}
    try:
        # A client that reads gets everything, and the run is not held back.
        events, status, _ = sse_read_all(harness, run["id"], key)
        assert status == 200
        assert_complete(events)
        assert events[-1]["type"] == "run.succeeded" and events[-1]["data"]["output"].endswith(text)
        deadline = time.monotonic() + 15
        while stalled_ports & server_side_ports(daphne, harness) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not stalled_ports & server_side_ports(daphne, harness), "the stalled SSE clients are still connected"
        growth_mb = (daphne.memory_info().rss - rss_before) / 2**20
        assert growth_mb < 100, growth_mb
        assert any("dropping a client that stopped reading" in line for line in harness.log_lines())
    finally:
        for sock in stalled:
            sock.close()


def sse_read_all(harness: Harness, run_id: str, key: str) -> tuple[list[dict[str, Any]], int, list[str]]:
    from tests.integration.test_streams import sse_read

    return sse_read(harness, run_id, key=key)
