"""JSON-lines logging. Every line emitted while a run executes carries its run_id."""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

current_run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_run_id", default=None)

# Attributes every LogRecord has; anything else was passed through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


@contextmanager
def run_logging_context(run_id: str) -> Iterator[None]:
    token = current_run_id.set(run_id)
    try:
        yield
    finally:
        current_run_id.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from harness_site.redaction import redact, redact_data
        from harness_site.telemetry import current_ids

        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        run_id = getattr(record, "run_id", None) or current_run_id.get()
        if run_id:
            entry["run_id"] = run_id
        ids = current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "run_id" and not key.startswith("_"):
                if isinstance(value, str | dict | list):
                    entry[key] = redact_data(value)
                elif value is None or isinstance(value, bool | int | float):
                    entry[key] = value
                else:  # objects (a request, say) are logged by their text, redacted like the rest
                    entry[key] = redact(str(value))
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)
