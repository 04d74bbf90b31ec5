"""Job ids: `job_` + a ULID, so that ids sort by creation time (the list's cursor relies on it)."""

from __future__ import annotations

import os
import re
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last = 0
# 128 bits in 26 base-32 digits: the first digit carries 3 bits, so it is 0-7.
JOB_ID = re.compile(r"job_[0-7][0-9A-HJKMNP-TV-Z]{25}")


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _next() -> int:
    global _last
    with _lock:
        candidate = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
        _last = candidate if candidate > _last else _last + 1
        return _last


def new_job_id() -> str:
    """A new id, strictly greater than every id this process made before (monotonic ULID)."""
    return "job_" + _encode(_next())


def job_id_floor(timestamp: float) -> str:
    """The smallest job id made at or after `timestamp`: a range of ids is a range of creation times."""
    return "job_" + _encode(int(timestamp * 1000) << 80)


def new_message_id() -> str:
    """A notification's id: its Standard Webhooks `webhook-id`, kept across retries and resends."""
    return "msg_" + _encode(_next())


def is_job_id(value: str) -> bool:
    return JOB_ID.fullmatch(value) is not None
