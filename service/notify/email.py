"""Email: one `multipart/alternative` message (text and HTML) per event, over SMTP (SPEC §6).

Everything that comes from a job is escaped in the HTML part, and flattened to one line before it
goes into a header, so that a prompt can never add a header (`\\r\\nBcc: …`).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import html
import re
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import aiosmtplib

from service.config import SmtpSettings
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
    prompt_of,
    provider_of,
    provider_summary,
    provider_title,
    shorten,
    tier_of,
)

SUBJECT_PROMPT_MAX = 60
BODY_PROMPT_MAX = 2000
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_DOMAIN_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


def subject(n: Notification) -> str:
    """`[jobhook] completed: a red fox in…` or `[jobhook] provider.credits_low: aivideoapi`, one line."""
    if n.is_job_event:
        prompt = shorten(one_line(prompt_of(n)), SUBJECT_PROMPT_MAX)
        text = f"[jobhook] {job_status(n)}: {prompt}" if prompt else f"[jobhook] {job_status(n)}"
    else:
        about = n.detail.get("scope") if n.type.startswith("budget.") else provider_of(n)
        text = f"[jobhook] {n.type}: {about}"
    return shorten(one_line(text), 250)


def message_id(n: Notification, sender: str) -> str:
    """`<msg_01J….jobhook@example.com>`: the same for every attempt of one notification."""
    local = _ID_UNSAFE.sub("", n.id)[:200] or "notification"
    domain = _DOMAIN_UNSAFE.sub("", sender.rpartition("@")[2])[:200].strip(".") or "jobhook.invalid"
    return f"<{local}.jobhook@{domain}>"


def _rows(n: Notification) -> list[tuple[str, str]]:
    """The facts shown in both parts, as (label, value)."""
    if not n.is_job_event:
        rows = [("Provider", provider_of(n))]
        rows += [(label(str(key)), format_value(value)) for key, value in n.detail.items()]
        return [(one_line(name), one_line(value)) for name, value in rows]
    job = n.job or {}
    rows = [
        ("Job", str(job.get("id") or "—")),
        ("Status", job_status(n)),
        ("Provider", provider_of(n)),
        ("Tier", tier_of(n)),
        ("Duration", humanise_duration(duration_of(n))),
        ("Cost", format_cost(job.get("cost_usd"))),
    ]
    if job.get("resolved_by"):
        rows.append(("Resolved by", str(job["resolved_by"])))
    error = error_of(n)
    if error is not None:
        rows.append(("Error", f"{error[0]}: {error[1]}" if error[1] else error[0]))
    return [(name, shorten(one_line(value), 1000)) for name, value in rows]


def _headline(n: Notification) -> str:
    if n.is_job_event:
        job_id = (n.job or {}).get("id")
        status = job_status(n).replace("_", " ")
        return f"Job {job_id} {status}." if job_id else f"Job {status}."
    return provider_title(n)


def _text(n: Notification) -> str:
    lines = [_headline(n), ""]
    if not n.is_job_event:
        lines += [provider_summary(n), ""]
    rows = _rows(n)
    width = max((len(name) for name, _ in rows), default=0) + 1
    lines += [f"{(name + ':').ljust(width)} {value}" for name, value in rows]
    prompt = shorten(multiline(prompt_of(n)), BODY_PROMPT_MAX)
    if prompt:
        lines += ["", "Prompt:", prompt]
    if is_http_url(n.image_url):
        lines += ["", f"Image: {n.image_url}"]
    if is_http_url(n.dashboard_url):
        lines += ["", f"Open in jobhook: {n.dashboard_url}"]
    lines += ["", f"Event {n.type} {n.id} at {rfc3339(n.created_at)}"]
    return "\n".join(lines) + "\n"


def _html(n: Notification) -> str:
    def esc(text: str) -> str:
        return html.escape(text, quote=True)

    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"></head>',
        '<body style="font-family: sans-serif; color: #1d1d1f;">',
        f"<h2>{esc(_headline(n))}</h2>",
    ]
    if not n.is_job_event:
        parts.append(f"<p>{esc(provider_summary(n))}</p>")
    parts.append('<table cellpadding="4" style="border-collapse: collapse;">')
    for name, value in _rows(n):
        parts.append(f'<tr><th align="left" valign="top">{esc(name)}</th><td>{esc(value)}</td></tr>')
    parts.append("</table>")
    prompt = shorten(multiline(prompt_of(n)), BODY_PROMPT_MAX)
    if prompt:
        parts.append(f'<p><strong>Prompt</strong></p><p style="white-space: pre-wrap;">{esc(prompt)}</p>')
    if n.image_url is not None and is_http_url(n.image_url):
        url = esc(n.image_url)
        alt = esc(shorten(one_line(prompt), 300) or "generated image")
        parts.append(
            f'<p><a href="{url}"><img src="{url}" alt="{alt}" width="512" style="max-width: 100%; height: auto;"></a>'
            f'<br><a href="{url}">Open the image</a></p>'
        )
    if n.dashboard_url is not None and is_http_url(n.dashboard_url):
        parts.append(f'<p><a href="{esc(n.dashboard_url)}">Open in jobhook</a></p>')
    footer = f"Event {n.type} {n.id} at {rfc3339(n.created_at)}"
    parts.append(f'<p style="color: #6e6e73; font-size: small;">{esc(footer)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build_message(n: Notification, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The message, with `From`, `To`, `Date` (the event's), and a `Message-ID` from `n.id`."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["Subject"] = subject(n)
    msg["From"] = one_line(sender)
    msg["To"] = ", ".join(one_line(address) for address in recipients)
    msg["Date"] = email.utils.format_datetime(dt.datetime.fromtimestamp(n.created_at, tz=dt.UTC))
    msg["Message-ID"] = message_id(n, sender)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to this
    msg["X-Jobhook-Event"] = one_line(n.type)[:100]
    msg["X-Jobhook-Event-Id"] = _ID_UNSAFE.sub("", n.id)[:200]
    msg.set_content(_text(n))
    msg.add_alternative(_html(n), subtype="html")
    return msg


class EmailDestination:
    """Sends `build_message(n, settings.sender, settings.recipients)` with aiosmtplib.

    `smtps://` is TLS from the first byte; `?starttls=true` upgrades a plain connection and fails
    when the server cannot; plain `smtp://` never upgrades. Certificates are verified against the
    system's trust store unless `tls_context` says otherwise (tests pass one that trusts their own
    self-signed certificate).
    """

    name = "email"

    def __init__(self, settings: SmtpSettings, *, tls_context: ssl.SSLContext | None = None) -> None:
        self._settings = settings
        self._tls_context = tls_context

    def __repr__(self) -> str:
        s = self._settings
        return f"EmailDestination(host={s.host!r}, port={s.port!r}, use_tls={s.use_tls}, start_tls={s.start_tls})"

    async def send(self, notification: Notification) -> DeliveryResult:
        s = self._settings
        message = build_message(notification, s.sender, s.recipients)
        redact = (str(s.password),) if s.password else ()
        try:
            errors, _reply = await aiosmtplib.send(
                message,
                sender=s.sender,
                recipients=list(s.recipients),
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=str(s.password) if s.password is not None else None,
                use_tls=s.use_tls,
                start_tls=s.start_tls,
                timeout=s.timeout,
                tls_context=self._tls_context,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            reasons = "; ".join(f"{r.recipient}: {r.code} {one_line(r.message)}" for r in exc.recipients)
            return DeliveryResult(
                ok=False, status=codes[0] if codes else None, error=_scrub(f"all recipients refused: {reasons}", redact)
            )
        except aiosmtplib.SMTPResponseException as exc:
            error = f"SMTP {exc.code}: {one_line(exc.message)}"
            return DeliveryResult(ok=False, status=exc.code, error=_scrub(error, redact))
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            return DeliveryResult(ok=False, error=describe_exception(exc, redact=redact))
        if errors:
            # Some recipients took it, so it must not be sent again (they would get it twice).
            refused = "; ".join(f"{address}: {reply.code}" for address, reply in errors.items())
            return DeliveryResult(ok=True, status=250, error=_scrub(f"some recipients refused: {refused}", redact))
        return DeliveryResult(ok=True, status=250)

    async def aclose(self) -> None:
        return None  # one connection per message: nothing stays open


def _scrub(text: str, redact: tuple[str, ...]) -> str:
    for secret in redact:
        if secret:
            text = text.replace(secret, "<redacted>")
    return shorten(one_line(text), 300)
