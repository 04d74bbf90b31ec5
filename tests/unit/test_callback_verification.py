"""SPEC §4's checks as pure functions: the token, the body, and aivideoapi's headers."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import itsdangerous
import pytest

from service.domain.callbacks import (
    MAX_BODY_BYTES,
    CallbackTokens,
    HeaderCheck,
    Refusal,
    TokenClaim,
    check_task_headers,
    parse_body,
    too_large,
)

JOB = "job_01JABCDEFGHJKMNPQRSTVWXYZ0"
NOW = 1_781_000_000
TOLERANCE = 300.0


# -- tokens -----------------------------------------------------------------------------------------


def test_sign_then_verify() -> None:
    tokens = CallbackTokens(["k1"])
    token = tokens.sign(JOB, "aivideoapi")
    assert tokens.verify(token) == TokenClaim(job_id=JOB, provider="aivideoapi")


def test_token_is_url_safe() -> None:
    token = CallbackTokens(["k1"]).sign(JOB, "aivideoapi")
    assert token.isascii()
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert len(token) <= 512


def test_token_binds_job_and_provider() -> None:
    tokens = CallbackTokens(["k1"])
    a, b, c = tokens.sign(JOB, "aivideoapi"), tokens.sign(JOB, "simulator"), tokens.sign(JOB + "X", "aivideoapi")
    assert len({a, b, c}) == 3
    assert tokens.verify(b) == TokenClaim(JOB, "simulator")
    assert tokens.verify(c) == TokenClaim(JOB + "X", "aivideoapi")


def test_token_of_another_key_is_refused() -> None:
    token = CallbackTokens(["k1"]).sign(JOB, "aivideoapi")
    assert CallbackTokens(["k2"]).verify(token) is None
    assert CallbackTokens(["k1 "]).verify(token) is None


def test_empty_key_list_is_refused() -> None:
    with pytest.raises(ValueError):
        CallbackTokens([])


def test_rotation_first_signs_all_verify() -> None:
    old, rotated = CallbackTokens(["old"]), CallbackTokens(["new", "old"])
    old_token = old.sign(JOB, "aivideoapi")
    # URLs handed out before the rotation keep working ...
    assert rotated.verify(old_token) == TokenClaim(JOB, "aivideoapi")
    # ... new URLs are signed with the first key: the old key alone cannot verify them ...
    new_token = rotated.sign(JOB, "aivideoapi")
    assert old.verify(new_token) is None
    assert CallbackTokens(["new"]).verify(new_token) == TokenClaim(JOB, "aivideoapi")
    # ... and once "old" is dropped, its tokens stop working.
    assert CallbackTokens(["new"]).verify(old_token) is None


def test_rotation_order_matters() -> None:
    token = CallbackTokens(["old", "new"]).sign(JOB, "aivideoapi")
    assert CallbackTokens(["old"]).verify(token) is not None
    assert CallbackTokens(["new"]).verify(token) is None


def test_keys_may_be_any_iterable() -> None:
    token = CallbackTokens(key for key in ["a", "b"]).sign(JOB, "p")
    assert CallbackTokens(("a",)).verify(token) == TokenClaim(JOB, "p")


def _tampered(token: str) -> list[str]:
    payload, _, signature = token.rpartition(".")
    out = [
        token[:-1],
        token + "A",
        token[1:],
        payload + "." + signature[::-1],
        payload + "." + signature.swapcase(),
        payload,
        "." + signature,
        payload + ".",
        token.replace(".", ".."),
    ]
    # every single-character substitution of the payload
    for index, char in enumerate(payload):
        out.append(payload[:index] + ("A" if char != "A" else "B") + payload[index + 1 :] + "." + signature)
    # another job's payload with this job's signature
    other = base64.urlsafe_b64encode(json.dumps(["job_OTHER", "aivideoapi"]).encode()).decode().rstrip("=")
    out.append(other + "." + signature)
    return out


def test_tampered_tokens_are_refused() -> None:
    tokens = CallbackTokens(["k1"])
    token = tokens.sign(JOB, "aivideoapi")
    for candidate in _tampered(token):
        assert candidate != token
        assert tokens.verify(candidate) is None, candidate


def _signed_with(key: str, payload: Any, *, salt: str = "jobhook.callback.v1", digest: Any = hashlib.sha256) -> str:
    """A token signed the way CallbackTokens does, with any payload: valid signature, wrong shape."""
    serializer = itsdangerous.URLSafeSerializer(key, salt=salt, signer_kwargs={"digest_method": digest})
    return str(serializer.dumps(payload))


@pytest.mark.parametrize(
    "payload",
    [
        {"job_id": JOB, "provider": "aivideoapi"},
        [JOB],
        [JOB, "aivideoapi", "extra"],
        [JOB, ""],
        ["", "aivideoapi"],
        [JOB, 1],
        [1, "aivideoapi"],
        [None, None],
        [[JOB], "aivideoapi"],
        JOB,
        None,
        42,
        [],
    ],
)
def test_signed_payload_of_the_wrong_shape_is_refused(payload: Any) -> None:
    token = _signed_with("k1", payload)
    assert CallbackTokens(["k1"]).verify(token) is None


def test_helper_signs_like_callback_tokens() -> None:
    """Guard for the test above: the same helper with the right shape is accepted."""
    assert CallbackTokens(["k1"]).verify(_signed_with("k1", [JOB, "p"])) == TokenClaim(JOB, "p")


@pytest.mark.parametrize(
    ("salt", "digest"),
    [("other.salt", hashlib.sha256), ("jobhook.callback.v1", hashlib.sha1), ("itsdangerous", hashlib.sha256)],
)
def test_other_salt_or_digest_is_refused(salt: str, digest: Any) -> None:
    token = _signed_with("k1", [JOB, "aivideoapi"], salt=salt, digest=digest)
    assert CallbackTokens(["k1"]).verify(token) is None


GARBAGE = [
    "",
    ".",
    "..",
    "...",
    "a",
    "a.b",
    "a.b.c",
    "=",
    "====.====",
    " ",
    "\x00",
    "\n",
    "null",
    "x" * 513,
    "x" * 100_000,
    "A" * 511 + ".",
    "é",
    "токен.подпись",
    "🙂.🙂",
    "\ud800",  # a lone surrogate: not even encodable as UTF-8
    "%2E%2E",
    "../../etc/passwd",
    base64.urlsafe_b64encode(b'["job", "p"]').decode(),
    base64.urlsafe_b64encode(b'["job", "p"]').decode() + ".",
    base64.urlsafe_b64encode(b'["job", "p"]').decode() + ".AAAA",
    "." + base64.urlsafe_b64encode(b"x\x9c\x00").decode() + ".AAAA",  # "compressed" marker, junk zlib
    base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode() + ".AAAA",
]


@pytest.mark.parametrize("token", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_tokens_are_refused(token: str) -> None:
    assert CallbackTokens(["k1"]).verify(token) is None


def test_over_long_token_is_refused_even_if_genuine() -> None:
    tokens = CallbackTokens(["k1"])
    job_id = "".join(hashlib.sha256(bytes([n])).hexdigest() for n in range(12))  # incompressible
    token = tokens.sign(job_id, "aivideoapi")
    assert len(token) > 512
    assert tokens.verify(token) is None


# -- body -------------------------------------------------------------------------------------------


def _object_of_size(size: int) -> bytes:
    raw = b'{"a":"' + b"x" * (size - 8) + b'"}'
    assert len(raw) == size
    return raw


def test_body_exactly_at_the_limit_is_accepted() -> None:
    assert MAX_BODY_BYTES == 256 * 1024
    result = parse_body(_object_of_size(MAX_BODY_BYTES))
    assert isinstance(result, dict)
    assert len(result["a"]) == MAX_BODY_BYTES - 8


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, MAX_BODY_BYTES + 1024, 10 * MAX_BODY_BYTES])
def test_body_over_the_limit(size: int) -> None:
    assert parse_body(_object_of_size(size)) == Refusal(413, "payload_too_large", too_large().message)


def test_over_limit_garbage_is_too_large_not_invalid() -> None:
    result = parse_body(b"\xff" * (MAX_BODY_BYTES + 1))
    assert isinstance(result, Refusal)
    assert (result.status, result.code) == (413, "payload_too_large")


def test_too_large_names_the_limit() -> None:
    refusal = too_large()
    assert (refusal.status, refusal.code) == (413, "payload_too_large")
    assert str(MAX_BODY_BYTES) in refusal.message


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b" ",
        b"not json",
        b"{",
        b"{'id': 'x'}",
        b'{"id": "x",}',
        b'{"id": "x"} trailing',
        b"<html></html>",
        b'{"a": "\xff"}',  # not UTF-8
        b'{"a": "\xe9t\xe9"}',  # Latin-1
        b"\xc3\x28",
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
    ],
    ids=lambda raw: repr(raw[:20]),
)
def test_invalid_json(raw: bytes) -> None:
    result = parse_body(raw)
    assert isinstance(result, Refusal)
    assert (result.status, result.code) == (400, "invalid_json")


@pytest.mark.parametrize(
    "raw", [b"[]", b'["id"]', b'"text"', b"42", b"1.5", b"true", b"false", b"null", b'[{"id": "x"}]']
)
def test_json_that_is_not_an_object(raw: bytes) -> None:
    result = parse_body(raw)
    assert isinstance(result, Refusal)
    assert (result.status, result.code) == (400, "invalid_json")
    assert "object" in result.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{}", {}),
        (b'{"id": "t1", "status": "completed"}', {"id": "t1", "status": "completed"}),
        (b'  {"a": [1, {"b": null}]}  \n', {"a": [1, {"b": None}]}),
        ('{"prompt": "été 🙂"}'.encode(), {"prompt": "été 🙂"}),
        (b'{"a": "\\u00e9"}', {"a": "é"}),
    ],
)
def test_json_objects(raw: bytes, expected: dict[str, Any]) -> None:
    assert parse_body(raw) == expected


def test_moderately_nested_object_is_fine() -> None:
    raw = b'{"a":' + b"[" * 200 + b"]" * 200 + b"}"
    assert isinstance(parse_body(raw), dict)


@pytest.mark.parametrize(
    "raw",
    [
        '{"id": "t1"}'.encode("utf-16"),
        '{"id": "t1"}'.encode("utf-16-le"),
        '{"id": "t1"}'.encode("utf-32"),
        b'{"id": "t1", "n": NaN}',
        b'{"id": "t1", "n": Infinity}',
        b'{"id": "t1", "n": -Infinity}',
    ],
    ids=["utf-16", "utf-16-le", "utf-32", "NaN", "Infinity", "-Infinity"],
)
def test_non_utf8_or_non_standard_json_is_refused(raw: bytes) -> None:
    """JSON on the wire is UTF-8 (RFC 8259 §8.1) and has no NaN/Infinity."""
    result = parse_body(raw)
    assert isinstance(result, Refusal)
    assert (result.status, result.code) == (400, "invalid_json")


# -- headers (aivideoapi) ---------------------------------------------------------------------------


def headers(**overrides: str | None) -> dict[str, str]:
    base: dict[str, str | None] = {
        "x-task-id": "t1",
        "x-timestamp": str(NOW),
        "x-event": "task.completed",
        "content-type": "application/json",
    }
    base.update({key.replace("_", "-"): value for key, value in overrides.items()})
    return {key: value for key, value in base.items() if value is not None}


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "t1", "status": "completed", "output": {"urls": ["https://f/a.png"]}}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not ...}


def run(h: dict[str, str], b: dict[str, Any], known: str | None = None, now: float = NOW) -> HeaderCheck | Refusal:
    return check_task_headers(h, b, known, now, TOLERANCE)


# (headers, body, known task id) → (status, code); in SPEC order: task id, timestamp, event.
REFUSALS: list[tuple[str, dict[str, str], dict[str, Any], str | None, int, str]] = [
    ("no task id", headers(x_task_id=None), body(), None, 400, "missing_task_id"),
    ("empty task id", headers(x_task_id=""), body(), None, 400, "missing_task_id"),
    ("blank task id", headers(x_task_id="   "), body(), None, 400, "missing_task_id"),
    ("body id differs", headers(x_task_id="t2"), body(), None, 400, "task_id_mismatch"),
    ("body has no id", headers(), body(id=...), None, 400, "task_id_mismatch"),
    ("body id not a string", headers(x_task_id="1"), body(id=1), None, 400, "task_id_mismatch"),
    ("body id null", headers(), body(id=None), None, 400, "task_id_mismatch"),
    ("body id differs in case", headers(x_task_id="T1"), body(), None, 400, "task_id_mismatch"),
    ("known task id differs", headers(), body(), "t0", 409, "task_id_conflict"),
    ("no timestamp", headers(x_timestamp=None), body(), None, 400, "stale_timestamp"),
    ("empty timestamp", headers(x_timestamp=""), body(), None, 400, "stale_timestamp"),
    ("timestamp not a number", headers(x_timestamp="yesterday"), body(), None, 400, "stale_timestamp"),
    ("timestamp decimal", headers(x_timestamp=f"{NOW}.5"), body(), None, 400, "stale_timestamp"),
    ("timestamp exponent", headers(x_timestamp="1.781e9"), body(), None, 400, "stale_timestamp"),
    ("timestamp hex", headers(x_timestamp="0x6a2a0f80"), body(), None, 400, "stale_timestamp"),
    ("timestamp milliseconds", headers(x_timestamp=str(NOW * 1000)), body(), None, 400, "stale_timestamp"),
    ("timestamp stale by 1 s", headers(x_timestamp=str(NOW - 301)), body(), None, 400, "stale_timestamp"),
    ("timestamp future by 1 s", headers(x_timestamp=str(NOW + 301)), body(), None, 400, "stale_timestamp"),
    ("timestamp zero", headers(x_timestamp="0"), body(), None, 400, "stale_timestamp"),
    ("timestamp negative", headers(x_timestamp=str(-NOW)), body(), None, 400, "stale_timestamp"),
    ("no event", headers(x_event=None), body(), None, 400, "event_mismatch"),
    ("empty event", headers(x_event=" "), body(), None, 400, "event_mismatch"),
    ("event disagrees", headers(x_event="task.failed"), body(), None, 400, "event_mismatch"),
    ("event without prefix", headers(x_event="completed"), body(), None, 400, "event_mismatch"),
    ("event other prefix", headers(x_event="job.completed"), body(), None, 400, "event_mismatch"),
    ("body has no status", headers(), body(status=...), None, 400, "event_mismatch"),
    ("body status not a string", headers(), body(status=1), None, 400, "event_mismatch"),
    (
        "failed event, completed body",
        headers(x_event="task.failed"),
        body(status="completed"),
        None,
        400,
        "event_mismatch",
    ),
    ("completed event, failed body", headers(), body(status="failed"), None, 400, "event_mismatch"),
    # several faults at once: the first in SPEC order is the one reported
    ("no task id and stale", headers(x_task_id=None, x_timestamp="0"), body(), None, 400, "missing_task_id"),
    ("mismatch and conflict", headers(x_task_id="t2"), body(), "t0", 400, "task_id_mismatch"),
    ("conflict and stale", headers(x_timestamp="0"), body(), "t0", 409, "task_id_conflict"),
    ("conflict and bad event", headers(x_event="task.failed"), body(), "t0", 409, "task_id_conflict"),
    ("stale and bad event", headers(x_timestamp="0", x_event=None), body(), None, 400, "stale_timestamp"),
]


@pytest.mark.parametrize(
    ("h", "b", "known", "status", "code"), [row[1:] for row in REFUSALS], ids=[row[0] for row in REFUSALS]
)
def test_header_refusals(h: dict[str, str], b: dict[str, Any], known: str | None, status: int, code: str) -> None:
    result = run(h, b, known)
    assert isinstance(result, Refusal), result
    assert (result.status, result.code) == (status, code)
    assert result.message


@pytest.mark.parametrize("offset", [-300, -299, -1, 0, 1, 299, 300])
def test_timestamp_within_tolerance_inclusive(offset: int) -> None:
    assert isinstance(run(headers(x_timestamp=str(NOW + offset)), body()), HeaderCheck)


@pytest.mark.parametrize(("offset", "word"), [(-301, "old"), (301, "future")])
def test_stale_message_says_which_way(offset: int, word: str) -> None:
    result = run(headers(x_timestamp=str(NOW + offset)), body())
    assert isinstance(result, Refusal)
    assert word in result.message


def test_tolerance_is_the_callers() -> None:
    h = headers(x_timestamp=str(NOW - 10))
    assert isinstance(check_task_headers(h, body(), None, NOW, 10.0), HeaderCheck)
    result = check_task_headers(h, body(), None, NOW, 9.0)
    assert isinstance(result, Refusal) and result.code == "stale_timestamp"


def test_fractional_now() -> None:
    assert isinstance(run(headers(x_timestamp=str(NOW - 300)), body(), now=NOW + 0.5), Refusal)
    assert isinstance(run(headers(x_timestamp=str(NOW - 300)), body(), now=NOW - 0.5), HeaderCheck)


def test_accepted_binds_when_no_task_id_is_known() -> None:
    assert run(headers(), body(), None) == HeaderCheck(task_id="t1", binds=True, event="task.completed")


def test_accepted_without_binding_when_the_task_id_is_known() -> None:
    assert run(headers(), body(), "t1") == HeaderCheck(task_id="t1", binds=False, event="task.completed")


def test_failed_event() -> None:
    b = body(status="failed", output=..., error={"code": "upstream_error", "message": "x"})
    assert run(headers(x_event="task.failed"), b, "t1") == HeaderCheck("t1", False, "task.failed")


def test_header_values_are_trimmed() -> None:
    h = headers(x_task_id=" t1 ", x_timestamp=f" {NOW} ", x_event=" task.completed ")
    assert run(h, body(), "t1") == HeaderCheck("t1", False, "task.completed")


def test_unknown_headers_and_body_fields_are_ignored() -> None:
    h = {**headers(), "x-extra": "1", "user-agent": "aivideoapi/1.0"}
    b = body(model="ideogram-v4", created_at=NOW - 20, completed_at=NOW, extra={"a": 1})
    assert isinstance(run(h, b), HeaderCheck)


def test_no_other_spelling_of_a_token_verifies() -> None:
    """Unpadded base64 leaves spare bits in a last character: a variant must not pass for the token."""
    tokens = CallbackTokens(["rotation-key"])
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for n in range(50):
        token = tokens.sign(f"job_{n:026d}", "aivideoapi")
        assert tokens.verify(token) is not None
        payload, _, signature = token.rpartition(".")
        for char in alphabet.replace(token[-1], ""):
            assert tokens.verify(token[:-1] + char) is None
        for char in alphabet.replace(payload[-1], ""):
            assert tokens.verify(payload[:-1] + char + "." + signature) is None
