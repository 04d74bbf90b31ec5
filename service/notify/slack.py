"""Slack: one incoming-webhook message per event, Block Kit (SPEC §6).

The webhook URL is the credential: it never appears in a result, an error or a log line.
"""

from __future__ import annotations

from typing import Any

import httpx

from service.domain.job import rfc3339
from service.notify.base import (
    DeliveryResult,
    Notification,
    describe_exception,
    duration_of,
    error_of,
    format_cost,
    format_value,
    humanise_duration,
    is_http_url,
    job_status,
    label,
    multiline,
    one_line,
    parse_retry_after,
    prompt_of,
    provider_of,
    provider_summary,
    provider_title,
    short_body,
    shorten,
    tier_of,
)

# Slack's limits (https://api.slack.com/reference/block-kit/blocks).
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10
ALT_TEXT_MAX = 2000
IMAGE_URL_MAX = 3000
CONTEXT_ELEMENTS_MAX = 10
PROMPT_MAX = 300  # the prompt, as people see it in the channel
FALLBACK_PROMPT_MAX = 150

_HEADERS = {
    "job.completed": "✅ Job completed",
    "job.failed": "❌ Job failed",
    "job.timed_out": "⏱ Job timed out",
}
_PROVIDER_EMOJI = {
    "provider.callbacks_degraded": "⚠️",
    "provider.callbacks_recovered": "✅",
    "provider.credits_low": "💳",
    "provider.circuit_opened": "⛔",
    "provider.circuit_closed": "✅",
    "budget.exhausted": "💸",
}


def escape(text: str) -> str:
    """Slack mrkdwn escaping: only `&`, `<` and `>` are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link_target(url: str) -> str:
    """A URL made safe inside `<url|text>`: escaped, and no `|` to end it early."""
    return escape(url).replace("|", "%7C")


def _field(name: str, value: str, limit: int = 250) -> dict[str, Any]:
    # Escaping may grow a character to five: 100 + 250 characters stay within FIELD_MAX once escaped.
    title = escape(shorten(one_line(name), 100))
    text = f"*{title}*\n{escape(shorten(one_line(value), limit)) or '—'}"
    return {"type": "mrkdwn", "text": shorten(text, FIELD_MAX)}


def _link(url: str | None, text: str) -> str | None:
    """`<url|text>` for an http(s) URL short enough to keep the block within Slack's limits."""
    if url is None or not is_http_url(url):
        return None
    target = _link_target(url)
    return f"<{target}|{text}>" if len(target) <= 2000 else None


def _mrkdwn(text: str, limit: int = SECTION_TEXT_MAX) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": shorten(text, limit) or " "}


def _context(n: Notification) -> dict[str, Any]:
    parts = []
    job_id = (n.job or {}).get("id") if n.is_job_event else None
    if job_id:
        parts.append(f"Job `{escape(shorten(one_line(str(job_id)), 100))}`")
    when = rfc3339(n.created_at) or ""
    parts.append(f"<!date^{int(n.created_at)}^{{date_short_pretty}} {{time_secs}}|{when}>")
    dashboard = _link(n.dashboard_url, "Open in jobhook")
    if dashboard is not None:
        parts.append(dashboard)
    return {"type": "context", "elements": [_mrkdwn(" · ".join(parts))]}


def _image(n: Notification, alt: str) -> dict[str, Any] | None:
    url = n.image_url
    if url is None or not is_http_url(url) or len(url) > IMAGE_URL_MAX:
        return None
    return {"type": "image", "image_url": url, "alt_text": shorten(alt, ALT_TEXT_MAX) or "generated image"}


def header_text(n: Notification) -> str:
    if n.type in _HEADERS:
        return _HEADERS[n.type]
    emoji = _PROVIDER_EMOJI.get(n.type, "ℹ️")
    return shorten(one_line(f"{emoji} {provider_title(n)}"), HEADER_MAX)


def build_message(n: Notification, *, with_image: bool = True) -> dict[str, Any]:
    """The incoming-webhook payload: `text` (notifications, screen readers) and Block Kit `blocks`."""
    header = header_text(n)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": shorten(header, HEADER_MAX), "emoji": True}}
    ]
    if n.is_job_event:
        job = n.job or {}
        prompt = shorten(multiline(prompt_of(n)), PROMPT_MAX)
        fields = [
            _field("Status", job_status(n)),
            _field("Provider", provider_of(n)),
            _field("Tier", tier_of(n)),
            _field("Duration", humanise_duration(duration_of(n))),
            _field("Cost", format_cost(job.get("cost_usd"))),
        ]
        if job.get("resolved_by"):
            fields.append(_field("Resolved by", str(job["resolved_by"])))
        blocks.append({"type": "section", "fields": fields[:FIELDS_MAX]})
        if prompt:
            blocks.append({"type": "section", "text": _mrkdwn(f"*Prompt*\n{escape(prompt)}")})
        error = error_of(n)
        if error is not None:
            code, message = error
            text = f"*Error* `{escape(shorten(one_line(code), 100))}`\n{escape(shorten(multiline(message), 400))}"
            blocks.append({"type": "section", "text": _mrkdwn(text)})
        image = _image(n, one_line(prompt)) if with_image else None
        if image is not None:
            blocks.append(image)
        elif (link := _link(n.image_url, "View the image")) is not None:
            blocks.append({"type": "section", "text": _mrkdwn(link)})
        fallback = f"{header}: {shorten(one_line(prompt), FALLBACK_PROMPT_MAX)}" if prompt else header
    else:
        summary = provider_summary(n)
        blocks.append({"type": "section", "text": _mrkdwn(escape(summary))})
        fields = [_field("Provider", provider_of(n))]
        fields += [_field(label(str(key)), format_value(value)) for key, value in n.detail.items()]
        blocks.append({"type": "section", "fields": fields[:FIELDS_MAX]})
        fallback = f"{header}: {summary}"
    blocks.append(_context(n))
    return {
        "text": escape(shorten(fallback, 500)),
        "blocks": blocks,
        "unfurl_links": False,
        "unfurl_media": False,
    }


class SlackDestination:
    """POSTs `build_message(n)` to a Slack incoming webhook.

    `client` belongs to the caller, who closes it; `aclose` here does nothing. If Slack refuses the
    message because of its image (Slack must fetch the image itself, so an image URL it cannot reach
    gives `invalid_blocks`), the message is sent again at once without the image block, with a link.
    """

    name = "slack"

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self._url = str(url)
        self._client = client
        self._redact = _secret_parts(self._url)

    def __repr__(self) -> str:
        return "SlackDestination(url='**********')"

    async def send(self, notification: Notification) -> DeliveryResult:
        payload = build_message(notification)
        result = await self._post(payload)
        has_image = any(block.get("type") == "image" for block in payload["blocks"])
        if not result.ok and has_image and result.status == 400 and "invalid_blocks" in (result.error or ""):
            result = await self._post(build_message(notification, with_image=False))
        return result

    async def _post(self, payload: dict[str, Any]) -> DeliveryResult:
        try:
            response = await self._client.post(self._url, json=payload)
        except Exception as exc:  # any failure at all: its text may hold the URL, which is the secret
            return DeliveryResult(ok=False, error=describe_exception(exc, redact=self._redact))
        status = response.status_code
        if 200 <= status < 300:
            return DeliveryResult(ok=True, status=status)
        reason = short_body(response.content) or response.reason_phrase or "no reason given"
        for secret in self._redact:
            reason = reason.replace(secret, "<redacted>")
        error = f"HTTP {status}: {reason}"
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return DeliveryResult(ok=False, status=status, error=error, retry_after=retry_after)
        return DeliveryResult(ok=False, status=status, error=error, gone=status == 410)

    async def aclose(self) -> None:
        return None


def _secret_parts(url: str) -> tuple[str, ...]:
    """The URL, and its path (where Slack keeps the token), longest first, for scrubbing error text."""
    try:
        path = httpx.URL(url).path
    except Exception:  # an unparsable URL: scrub the whole string only
        path = ""
    parts = [url] + ([path] if len(path) > 1 else [])
    return tuple(sorted({part for part in parts if part}, key=len, reverse=True))
