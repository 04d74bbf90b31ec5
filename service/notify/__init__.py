"""Notification destinations (SPEC §6): Slack, email and a signed webhook.

Each destination turns one `Notification` into one delivery attempt and reports a `DeliveryResult`;
retries, backoff and the dead-letter state belong to the outbox that calls them.
"""

from __future__ import annotations

import httpx

from service.config import Settings
from service.notify.base import EVENT_TYPES, DeliveryResult, Destination, Notification
from service.notify.email import EmailDestination
from service.notify.slack import SlackDestination
from service.notify.webhook import WebhookDestination

__all__ = [
    "EVENT_TYPES",
    "DeliveryResult",
    "Destination",
    "EmailDestination",
    "Notification",
    "SlackDestination",
    "WebhookDestination",
    "destinations_from_settings",
]


def destinations_from_settings(settings: Settings, client: httpx.AsyncClient) -> dict[str, Destination]:
    """The configured destinations by name, in `settings.destinations` order; `client` is shared."""
    found: dict[str, Destination] = {}
    if settings.slack_webhook_url is not None:
        found["slack"] = SlackDestination(settings.slack_webhook_url, client)
    if settings.smtp is not None:
        found["email"] = EmailDestination(settings.smtp)
    if settings.forward is not None:
        found["webhook"] = WebhookDestination(settings.forward, client)
    return found
