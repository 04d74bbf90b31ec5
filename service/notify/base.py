"""What every notification destination shares (SPEC §6): the event, the result of one attempt, and
the wording helpers that Slack and email both use. Pure: no I/O here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import math
import re
from collections.abc import Mapping
from typing import Any, Protocol

JOB_EVENTS = ("job.completed", "job.failed", "job.timed_out")
PROVIDER_EVENTS = (
    "provider.callbacks_degraded",
    "provider.callbacks_recovered",
    "provider.credits_low",
    "provider.circuit_opened",
    "provider.circuit_closed",
)
BUDGET_EVENTS = ("budget.exhausted",)  # SPEC §9: `detail` is scope, cap, spent, reserved, reset_at
EVENT_TYPES = JOB_EVENTS + PROVIDER_EVENTS + BUDGET_EVENTS


@dataclasses.dataclass(frozen=True)
class Notification:
    """One event to tell a destination about; the same object (same `id`) on every retry."""

    id: str  # "msg_…": the event id = Standard Webhooks webhook-id, the same on every retry
    type: str  # one of EVENT_TYPES
    created_at: float  # unix seconds of the event
    job: Mapping[str, Any] | None  # the job JSON (SPEC §2 shape) for job.* events, else None
    provider: str | None  # the provider of a provider.* event (and of the job)
    detail: Mapping[str, Any]  # provider events: e.g. {"credits": 12.0, "threshold": 20.0} or {"polled_in_a_row": 3}
    image_url: str | None = None  # the best public image URL for people (a mirrored copy if ready), else None
    dashboard_url: str | None = None  # a link for people to the job, if known

    @property
    def is_job_event(self) -> bool:
        return self.type.startswith("job.")


@dataclasses.dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one delivery attempt. `send` reports failures here rather than raising."""

    ok: bool
    status: int | None = None  # HTTP status (or SMTP reply code) when there was an answer
    error: str | None = None  # short reason when not ok (never a secret, never the Slack URL)
    retry_after: float | None = None  # seconds asked for by a 429 Retry-After
    gone: bool = False  # the destination said it is gone for good (HTTP 410): stop until resent


class Destination(Protocol):
    name: str  # "slack" | "email" | "webhook"

    async def send(self, notification: Notification) -> DeliveryResult: ...

    async def aclose(self) -> None: ...


# --- wording shared by the messages for people -------------------------------------------------

_WHITESPACE = re.compile(r"\s+")


def one_line(text: str) -> str:
    """Every run of whitespace (newlines, tabs, U+2028 …) as one space, control characters dropped."""
    cleaned = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in text)
    return _WHITESPACE.sub(" ", cleaned).strip()


_BLANK_LINES = re.compile(r"\n{3,}")


def multiline(text: str) -> str:
    """Text kept on its lines: `\r\n`/`\r`/U+2028 as `\n`, other control characters as spaces."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    cleaned = "".join(ch if ch == "\n" or ch.isprintable() else " " for ch in text)
    return _BLANK_LINES.sub("\n\n", cleaned).strip()


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending with "…" when it was cut."""
    if limit < 1:
        return ""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def job_status(n: Notification) -> str:
    """The status the event announces: `completed` for job.completed, else the job's own."""
    if n.type in JOB_EVENTS:
        return n.type.removeprefix("job.")
    job = n.job or {}
    return str(job.get("status") or n.type)


def prompt_of(n: Notification) -> str:
    request = (n.job or {}).get("request")
    prompt = request.get("prompt") if isinstance(request, Mapping) else None
    return str(prompt) if prompt is not None else ""


def tier_of(n: Notification) -> str:
    request = (n.job or {}).get("request")
    speed = request.get("rendering_speed") if isinstance(request, Mapping) else None
    return str(speed) if speed else "default"


def provider_of(n: Notification) -> str:
    if n.provider:
        return n.provider
    provider = (n.job or {}).get("provider")
    return str(provider) if provider else "—"


def parse_time(value: Any) -> float | None:
    """RFC 3339 (`2026-11-22T09:11:31.123Z`) or unix seconds → unix seconds; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def duration_of(n: Notification) -> float | None:
    """Seconds from the job's creation to its end (its `finished_at`, else the event's time)."""
    job = n.job or {}
    start = parse_time(job.get("created_at"))
    end = parse_time(job.get("finished_at"))
    if end is None:
        end = n.created_at
    if start is None or end < start:
        return None
    return end - start


def humanise_duration(seconds: float | None) -> str:
    """`0.4 s`, `22 s`, `3 min 5 s`, `2 h 4 min`, `3 d 1 h`; `—` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    if seconds < 10:
        text = f"{seconds:.1f}".removesuffix(".0")
        return f"{text} s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def format_cost(value: Any) -> str:
    """`$0.08`, `$0.035`, `$1.00`; `—` when unknown."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "—"
    text = f"{value:.4f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def error_of(n: Notification) -> tuple[str, str] | None:
    """The job's (code, message) for a failed or timed-out job."""
    error = (n.job or {}).get("error")
    if not isinstance(error, Mapping):
        return None
    return str(error.get("code") or "error"), str(error.get("message") or "")


def format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def label(key: str) -> str:
    """`polled_in_a_row` → `Polled in a row`."""
    text = key.replace("_", " ").strip()
    return text[:1].upper() + text[1:] if text else key


def provider_title(n: Notification) -> str:
    """The heading for a provider (or budget) event, without an emoji."""
    provider = provider_of(n)
    if n.type == "budget.exhausted":
        scope = n.detail.get("scope")
        return "Daily budget spent: all providers" if scope == "total" else f"Daily budget spent: {provider}"
    titles = {
        "provider.callbacks_degraded": f"Callbacks degraded: {provider}",
        "provider.callbacks_recovered": f"Callbacks recovered: {provider}",
        "provider.credits_low": f"Credits low: {provider}",
        "provider.circuit_opened": f"Circuit open: {provider}",
        "provider.circuit_closed": f"Circuit closed: {provider}",
    }
    return titles.get(n.type, f"{n.type}: {provider}")


def provider_summary(n: Notification) -> str:
    """One or two sentences that say what a provider event means."""
    provider = provider_of(n)
    detail = n.detail
    if n.type == "provider.callbacks_degraded":
        count = detail.get("polled_in_a_row")
        head = (
            f"{format_value(count)} jobs in a row from {provider} were finished by polling; their callbacks never came."
            if count is not None
            else f"Jobs from {provider} are being finished by polling; their callbacks are not coming."
        )
        return head + " jobhook keeps polling, so jobs still finish, only later."
    if n.type == "provider.callbacks_recovered":
        return f"Callbacks from {provider} are arriving again."
    if n.type == "provider.credits_low":
        credits, threshold = detail.get("credits"), detail.get("threshold")
        if credits is not None and threshold is not None:
            return (
                f"The {provider} balance is {format_value(credits)} credits, under the threshold of "
                f"{format_value(threshold)} (JOBHOOK_CREDITS_LOW). Top it up before jobs are refused."
            )
        return f"The {provider} balance is low. Top it up before jobs are refused."
    if n.type == "provider.circuit_opened":
        return _circuit_opened(provider, detail)
    if n.type == "provider.circuit_closed":
        return f"{provider} took a job again: its circuit is closed, and the jobs that waited for it are sent."
    if n.type == "budget.exhausted":
        return _budget_exhausted(provider, detail)
    return f"{n.type} for {provider}."


def _budget_exhausted(provider: str, detail: Mapping[str, Any]) -> str:
    whose = "The daily budget of all providers" if detail.get("scope") == "total" else f"{provider}'s daily budget"
    cap, spent, reset = detail.get("cap"), detail.get("spent"), detail.get("reset_at")
    figures = f" (${format_value(cap)}; ${format_value(spent)} spent)" if cap is not None and spent is not None else ""
    return (
        f"{whose}{figures} refused a job today. jobhook sends nothing it cannot hold under the cap until it "
        f"resets{f' at {reset}' if reset else ''}: new submissions are answered 429, queued jobs wait."
    )


def _circuit_opened(provider: str, detail: Mapping[str, Any]) -> str:
    failures, reason, until = detail.get("failures_in_a_row"), detail.get("reason"), detail.get("until")
    why = f"{format_value(failures)} attempts in a row failed ({reason})" if failures is not None else "attempts failed"
    if detail.get("probe_failed"):
        why = f"the trial job after the cooldown failed too ({reason})"
    when = f" until {until}" if until else ""
    return (
        f"{provider}: {why}. jobhook sends it nothing{when}; its jobs wait queued, then one job tries it,"
        " and its success closes the circuit."
    )


def is_http_url(url: str | None) -> bool:
    """Only http(s) URLs without whitespace are ever shown as links or images."""
    if not url:
        return False
    lowered = url.lower()
    return lowered.startswith(("http://", "https://")) and url.isprintable() and not any(ch.isspace() for ch in url)


# --- reading an answer -------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) → seconds from now, never negative."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        reference = dt.datetime.now(tz=dt.UTC).timestamp() if now is None else now
        seconds = moment.timestamp() - reference
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def short_body(body: bytes, limit: int = 200) -> str:
    """An answer's body as one short printable line (Slack's `invalid_payload`, a backend's reason)."""
    return shorten(one_line(body.decode("utf-8", errors="replace")), limit)


def describe_exception(exc: BaseException, *, redact: tuple[str, ...] = ()) -> str:
    """`ConnectError: [Errno 111] Connection refused`, with every string in `redact` removed."""
    text = str(exc).strip()
    for secret in redact:
        if secret:
            text = text.replace(secret, "<redacted>")
    name = type(exc).__name__
    return shorten(one_line(f"{name}: {text}" if text else name), 300)
