"""Text the databases cannot hold: NUL characters and lone surrogates.

Postgres refuses a NUL (U+0000) in a text column and `\\u0000` in jsonb; neither database
can encode a lone UTF-16 surrogate (U+D800-U+DFFF without its pair: JSON allows
`"\\ud800"`, UTF-8 does not). So:

- what a client sends (body fields, query and path parameters) is refused with a 422
  naming the field (`SafeStr`, `text_problem`);
- what the harness stores from a model or a tool (output, errors, events, spans, the
  session's items) is made safe (`safe_text`, `safe_data`): each NUL and each lone
  surrogate becomes U+FFFD (the replacement character); a surrogate pair split into two
  code points is joined back into the character it encodes.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema

REPLACEMENT = "\ufffd"
_UNSAFE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored as it is, or None."""
    if "\x00" in text:
        return "must not contain NUL (\\u0000) characters"
    if _SURROGATE.search(text):
        return "must not contain lone surrogates (\\ud800-\\udfff without their pair)"
    return None


def safe_text(text: str) -> str:
    """`text` with every NUL and lone surrogate replaced by U+FFFD (unchanged, and fast, when clean)."""
    if not _UNSAFE.search(text):
        return text
    if _SURROGATE.search(text):
        # Pairs become their character; what is left unpaired becomes U+FFFD.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text.replace("\x00", REPLACEMENT)


def safe_data(value: Any) -> Any:
    """A JSON-like value with `safe_text` applied to every string in it, keys included.

    A document with nothing to replace (the usual case) is returned as it is: one pass of
    the C JSON encoder finds that, where walking it in Python cost the run engine a
    microsecond per node (hundreds per run, in its spans and events)."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict | list | tuple) and _clean(value):
        return value
    return _made_safe(value)


_encode = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def _clean(value: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> bool:
    """Whether no string in `value` holds a NUL or a lone surrogate (False when unsure)."""
    try:
        text = _encode(value)
    except (TypeError, ValueError, RecursionError):  # not plain JSON: walk it
        return False
    # The encoder writes a NUL as the escape \u0000 and a surrogate as it is; a string that
    # holds the six characters `\u0000` itself only costs the walk.
    return "\\u0000" not in text and not _SURROGATE.search(text)


def _made_safe(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {_made_safe(key): _made_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_made_safe(item) for item in value]
    return value


def _refuse_unsafe(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# What SafeStr accepts, as the OpenAPI document says it (the validator gives the clearer message):
# no NUL. A lone surrogate cannot be written in UTF-8 at all, so JSON Schema has no way to say it.
SAFE_PATTERN = "^[^\\x00]*$"

# A string field, query or path parameter that refuses NUL and lone surrogates (422 naming it).
SafeStr = Annotated[str, AfterValidator(_refuse_unsafe), WithJsonSchema({"type": "string", "pattern": SAFE_PATTERN})]
