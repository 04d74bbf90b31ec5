"""Webhook: the event POSTed to the backend, signed per Standard Webhooks (SPEC §6).

`webhook-id` is the event's id and the body is built from the event alone, so a retry or a resend
carries the same id and the same bytes; only `webhook-timestamp` (and so the signature) is new.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from service.config import ForwardSettings
from service.domain.job import rfc3339
from service.notify.base import DeliveryResult, Notification, describe_exception, parse_retry_after, short_body

USER_AGENT = "jobhook/0.1"


def event_data(n: Notification) -> dict[str, Any]:
    """`data`: the job JSON for job events; `{"provider": …, **detail}` for provider events."""
    if n.is_job_event:
        return dict(n.job or {})
    return {"provider": n.provider, **n.detail}


def build_body(n: Notification) -> bytes:
    """`{"type":…,"timestamp":"<RFC 3339 UTC of the event>","data":…}` as compact JSON (ASCII)."""
    body = {"type": n.type, "timestamp": rfc3339(n.created_at), "data": event_data(n)}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def sign_headers(webhook: Webhook, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt at `timestamp` (unix seconds)."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook.sign(msg_id, moment, body.decode("ascii")),
    }


class WebhookDestination:
    """POSTs `build_body(n)` to `settings.url`. `client` belongs to the caller; `aclose` does nothing."""

    name = "webhook"

    def __init__(
        self, settings: ForwardSettings, client: httpx.AsyncClient, clock: Callable[[], float] = time.time
    ) -> None:
        self._url = settings.url
        self._webhook = Webhook(str(settings.secret))
        self._client = client
        self._clock = clock

    def __repr__(self) -> str:
        return f"WebhookDestination(url={self._url!r})"

    async def send(self, notification: Notification) -> DeliveryResult:
        try:
            body = build_body(notification)
        except (TypeError, ValueError) as exc:  # data that JSON cannot carry (NaN, an object)
            return DeliveryResult(ok=False, error=describe_exception(exc))
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **sign_headers(self._webhook, notification.id, int(self._clock()), body),
        }
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return DeliveryResult(ok=False, error=describe_exception(exc, redact=(self._url,)))
        status = response.status_code
        if 200 <= status < 300:
            return DeliveryResult(ok=True, status=status)
        reason = short_body(response.content)
        error = f"HTTP {status}: {reason}" if reason else f"HTTP {status}"
        if status == 410:
            return DeliveryResult(ok=False, status=status, error=error, gone=True)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return DeliveryResult(ok=False, status=status, error=error, retry_after=retry_after)
        return DeliveryResult(ok=False, status=status, error=error)

    async def aclose(self) -> None:
        return None
