"""The three destinations against real servers on loopback: an SMTP server (aiosmtpd: plain, AUTH,
STARTTLS, implicit TLS, refusals), a Slack-like sink and a backend that verifies Standard Webhooks
signatures with the `standardwebhooks` library."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import email
import email.policy
import ipaddress
import json
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from service.config import ForwardSettings, Secret, SmtpSettings
from service.notify import EmailDestination, SlackDestination, WebhookDestination
from service.notify.base import Notification
from tests.fakes.server import serve_asgi
from tests.unit.test_notify_messages import IMAGE, job_json

USERNAME = "jobhook"
PASSWORD = "s3cret-pa55"
SENDER = "jobhook@example.com"
RECIPIENTS = ("ops@example.com", "dev@example.org")
FORWARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def make_notification(type_: str = "job.completed", *, image_url: str | None = None) -> Notification:
    return Notification(
        id="msg_01JX0000000000000000000001",
        type=type_,
        created_at=1795338876.5,
        job=job_json(type_.removeprefix("job."), "a red fox <in> the snow\r\nBcc: x@y.z"),
        provider="aivideoapi",
        detail={},
        image_url=image_url,
        dashboard_url="https://hooks.example.com/dashboard/jobs/job_01JX",
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a certificate of our own -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SelfSignedCert:
    cert_pem: bytes
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifies as usual (hostname included), trusting this one certificate only."""
        return ssl.create_default_context(cadata=self.cert_pem.decode())


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> SelfSignedCert:
    """A self-signed certificate for 127.0.0.1 and localhost, made with `cryptography`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jobhook test smtp")])
    now = dt.datetime.now(tz=dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return SelfSignedCert(cert_pem, cert_file, key_file)


# --- SMTP servers -----------------------------------------------------------------------------


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    authenticated: bool


class RecordingHandler:
    """Keeps every message; can refuse recipients (`rcpt_reply`) or the data (`data_reply`)."""

    def __init__(self, *, rcpt_reply: str | None = None, data_reply: str | None = None) -> None:
        self.received: list[Received] = []
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply is not None:
            return self.data_reply
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        # session.ssl is set by STARTTLS only; an implicit-TLS transport carries an ssl_object.
        transport = server.transport
        implicit_tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        self.received.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
                tls=session.ssl is not None or implicit_tls,
                authenticated=bool(session.authenticated),
            )
        )
        return "250 2.0.0 Message accepted"


def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USERNAME.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[Any]:
    """`start(handler, **smtp_kwargs) -> port`: aiosmtpd servers, stopped after the test."""
    controllers: list[Controller] = []

    def start(handler: RecordingHandler, **kwargs: Any) -> int:
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="localhost", **kwargs)
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()


def connections_to(port: int) -> int:
    """This process's TCP sockets connected to `port` on loopback (from /proc: Linux), whatever state."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].rpartition(":")[2], 16)
        if remote_port == port and fields[9] in inodes:
            count += 1
    return count


async def closed(port: int) -> None:
    """Wait (5 s at most) until no connection of ours to `port` is left: a TLS connection's close ends
    with its close_notify exchange, after `send` has returned. A test that ended first would leave the
    socket to be collected in some later test (an unraisable ResourceWarning there)."""
    for _ in range(100):
        if connections_to(port) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"a connection to port {port} is still open 5 s after the send")


def smtp_settings(port: int, **overrides: Any) -> SmtpSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "username": None,
        "password": None,
        "use_tls": False,
        "start_tls": False,
        "sender": SENDER,
        "recipients": RECIPIENTS,
        "timeout": 5.0,
    }
    values.update(overrides)
    return SmtpSettings(**values)


async def test_email_is_delivered_over_plain_smtp(smtp_server: Any) -> None:
    handler = RecordingHandler()
    port = smtp_server(handler)
    destination = EmailDestination(smtp_settings(port))
    n = make_notification(image_url=IMAGE)
    result = await destination.send(n)
    assert result.ok and result.status == 250 and result.error is None
    [got] = handler.received
    assert got.mail_from == SENDER and got.rcpt_tos == list(RECIPIENTS)
    assert not got.tls and not got.authenticated
    message = got.message
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == "[jobhook] completed: a red fox <in> the snow Bcc: x@y.z"
    assert message["Bcc"] is None
    assert message["Message-ID"] == f"<{n.id}.jobhook@example.com>"
    html = next(part for part in message.iter_parts() if part.get_content_type() == "text/html")
    assert isinstance(html, EmailMessage)
    assert "&lt;in&gt;" in html.get_content() and "<img src=" in html.get_content()
    # A retry is recognisably the same message.
    assert (await destination.send(n)).ok
    assert handler.received[1].message["Message-ID"] == message["Message-ID"]
    await destination.aclose()


async def test_email_with_auth_on_a_plain_connection(smtp_server: Any) -> None:
    handler = RecordingHandler()
    # Offers AUTH without TLS (as some internal relays do). Not `auth_required` too: aiosmtpd warns
    # about requiring AUTH without TLS, and the test suite turns warnings into errors.
    port = smtp_server(handler, authenticator=authenticator, auth_require_tls=False)
    good = EmailDestination(smtp_settings(port, username=USERNAME, password=Secret(PASSWORD)))
    assert (await good.send(make_notification())).ok
    assert handler.received[0].authenticated
    bad = await EmailDestination(smtp_settings(port, username=USERNAME, password=Secret("wrong"))).send(
        make_notification()
    )
    assert not bad.ok and bad.status == 535
    assert "wrong" not in (bad.error or "")


async def test_email_over_starttls_with_auth(smtp_server: Any, tls_cert: SelfSignedCert) -> None:
    handler = RecordingHandler()
    port = smtp_server(
        handler,
        tls_context=tls_cert.server_context(),
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    settings = smtp_settings(port, username=USERNAME, password=Secret(PASSWORD), start_tls=True)
    result = await EmailDestination(settings, tls_context=tls_cert.client_context()).send(make_notification())
    assert result.ok, result
    [got] = handler.received
    assert got.tls and got.authenticated
    # The wrong password: the server's 535, and never the password in the error.
    wrong = dataclasses.replace(settings, password=Secret("not-the-password"))
    result = await EmailDestination(wrong, tls_context=tls_cert.client_context()).send(make_notification())
    assert not result.ok and result.status == 535
    assert "not-the-password" not in (result.error or "")
    # smtp:// without ?starttls=true never upgrades: this server offers no AUTH before TLS.
    plain = dataclasses.replace(settings, start_tls=False)
    result = await EmailDestination(plain, tls_context=tls_cert.client_context()).send(make_notification())
    assert not result.ok and "STARTTLS" in (result.error or "")
    assert len(handler.received) == 1
    await closed(port)


async def test_email_over_implicit_tls(smtp_server: Any, tls_cert: SelfSignedCert) -> None:
    handler = RecordingHandler()
    # aiosmtpd does not know that a connection it accepted with `ssl_context` is TLS, so it offers
    # AUTH there only with auth_require_tls=False (and auth_required would then warn in its thread).
    port = smtp_server(
        handler, ssl_context=tls_cert.server_context(), authenticator=authenticator, auth_require_tls=False
    )
    settings = smtp_settings(port, username=USERNAME, password=Secret(PASSWORD), use_tls=True)
    result = await EmailDestination(settings, tls_context=tls_cert.client_context()).send(make_notification())
    assert result.ok, result
    assert handler.received[0].tls and handler.received[0].authenticated
    await closed(port)


async def test_email_verifies_certificates_by_default(smtp_server: Any, tls_cert: SelfSignedCert) -> None:
    handler = RecordingHandler()
    port = smtp_server(handler, ssl_context=tls_cert.server_context())
    result = await EmailDestination(smtp_settings(port, use_tls=True)).send(make_notification())
    assert not result.ok and result.status is None
    await closed(port)
    assert "CERTIFICATE_VERIFY_FAILED" in (result.error or "") or "certificate" in (result.error or "").lower()
    assert handler.received == []


@pytest.mark.parametrize(
    ("handler", "status"),
    [
        (RecordingHandler(rcpt_reply="550 5.1.1 No such user here"), 550),
        (RecordingHandler(data_reply="554 5.7.1 Message rejected as spam"), 554),
        (RecordingHandler(data_reply="451 4.3.0 Try again later"), 451),
    ],
    ids=["rcpt-550", "data-554", "data-451"],
)
async def test_email_smtp_refusals_report_the_code(smtp_server: Any, handler: RecordingHandler, status: int) -> None:
    port = smtp_server(handler)
    result = await EmailDestination(smtp_settings(port)).send(make_notification())
    assert not result.ok
    assert result.status == status
    assert str(status) in (result.error or "")


async def test_email_one_recipient_refused_still_counts_as_sent(smtp_server: Any) -> None:
    class PickyHandler(RecordingHandler):
        async def handle_RCPT(
            self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
        ) -> str:
            if address == RECIPIENTS[1]:
                return "550 5.1.1 No such user here"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    handler = PickyHandler()
    port = smtp_server(handler)
    result = await EmailDestination(smtp_settings(port)).send(make_notification())
    assert result.ok and result.error is not None and "550" in result.error
    assert handler.received[0].rcpt_tos == [RECIPIENTS[0]]


async def test_email_to_a_closed_port() -> None:
    result = await EmailDestination(smtp_settings(free_port())).send(make_notification())
    assert not result.ok and result.status is None and result.error


async def test_email_to_a_server_that_never_greets() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # says nothing, ever

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await EmailDestination(smtp_settings(port, timeout=0.3)).send(make_notification())
        for writer in writers:
            writer.close()
            await writer.wait_closed()
    assert not result.ok and result.status is None
    assert "Timeout" in (result.error or "") or "timed out" in (result.error or "").lower()


# --- Slack ------------------------------------------------------------------------------------

SLACK_PATH = "/services/T0000TEST/B0000TEST/sup3rs3cr3tt0k3n"


@dataclasses.dataclass
class Sink:
    url: str
    requests: list[dict[str, Any]]
    replies: list[Response]  # answered in order; the last one repeats


@pytest.fixture
async def slack_sink() -> AsyncIterator[Sink]:
    requests: list[dict[str, Any]] = []
    replies: list[Response] = [PlainTextResponse("ok")]

    async def hook(request: Request) -> Response:
        requests.append({"headers": dict(request.headers), "json": json.loads(await request.body())})
        return replies.pop(0) if len(replies) > 1 else replies[0]

    app = Starlette(routes=[Route(SLACK_PATH, hook, methods=["POST"])])
    async with serve_asgi(app) as base:
        yield Sink(base + SLACK_PATH, requests, replies)


async def test_slack_delivers_block_kit(slack_sink: Sink) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        destination = SlackDestination(slack_sink.url, client)
        result = await destination.send(make_notification(image_url=IMAGE))
        await destination.aclose()
    assert result.ok and result.status == 200
    [request] = slack_sink.requests
    assert request["headers"]["content-type"] == "application/json"
    payload = request["json"]
    assert payload["blocks"][0]["text"]["text"] == "✅ Job completed"
    assert any(block["type"] == "image" and block["image_url"] == IMAGE for block in payload["blocks"])
    assert "sup3rs3cr3tt0k3n" not in repr(destination)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            PlainTextResponse("rate_limited", status_code=429, headers={"Retry-After": "7"}),
            {"status": 429, "retry_after": 7.0, "gone": False, "error": "HTTP 429: rate_limited"},
        ),
        (
            PlainTextResponse("invalid_payload", status_code=400),
            {"status": 400, "retry_after": None, "gone": False, "error": "HTTP 400: invalid_payload"},
        ),
        (
            PlainTextResponse("x" * 5000, status_code=500),
            {"status": 500, "retry_after": None, "gone": False, "error": "HTTP 500: " + "x" * 199 + "…"},
        ),
        (
            PlainTextResponse("channel_is_archived", status_code=410),
            {"status": 410, "retry_after": None, "gone": True, "error": "HTTP 410: channel_is_archived"},
        ),
    ],
    ids=["429", "400", "500", "410"],
)
async def test_slack_refusals(slack_sink: Sink, reply: Response, expected: dict[str, Any]) -> None:
    slack_sink.replies[:] = [reply]
    async with httpx.AsyncClient(timeout=5) as client:
        result = await SlackDestination(slack_sink.url, client).send(make_notification())
    assert not result.ok
    assert {key: getattr(result, key) for key in expected} == expected
    assert "sup3rs3cr3tt0k3n" not in (result.error or "")


async def test_slack_resends_without_an_image_it_could_not_fetch(slack_sink: Sink) -> None:
    slack_sink.replies[:] = [PlainTextResponse("invalid_blocks", status_code=400), PlainTextResponse("ok")]
    async with httpx.AsyncClient(timeout=5) as client:
        result = await SlackDestination(slack_sink.url, client).send(make_notification(image_url=IMAGE))
    assert result.ok
    first, second = (request["json"]["blocks"] for request in slack_sink.requests)
    assert any(block["type"] == "image" for block in first)
    assert not any(block["type"] == "image" for block in second)
    assert "View the image" in json.dumps(second)


async def test_slack_connection_errors_never_show_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}{SLACK_PATH}"
    async with httpx.AsyncClient(timeout=2) as client:
        result = await SlackDestination(url, client).send(make_notification())
    assert not result.ok and result.status is None and result.error
    assert "sup3rs3cr3tt0k3n" not in result.error and "127.0.0.1" not in result.error


async def test_slack_timeouts_are_failures(slack_sink: Sink) -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(2)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route(SLACK_PATH, slow, methods=["POST"])])
    async with serve_asgi(app) as base, httpx.AsyncClient(timeout=0.2) as client:
        result = await SlackDestination(base + SLACK_PATH, client).send(make_notification())
    assert not result.ok and result.status is None
    assert "Timeout" in (result.error or "")
    assert "sup3rs3cr3tt0k3n" not in (result.error or "")


# --- the backend's webhook --------------------------------------------------------------------


@dataclasses.dataclass
class Delivery:
    id: str
    timestamp: str
    body: bytes
    payload: Any


@pytest.fixture
async def backend_sink() -> AsyncIterator[tuple[str, list[Delivery], list[Response]]]:
    """A backend that verifies each delivery with `standardwebhooks` (401 when it does not verify)."""
    verifier = Webhook(FORWARD_SECRET)
    deliveries: list[Delivery] = []
    replies: list[Response] = [Response(status_code=204)]

    async def hook(request: Request) -> Response:
        body = await request.body()
        try:
            payload = verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            return PlainTextResponse(f"bad signature: {exc}", status_code=401)
        assert request.headers["content-type"] == "application/json"
        deliveries.append(Delivery(request.headers["webhook-id"], request.headers["webhook-timestamp"], body, payload))
        return replies.pop(0) if len(replies) > 1 else replies[0]

    app = Starlette(routes=[Route("/hooks/jobhook", hook, methods=["POST"])])
    async with serve_asgi(app) as base:
        yield base + "/hooks/jobhook", deliveries, replies


async def test_webhook_is_signed_and_retries_are_the_same_event(
    backend_sink: tuple[str, list[Delivery], list[Response]],
) -> None:
    url, deliveries, replies = backend_sink
    replies[:] = [PlainTextResponse("busy", status_code=503), Response(status_code=200)]
    now = [time.time()]
    async with httpx.AsyncClient(timeout=5) as client:
        destination = WebhookDestination(ForwardSettings(url, Secret(FORWARD_SECRET)), client, clock=lambda: now[0])
        n = make_notification()
        first = await destination.send(n)
        now[0] += 2
        second = await destination.send(n)
        await destination.aclose()
    assert not first.ok and first.status == 503 and first.error == "HTTP 503: busy"
    assert second.ok and second.status == 200
    assert len(deliveries) == 2
    assert deliveries[0].id == deliveries[1].id == n.id
    assert deliveries[0].body == deliveries[1].body
    assert int(deliveries[1].timestamp) == int(deliveries[0].timestamp) + 2
    assert deliveries[0].payload == {"type": "job.completed", "timestamp": "2026-11-22T09:14:36.500Z", "data": n.job}


async def test_webhook_provider_event(backend_sink: tuple[str, list[Delivery], list[Response]]) -> None:
    url, deliveries, _ = backend_sink
    n = Notification(
        id="msg_01JX0000000000000000000009",
        type="provider.credits_low",
        created_at=1795338876.5,
        job=None,
        provider="segmind",
        detail={"credits": 12.0, "threshold": 20.0},
    )
    async with httpx.AsyncClient(timeout=5) as client:
        result = await WebhookDestination(ForwardSettings(url, Secret(FORWARD_SECRET)), client).send(n)
    assert result.ok and result.status == 204
    assert deliveries[0].payload["data"] == {"provider": "segmind", "credits": 12.0, "threshold": 20.0}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Response(status_code=410), {"ok": False, "status": 410, "gone": True, "retry_after": None}),
        (
            PlainTextResponse("slow down", status_code=429, headers={"Retry-After": "30"}),
            {"ok": False, "status": 429, "gone": False, "retry_after": 30.0},
        ),
        (Response(status_code=200), {"ok": True, "status": 200, "gone": False, "retry_after": None}),
    ],
    ids=["410", "429", "200"],
)
async def test_webhook_answers(
    backend_sink: tuple[str, list[Delivery], list[Response]], reply: Response, expected: dict[str, Any]
) -> None:
    url, deliveries, replies = backend_sink
    replies[:] = [reply]
    async with httpx.AsyncClient(timeout=5) as client:
        result = await WebhookDestination(ForwardSettings(url, Secret(FORWARD_SECRET)), client).send(
            make_notification()
        )
    assert {key: getattr(result, key) for key in expected} == expected
    assert len(deliveries) == 1  # it did verify


async def test_webhook_signed_with_another_secret_is_refused_by_the_backend(
    backend_sink: tuple[str, list[Delivery], list[Response]],
) -> None:
    url, deliveries, _ = backend_sink
    other = ForwardSettings(url, Secret("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"))
    async with httpx.AsyncClient(timeout=5) as client:
        result = await WebhookDestination(other, client).send(make_notification())
    assert not result.ok and result.status == 401
    assert deliveries == []


async def test_webhook_connection_refused() -> None:
    settings = ForwardSettings(f"http://127.0.0.1:{free_port()}/hooks", Secret(FORWARD_SECRET))
    async with httpx.AsyncClient(timeout=2) as client:
        result = await WebhookDestination(settings, client).send(make_notification())
    assert not result.ok and result.status is None and "ConnectError" in (result.error or "")
