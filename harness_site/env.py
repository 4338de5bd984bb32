"""Tiny typed readers for settings that come from the environment.

Every reader raises ImproperlyConfigured naming the variable on a bad value, so a
typo in a deployment fails at boot instead of at 3 a.m.
"""

from __future__ import annotations

import os
import urllib.parse
from decimal import Decimal
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def load_env_file(path: Path) -> None:
    """Load KEY=VALUE lines into os.environ without overriding real variables."""
    if not path.is_file():
        return
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ImproperlyConfigured(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(key, value)


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_secret(name: str, default: str = "") -> str:
    """A secret from NAME, or from the file named by NAME_FILE (container secrets)."""
    file_name = os.environ.get(f"{name}_FILE", "").strip()
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {file_name}: {exc.strerror}") from exc
    return env_str(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected true/false, got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {value}")
    return value


def env_usd(name: str, default: str = "") -> Decimal | None:
    """An amount of US dollars; empty is None (no limit)."""
    raw = os.environ.get(name, default).strip()
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except ArithmeticError:
        raise ImproperlyConfigured(f"{name}: expected an amount in USD such as 1.50, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ImproperlyConfigured(f"{name}: must be a positive amount in USD, got {raw!r}")
    return value


def env_list(name: str, default: tuple[str, ...] = ()) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [part.strip() for part in raw.split(",") if part.strip()]


def redis_url_with_timeouts(url: str, seconds: float) -> str:
    """`url` with socket timeouts for connecting and for each answer, which redis-py reads from
    the query string (for clients made from a URL alone: the run queue's, the channel layer's),
    unless the URL sets its own."""
    query = urllib.parse.urlsplit(url).query
    given = {name for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    added = [(name, f"{seconds:g}") for name in ("socket_connect_timeout", "socket_timeout") if name not in given]
    if not added:
        return url
    # Appended to the URL as given: rebuilding it would change a unix:///path URL's form.
    base, _, fragment = url.partition("#")
    separator = "" if base.endswith(("?", "&")) else "&" if query else "?"
    joined = f"{base}{separator}{urllib.parse.urlencode(added)}"
    return f"{joined}#{fragment}" if fragment else joined
