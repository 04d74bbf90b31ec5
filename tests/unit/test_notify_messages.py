"""The messages of SPEC §6 as built, without sending: Slack blocks checked by Slack's own SDK models,
email parsed back from its bytes, the webhook body's exact shape."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import email.utils
import json
import re
import time
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from standardwebhooks.webhooks import Webhook

from service.notify import slack
from service.notify import webhook as webhook_notify
from service.notify.base import (
    EVENT_TYPES,
    JOB_EVENTS,
    Notification,
    format_cost,
    humanise_duration,
    parse_retry_after,
    provider_summary,
    shorten,
)
from service.notify.email import build_message as build_email
from service.notify.email import subject as email_subject

CREATED = 1795338876.5  # 2026-11-22T09:14:36.500Z
LONG_PROMPT = ("a lighthouse on a cliff at dusk, volumetric fog " * 220)[:10_000]
NASTY_PROMPT = 'fish & chips <b>bold</b> > "quotes"\r\nBcc: x@y.z\nSubject: hijacked\n\n<!channel> <@U123> *not bold*'
PROMPTS = {"plain": "a red fox in the snow", "long": LONG_PROMPT, "nasty": NASTY_PROMPT}
IMAGE = "https://hooks.example.com/v1/jobs/job_01JX/images/0?x=1&y=2"
DASHBOARD = "https://hooks.example.com/dashboard/jobs/job_01JX"


def job_json(status: str = "completed", prompt: str = "a red fox in the snow", **overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": "job_01JX0000000000000000000000",
        "provider": "aivideoapi",
        "provider_task_id": "397ce9f2-0000",
        "status": status,
        "request": {"prompt": prompt, "aspect_ratio": "16:9", "rendering_speed": "TURBO", "output_format": "png"},
        "metadata": {"order": 1234},
        "result": {"images": [{"url": "https://file.example/abc123.png"}]} if status == "completed" else None,
        "error": None,
        "resolved_by": "callback",
        "callback_url_registered": True,
        "created_at": "2026-11-22T09:11:31.123Z",
        "submitted_at": "2026-11-22T09:11:31.500Z",
        "updated_at": "2026-11-22T09:14:36.123Z",
        "finished_at": "2026-11-22T09:14:36.123Z",
        "cost_usd": 0.08,
    }
    if status == "failed":
        job["error"] = {"code": "provider_failed", "message": "the provider said: content <policy> & rules"}
    if status == "timed_out":
        job["error"] = {"code": "timed_out", "message": "no final status from the provider within JOBHOOK_JOB_TIMEOUT"}
    job.update(overrides)
    return job


PROVIDER_DETAIL: dict[str, dict[str, Any]] = {
    "provider.callbacks_degraded": {"polled_in_a_row": 3},
    "provider.callbacks_recovered": {},
    "provider.credits_low": {"credits": 12.0, "threshold": 20.0},
    "provider.circuit_opened": {
        "until": "2026-12-04T13:00:30.000Z",
        "cooldown": 30.0,
        "failures_in_a_row": 3,
        "reason": "http_401",
        "probe_failed": False,
    },
    "provider.circuit_closed": {"opened_at": "2026-12-04T13:00:00.000Z", "reason": "http_401"},
    "budget.exhausted": {
        "scope": "segmind",
        "cap": 5.0,
        "spent": 4.95,
        "reserved": 0.0,
        "reset_at": "2026-12-05T00:00:00.000Z",
    },
}


def notification(
    type_: str,
    *,
    prompt: str = "a red fox in the snow",
    image_url: str | None = None,
    dashboard_url: str | None = None,
    job: Mapping[str, Any] | None = None,
    detail: Mapping[str, Any] | None = None,
) -> Notification:
    if type_ in JOB_EVENTS:
        return Notification(
            id="msg_01JX0000000000000000000001",
            type=type_,
            created_at=CREATED,
            job=job if job is not None else job_json(type_.removeprefix("job."), prompt),
            provider="aivideoapi",
            detail={},
            image_url=image_url,
            dashboard_url=dashboard_url,
        )
    return Notification(
        id="msg_01JX0000000000000000000002",
        type=type_,
        created_at=CREATED,
        job=None,
        provider="segmind",
        detail=detail if detail is not None else PROVIDER_DETAIL[type_],
        dashboard_url=dashboard_url,
    )


# --- Slack ------------------------------------------------------------------------------------

_ALLOWED_ANGLES = re.compile(r"<!date\^\d+\^[^|<>]*\|[^<>]*>|<https?://[^|<>\s]+\|[^<>]*>")
_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")


def assert_escaped(mrkdwn: str) -> None:
    """Only our own `<…|…>` links and dates may use `<`/`>`; every `&` starts an entity."""
    rest = _ALLOWED_ANGLES.sub("", mrkdwn)
    assert "<" not in rest and ">" not in rest, mrkdwn
    assert not _ENTITY.search(mrkdwn), mrkdwn


def check_slack_payload(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every block parses into slack_sdk's model, validates, round-trips, and keeps Slack's limits."""
    assert isinstance(payload["text"], str) and payload["text"].strip()
    assert_escaped(payload["text"])
    blocks = payload["blocks"]
    assert 1 <= len(blocks) <= 50
    for raw in blocks:
        parsed = Block.parse(raw)
        assert parsed is not None, raw
        parsed.validate_json()  # raises SlackObjectFormationError on a broken block
        assert parsed.to_dict() == raw
        kind = raw["type"]
        if kind == "header":
            assert raw["text"]["type"] == "plain_text"
            assert 1 <= len(raw["text"]["text"]) <= 150
        elif kind == "section":
            if "text" in raw:
                assert 1 <= len(raw["text"]["text"]) <= 3000
                assert_escaped(raw["text"]["text"])
            fields = raw.get("fields", [])
            assert len(fields) <= 10
            for field in fields:
                assert 1 <= len(field["text"]) <= 2000
                assert_escaped(field["text"])
            assert "text" in raw or fields
        elif kind == "image":
            assert raw["image_url"].startswith("https://") and len(raw["image_url"]) <= 3000
            assert 1 <= len(raw["alt_text"]) <= 2000
        elif kind == "context":
            assert 1 <= len(raw["elements"]) <= 10
            for element in raw["elements"]:
                assert 1 <= len(element["text"]) <= 3000
                assert_escaped(element["text"])
        else:
            pytest.fail(f"unexpected block {kind}")
    return list(blocks)


def fields_of(blocks: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for block in blocks:
        for field in block.get("fields", []):
            name, _, value = field["text"].partition("\n")
            out[name.strip("*")] = value
    return out


@pytest.mark.parametrize("prompt_kind", sorted(PROMPTS))
@pytest.mark.parametrize("with_image", [False, True], ids=["no-image", "image"])
@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_slack_blocks_validate_with_slack_sdk(type_: str, with_image: bool, prompt_kind: str) -> None:
    n = notification(
        type_, prompt=PROMPTS[prompt_kind], image_url=IMAGE if with_image else None, dashboard_url=DASHBOARD
    )
    payload = slack.build_message(n)
    blocks = check_slack_payload(payload)
    assert json.loads(json.dumps(payload)) == payload
    images = [block for block in blocks if block["type"] == "image"]
    if with_image and type_ in JOB_EVENTS:
        assert len(images) == 1
        assert images[0]["image_url"] == IMAGE
    else:
        assert images == []
    assert blocks[-1]["type"] == "context"


@pytest.mark.parametrize(
    ("type_", "header"),
    [
        ("job.completed", "✅ Job completed"),
        ("job.failed", "❌ Job failed"),
        ("job.timed_out", "⏱ Job timed out"),
        ("provider.callbacks_degraded", "⚠️ Callbacks degraded: segmind"),
        ("provider.callbacks_recovered", "✅ Callbacks recovered: segmind"),
        ("provider.credits_low", "💳 Credits low: segmind"),
        ("provider.circuit_opened", "⛔ Circuit open: segmind"),
        ("provider.circuit_closed", "✅ Circuit closed: segmind"),
        ("budget.exhausted", "💸 Daily budget spent: segmind"),
    ],
)
def test_slack_header_per_event(type_: str, header: str) -> None:
    blocks = slack.build_message(notification(type_))["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}}


@pytest.mark.parametrize(
    ("detail", "summary"),
    [
        (
            PROVIDER_DETAIL["provider.circuit_opened"],
            "segmind: 3 attempts in a row failed (http_401). jobhook sends it nothing until 2026-12-04T13:00:30.000Z;"
            " its jobs wait queued, then one job tries it, and its success closes the circuit.",
        ),
        (
            {**PROVIDER_DETAIL["provider.circuit_opened"], "probe_failed": True, "reason": "insufficient_credits"},
            "segmind: the trial job after the cooldown failed too (insufficient_credits). jobhook sends it nothing"
            " until 2026-12-04T13:00:30.000Z; its jobs wait queued, then one job tries it, and its success closes"
            " the circuit.",
        ),
    ],
    ids=["opened", "reopened"],
)
def test_circuit_opened_says_why_and_until_when(detail: dict[str, Any], summary: str) -> None:
    assert provider_summary(notification("provider.circuit_opened", detail=detail)) == summary
    closed = provider_summary(notification("provider.circuit_closed"))
    assert closed == "segmind took a job again: its circuit is closed, and the jobs that waited for it are sent."


def test_budget_exhausted_says_which_cap_and_when_it_resets() -> None:
    """SPEC §9: a provider's cap, or all providers' (`scope` total: the event names no provider)."""
    own = notification("budget.exhausted")
    assert provider_summary(own) == (
        "segmind's daily budget ($5; $4.95 spent) refused a job today. jobhook sends nothing it cannot hold"
        " under the cap until it resets at 2026-12-05T00:00:00.000Z: new submissions are answered 429, queued"
        " jobs wait."
    )
    total = dataclasses.replace(own, provider=None, detail={**own.detail, "scope": "total"})
    assert slack.header_text(total) == "💸 Daily budget spent: all providers"
    assert provider_summary(total).startswith("The daily budget of all providers ($5; $4.95 spent) refused")
    assert email_subject(total) == "[jobhook] budget.exhausted: total"
    assert webhook_notify.event_data(total) == {"provider": None, **own.detail, "scope": "total"}


def test_slack_completed_fields_prompt_image_and_context() -> None:
    payload = slack.build_message(notification("job.completed", image_url=IMAGE, dashboard_url=DASHBOARD))
    blocks = check_slack_payload(payload)
    assert fields_of(blocks) == {
        "Status": "completed",
        "Provider": "aivideoapi",
        "Tier": "TURBO",
        "Duration": "3 min 5 s",
        "Cost": "$0.08",
        "Resolved by": "callback",
    }
    texts = [block["text"]["text"] for block in blocks if block["type"] == "section" and "text" in block]
    assert "*Prompt*\na red fox in the snow" in texts
    image = next(block for block in blocks if block["type"] == "image")
    assert image == {"type": "image", "image_url": IMAGE, "alt_text": "a red fox in the snow"}
    context = blocks[-1]["elements"][0]["text"]
    assert "job_01JX0000000000000000000000" in context
    assert f"<{DASHBOARD}|Open in jobhook>" in context
    assert "2026-11-22T09:14:36.500Z" in context
    assert payload["text"] == "✅ Job completed: a red fox in the snow"


def test_slack_defaults_when_the_job_says_little() -> None:
    job = job_json("completed", cost_usd=None, resolved_by=None, finished_at=None)
    job["request"] = {"prompt": "x"}
    blocks = slack.build_message(notification("job.completed", job=job))["blocks"]
    fields = fields_of(blocks)
    assert fields["Tier"] == "default"
    assert fields["Cost"] == "—"
    assert "Resolved by" not in fields
    # No finished_at: the event's own time ends the duration (09:11:31.123 → 09:14:36.5).
    assert fields["Duration"] == "3 min 5 s"


def test_slack_failure_shows_the_error() -> None:
    blocks = slack.build_message(notification("job.failed"))["blocks"]
    texts = [block["text"]["text"] for block in blocks if block["type"] == "section" and "text" in block]
    assert "*Error* `provider_failed`\nthe provider said: content &lt;policy&gt; &amp; rules" in texts


def test_slack_long_prompt_is_shortened() -> None:
    blocks = slack.build_message(notification("job.completed", prompt=LONG_PROMPT, image_url=IMAGE))["blocks"]
    prompt_text = next(b["text"]["text"] for b in blocks if "text" in b and b["text"]["text"].startswith("*Prompt*"))
    prompt = prompt_text.removeprefix("*Prompt*\n")
    assert len(prompt) <= 300 and prompt.endswith("…")
    assert LONG_PROMPT.startswith(prompt.removesuffix("…"))
    image = next(block for block in blocks if block["type"] == "image")
    assert image["alt_text"] == prompt


def test_slack_escapes_mrkdwn_and_keeps_lines() -> None:
    payload = slack.build_message(notification("job.completed", prompt=NASTY_PROMPT, image_url=IMAGE))
    blocks = check_slack_payload(payload)
    prompt_text = next(b["text"]["text"] for b in blocks if "text" in b and b["text"]["text"].startswith("*Prompt*"))
    assert prompt_text == (
        '*Prompt*\nfish &amp; chips &lt;b&gt;bold&lt;/b&gt; &gt; "quotes"\nBcc: x@y.z\nSubject: hijacked\n\n'
        "&lt;!channel&gt; &lt;@U123&gt; *not bold*"
    )
    assert "\r" not in json.dumps(payload)
    mrkdwn = [payload["text"]] + [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    assert not any("<!channel>" in text or "<@U123>" in text for text in mrkdwn)
    # alt_text is plain text: no escaping, one line.
    image = next(block for block in blocks if block["type"] == "image")
    assert image["alt_text"].startswith("fish & chips <b>bold</b>")
    assert "\n" not in image["alt_text"]


@pytest.mark.parametrize("bad_url", ["https://x.example/" + "a" * 3000, "ftp://x.example/a.png", "javascript:alert(1)"])
def test_slack_skips_an_image_it_cannot_show(bad_url: str) -> None:
    blocks = check_slack_payload(slack.build_message(notification("job.completed", image_url=bad_url)))
    assert not any(block["type"] == "image" for block in blocks)


def test_slack_without_image_falls_back_to_a_link() -> None:
    blocks = slack.build_message(notification("job.completed", image_url=IMAGE), with_image=False)["blocks"]
    assert not any(block["type"] == "image" for block in blocks)
    assert any(
        "text" in b
        and b["text"]["text"] == "<https://hooks.example.com/v1/jobs/job_01JX/images/0?x=1&amp;y=2|View the image>"
        for b in blocks
    )


def test_slack_provider_events_carry_their_detail() -> None:
    blocks = check_slack_payload(slack.build_message(notification("provider.credits_low")))
    assert fields_of(blocks) == {"Provider": "segmind", "Credits": "12", "Threshold": "20"}
    assert "12 credits" in blocks[1]["text"]["text"] and "20" in blocks[1]["text"]["text"]
    blocks = check_slack_payload(slack.build_message(notification("provider.callbacks_degraded")))
    assert blocks[1]["text"]["text"].startswith("3 jobs in a row from segmind were finished by polling")


def test_slack_provider_event_with_many_odd_details_stays_within_limits() -> None:
    detail = {f"key_<{i}>_" + "k" * 300: "v&" * 2000 for i in range(30)}
    n = notification("provider.credits_low", detail=detail)
    blocks = check_slack_payload(slack.build_message(n))
    assert len(fields_of(blocks)) == 10


# --- shared wording ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (-1.0, "—"),
        (0.4, "0.4 s"),
        (2.0, "2 s"),
        (22.4, "22 s"),
        (60.0, "1 min"),
        (185.0, "3 min 5 s"),
        (3600.0, "1 h"),
        (3725.0, "1 h 2 min"),
        (90000.0, "1 d 1 h"),
    ],
)
def test_humanise_duration(seconds: float | None, text: str) -> None:
    assert humanise_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.08, "$0.08"), (0.035, "$0.035"), (1, "$1.00"), (12.5, "$12.50"), (None, "—"), ("0.08", "—")],
)
def test_format_cost(value: Any, text: str) -> None:
    assert format_cost(value) == text


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == 30.0


def test_shorten() -> None:
    assert shorten("abc", 3) == "abc"
    assert shorten("abcdef", 4) == "abc…"
    assert len(shorten("x" * 10_000, 300)) == 300


# --- email ------------------------------------------------------------------------------------


def parse_back(msg: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts_of(parsed: EmailMessage) -> tuple[str, str]:
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    text_part, html_part = parts
    assert isinstance(text_part, EmailMessage) and isinstance(html_part, EmailMessage)
    return text_part.get_content(), html_part.get_content()


@pytest.mark.parametrize("prompt_kind", sorted(PROMPTS))
@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_email_structure(type_: str, prompt_kind: str) -> None:
    n = notification(type_, prompt=PROMPTS[prompt_kind], image_url=IMAGE, dashboard_url=DASHBOARD)
    parsed = parse_back(build_email(n, "jobhook@example.com", ["ops@example.com", "dev@example.org"]))
    text, html = parts_of(parsed)
    assert parsed["From"] == "jobhook@example.com"
    assert parsed["To"] == "ops@example.com, dev@example.org"
    assert email.utils.parsedate_to_datetime(parsed["Date"]).timestamp() == int(CREATED)
    assert parsed["Message-ID"] == f"<{n.id}.jobhook@example.com>"
    assert parsed["Bcc"] is None and parsed["Cc"] is None
    assert parsed.get_all("Subject") is not None and len(parsed.get_all("Subject") or []) == 1
    subject = parsed["Subject"]
    assert "\n" not in subject and "\r" not in subject
    if type_ in JOB_EVENTS:
        status = type_.removeprefix("job.")
        assert subject.startswith(f"[jobhook] {status}: ")
        # CPython's folder may leave one extra space before an encoded word ("…"); clients show it as is.
        prompt = re.sub(r"\s+", " ", subject.removeprefix(f"[jobhook] {status}: "))
        assert len(prompt) <= 60
        if prompt_kind == "long":
            assert prompt.endswith("…")
        assert f'<img src="{IMAGE.replace("&", "&amp;")}"' in html
        assert IMAGE in text
    else:
        assert subject == f"[jobhook] {type_}: segmind"
        assert "<img" not in html
    assert "<b>" not in html and "<!channel>" not in html and "<policy>" not in html
    assert DASHBOARD in text


def test_email_prompt_cannot_inject_headers() -> None:
    n = notification("job.completed", prompt="hello\r\nBcc: x@y.z\r\nX-Evil: 1\n\nbody")
    raw = build_email(n, "jobhook@example.com", ["ops@example.com"]).as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Bcc"] is None and parsed["X-Evil"] is None
    assert parsed["Subject"] == "[jobhook] completed: hello Bcc: x@y.z X-Evil: 1 body"
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^Bcc:", headers, re.MULTILINE | re.IGNORECASE)


def test_email_subject_and_message_id_are_stable_across_retries() -> None:
    n = notification("job.failed", prompt="a red fox in the snow")
    first = parse_back(build_email(n, "jobhook@example.com", ["ops@example.com"]))
    second = parse_back(build_email(n, "jobhook@example.com", ["ops@example.com"]))
    assert first["Subject"] == "[jobhook] failed: a red fox in the snow"
    assert first["Message-ID"] == second["Message-ID"]
    assert first["Date"] == second["Date"]
    assert first["Auto-Submitted"] == "auto-generated"


def test_email_html_escapes_everything_from_the_job() -> None:
    n = notification("job.failed", prompt=NASTY_PROMPT, image_url='https://x.example/a.png?"onerror=alert(1)')
    text, html = parts_of(parse_back(build_email(n, "jobhook@example.com", ["ops@example.com"])))
    assert "fish &amp; chips &lt;b&gt;bold&lt;/b&gt; &gt; &quot;quotes&quot;" in html
    assert "content &lt;policy&gt; &amp; rules" in html
    assert '"onerror' not in html and "&quot;onerror=alert(1)" in html
    assert "fish & chips <b>bold</b>" in text  # the text part is plain text
    assert "Error:" in text and "provider_failed" in text


def test_email_without_image_has_no_img() -> None:
    text, html = parts_of(parse_back(build_email(notification("job.completed"), "a@example.com", ["b@example.com"])))
    assert "<img" not in html
    assert "Image:" not in text
    assert "Duration:" in text and "3 min 5 s" in text and "$0.08" in text and "TURBO" in text


def test_email_provider_event_text() -> None:
    text, html = parts_of(
        parse_back(build_email(notification("provider.credits_low"), "a@example.com", ["b@example.com"]))
    )
    assert "Credits low: segmind" in text
    assert "12 credits" in text and "12 credits" in html


# --- webhook ----------------------------------------------------------------------------------


def test_webhook_body_for_a_job_event() -> None:
    n = notification("job.completed", prompt=NASTY_PROMPT, image_url=IMAGE)
    body = webhook_notify.build_body(n)
    assert (
        body
        == json.dumps(
            {"type": "job.completed", "timestamp": "2026-11-22T09:14:36.500Z", "data": n.job}, separators=(",", ":")
        ).encode()
    )
    decoded = json.loads(body)
    assert list(decoded) == ["type", "timestamp", "data"]
    assert decoded["data"] == n.job
    assert b" " not in body.replace(b'" "', b"").split(b'"data"')[0]
    assert webhook_notify.build_body(n) == body  # a retry sends the same bytes


@pytest.mark.parametrize("type_", sorted(PROVIDER_DETAIL))
def test_webhook_body_for_a_provider_event(type_: str) -> None:
    body = webhook_notify.build_body(notification(type_))
    assert json.loads(body) == {
        "type": type_,
        "timestamp": "2026-11-22T09:14:36.500Z",
        "data": {"provider": "segmind", **PROVIDER_DETAIL[type_]},
    }
    assert body == json.dumps(json.loads(body), separators=(",", ":")).encode()


def test_webhook_signature_verifies_with_standardwebhooks() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    n = notification("job.completed")
    body = webhook_notify.build_body(n)
    now = int(time.time())
    headers = webhook_notify.sign_headers(Webhook(secret), n.id, now, body)
    assert headers["webhook-id"] == n.id and headers["webhook-timestamp"] == str(now)
    assert Webhook(secret).verify(body, headers) == json.loads(body)
