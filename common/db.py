"""Database work from an event loop, on shared threads, giving pooled connections back.

Django runs a sync call from async code on a thread of its own per request (asgiref's
thread-sensitive mode): a thread made and joined for every request. The hot paths (the
run engine, the API's run endpoints, streams) instead run their ORM functions on the
loop's shared executor threads. With a connection pool, each call gives its connection
back when it ends, so a thread never sits on one; a broken connection is dropped so the
thread's next call opens a fresh one.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connection

if TYPE_CHECKING:
    from django.db.models import Model, QuerySet


def pooled() -> bool:
    return "pool" in connection.settings_dict.get("OPTIONS", {})


def db_call_sync[R](fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Call `fn` on this thread, then give its pooled connection back."""
    try:
        return fn(*args, **kwargs)
    except DatabaseError:
        if connection.connection is not None and not connection.is_usable():
            connection.close()
        raise
    finally:
        if pooled():
            connection.close()


# The event loop a db_call came from: work the thread hands back (live events published
# on commit) goes to that loop instead of starting one of its own.
calling_loop: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "calling_loop", default=None
)


async def db_call[R](fn: Callable[..., R], /, *args: Any, executor: Executor | None = None, **kwargs: Any) -> R:
    """Run the ORM function `fn` on a shared thread (with the caller's context vars)."""
    loop = asyncio.get_running_loop()
    call = functools.partial(db_call_sync, fn, *args, **kwargs)
    context = contextvars.copy_context()
    context.run(calling_loop.set, loop)
    return await loop.run_in_executor(executor, context.run, call)


def unique_row[M: Model](queryset: QuerySet[M]) -> M | None:
    """The row a lookup on a unique key finds, or None: `.first()` without the ORDER BY it
    adds (the model's ordering, or the primary key), which costs the hot paths (API keys,
    runs, budgets) more to compile than the lookup costs to run."""
    return next(iter(queryset.order_by()[:1]), None)


# psycopg converts a statement's text once and keeps it (128 statements at most), but only for
# statements of at most 50 parameters and 4096 bytes. The hot paths' multi-row INSERTs (events,
# spans, session items: common.sql) are longer, so their text was parsed again on every call,
# ~5% of the run engine's CPU. These bounds let them be kept: the cache holds at most 128
# statements of up to STATEMENT_CACHE_BYTES each, a few MB at worst.
STATEMENT_CACHE_PARAMS = 600
STATEMENT_CACHE_BYTES = 16384


def statement_cache_widen() -> bool:
    """Raise psycopg's bounds for the statements it keeps converted; False where this psycopg
    version has no such bounds (nothing changes then)."""
    try:
        from psycopg import _queries
    except ImportError:
        return False
    if not isinstance(getattr(_queries, "MAX_CACHED_STATEMENT_PARAMS", None), int) or not isinstance(
        getattr(_queries, "MAX_CACHED_STATEMENT_LENGTH", None), int
    ):
        return False
    _queries.MAX_CACHED_STATEMENT_PARAMS = max(_queries.MAX_CACHED_STATEMENT_PARAMS, STATEMENT_CACHE_PARAMS)
    _queries.MAX_CACHED_STATEMENT_LENGTH = max(_queries.MAX_CACHED_STATEMENT_LENGTH, STATEMENT_CACHE_BYTES)
    return True
