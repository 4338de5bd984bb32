"""Where the Postgres server's programs are (Debian's layout), for tests that run a private
Postgres; no Django here, so a process outside the test session can use it too."""

from __future__ import annotations

from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql")


def postgres_bin(name: str) -> str:
    versions = sorted(PG_BIN.glob("*/bin"), key=lambda path: int(path.parent.name))
    if not versions:
        raise FileNotFoundError("no Postgres server binaries under /usr/lib/postgresql")
    return str(versions[-1] / name)
