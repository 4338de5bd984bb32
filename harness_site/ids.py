"""Text primary keys with a type prefix that sort by creation time.

`run_01JD3V6Y3Q8W0ZQ4S5T6V7W8X9`: a 48-bit millisecond timestamp and 80 random
bits in Crockford base32 (a ULID), after the prefix. Lexical order is creation
order to the millisecond; inside one process it is strictly increasing.
"""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last = (0, 0)


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    global _last
    with _lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_random = _last
        if millis <= last_millis:
            # Same millisecond (or a clock step back): keep the order by counting up.
            millis, rand = last_millis, last_random + 1
        else:
            rand = secrets.randbits(80)
        _last = (millis, rand)
    return f"{prefix}_{_encode(millis, 10)}{_encode(rand % (1 << 80), 16)}"


def id_field_length(prefix: str) -> int:
    return len(prefix) + 1 + 26
