"""Is this callback delivery genuine and new? SPEC §4, as pure functions returning verdicts.

The I/O layer gathers the token, the raw body, the headers, the job's known task id and the time,
and asks; each refusal carries the HTTP status and the code that the answer and the job's events use.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import itsdangerous
import orjson

MAX_BODY_BYTES = 256 * 1024
VERIFIED_TOKENS = 8192  # verdicts kept per CallbackTokens (a few MiB at most)
_SALT = "jobhook.callback.v1"
MEDIA_SALT = "jobhook.media.v1"  # public links to the images jobhook holds: (job id, image index)


@dataclasses.dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str


@dataclasses.dataclass(frozen=True)
class TokenClaim:
    job_id: str
    provider: str


class _Signer(itsdangerous.Signer):
    """itsdangerous' Signer, each key derived once: it derives them again (a hash of the salt and the
    key) for every signature made and checked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[str | bytes | None, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self._derived.get(secret_key)
        if key is None:
            key = self._derived[secret_key] = super().derive_key(secret_key)
        return key


class _Serializer(itsdangerous.URLSafeSerializer):
    """itsdangerous' URL-safe serializer with one signer per salt, made once (it makes a new one, and
    derives its keys anew, for every token it signs or checks)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, signer=_Signer, **kwargs)
        self._signers: dict[str | bytes | None, itsdangerous.Signer] = {}

    def make_signer(self, salt: str | bytes | None = None) -> itsdangerous.Signer:
        signer = self._signers.get(salt)
        if signer is None:
            signer = self._signers[salt] = super().make_signer(salt)
        return signer


class CallbackTokens:
    """Signs and verifies the token in `/callbacks/{token}`: it binds a job id and a provider.

    `keys` are in SPEC order: the first signs, all verify (rotation without breaking old URLs).
    A different `salt` makes tokens for another purpose that can never pass for these.
    """

    def __init__(self, keys: Iterable[str], *, salt: str = _SALT) -> None:
        ordered = list(keys)
        if not ordered:
            raise ValueError("at least one key is needed")
        self.keys = tuple(ordered)
        # A provider's retries repeat the same URL: each distinct token is checked once (a verdict
        # depends on the token and the keys alone, and the keys never change for this object).
        self.verify = functools.lru_cache(maxsize=VERIFIED_TOKENS)(self._verify)  # type: ignore[method-assign]
        # itsdangerous signs with the last key of its list and verifies with all of them.
        self._serializer = _Serializer(
            list(reversed(ordered)),
            salt=salt,
            signer_kwargs={"digest_method": hashlib.sha256},
        )

    def sign(self, job_id: str, provider: str) -> str:
        return str(self._serializer.dumps([job_id, provider]))

    def verify(self, token: str) -> TokenClaim | None:
        """The claim of a genuine token, or None (bad signature, garbled, wrong shape)."""
        return self._verify(token)  # replaced by a cached version in __init__

    def _verify(self, token: str) -> TokenClaim | None:
        if len(token) > 512 or not _canonical(token):
            return None
        try:
            data = self._serializer.loads(token)
        except (itsdangerous.BadData, ValueError, UnicodeError):
            return None
        if not isinstance(data, list) or len(data) != 2 or not all(isinstance(item, str) and item for item in data):
            return None
        return TokenClaim(job_id=data[0], provider=data[1])


def _canonical(token: str) -> bool:
    """Each base64 part re-encodes to itself. The last character of unpadded base64 carries unused
    bits, so without this check several different URLs would pass for one genuine token."""
    try:
        return all(
            itsdangerous.encoding.base64_encode(itsdangerous.encoding.base64_decode(part)).decode() == part
            for part in token.split(".")
        )
    except (itsdangerous.BadData, ValueError, UnicodeError):
        return False


def parse_body(raw: bytes) -> dict[str, Any] | Refusal:
    """The delivery's JSON object, or why not (check 2 of SPEC §4)."""
    if len(raw) > MAX_BODY_BYTES:
        return too_large()
    try:
        # orjson: UTF-8 only (RFC 8259 §8.1), no NaN/Infinity, and a bounded nesting depth.
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Refusal(400, "invalid_json", "the body is not valid UTF-8 JSON")
    if not isinstance(data, dict):
        return Refusal(400, "invalid_json", "the body must be a JSON object")
    return data


def too_large() -> Refusal:
    return Refusal(413, "payload_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")


@dataclasses.dataclass(frozen=True)
class HeaderCheck:
    """A delivery that passed check 3: the task id it names, and whether it binds the job to it."""

    task_id: str
    binds: bool
    event: str


def check_task_headers(
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    known_task_id: str | None,
    now: float,
    tolerance: float,
) -> HeaderCheck | Refusal:
    """Check 3 of SPEC §4 for providers that send `X-Task-Id`, `X-Timestamp`, `X-Event` (aivideoapi).

    `headers` must have lower-case names. The order is the SPEC's: task id, timestamp, event.
    """
    task_id = headers.get("x-task-id", "").strip()
    if not task_id:
        return Refusal(400, "missing_task_id", "the X-Task-Id header is required")
    body_id = body.get("id")
    if not isinstance(body_id, str) or body_id != task_id:
        return Refusal(400, "task_id_mismatch", "X-Task-Id does not match the body's id")
    if known_task_id is not None and known_task_id != task_id:
        return Refusal(409, "task_id_conflict", "this callback URL belongs to another task")
    raw_ts = headers.get("x-timestamp", "").strip()
    if not raw_ts:
        return Refusal(400, "stale_timestamp", "the X-Timestamp header is required")
    digits = raw_ts[1:] if raw_ts.startswith("-") else raw_ts
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 15:
        return Refusal(400, "stale_timestamp", "X-Timestamp must be an integer number of Unix seconds")
    timestamp = int(raw_ts)
    if abs(now - timestamp) > tolerance:
        direction = "old" if timestamp < now else "far in the future"
        return Refusal(400, "stale_timestamp", f"X-Timestamp is too {direction} (tolerance {tolerance:g} s)")
    event = headers.get("x-event", "").strip()
    status = body.get("status")
    if not event:
        return Refusal(400, "event_mismatch", "the X-Event header is required")
    if not isinstance(status, str) or event != f"task.{status}":
        return Refusal(400, "event_mismatch", f"X-Event {event!r} does not agree with the body's status")
    return HeaderCheck(task_id=task_id, binds=known_task_id is None, event=event)
