"""Copies of completed jobs' images under JOBHOOK_MEDIA_DIR (providers' URLs expire), fetched safely.

The image URLs come from callbacks and polls, so whoever can send one names what jobhook fetches
(server-side request forgery). Every connection is therefore made to an address judged first
(service.domain.addresses): the name is resolved once, every address it resolves to is judged, and
the connection goes to the judged address itself, so that a name cannot be re-pointed between the
check and the connection (DNS rebinding); the Host header and TLS's server name stay the URL's name.
Redirects are followed here, not by the HTTP client: each hop is a new connection judged the same
way, at most MAX_REDIRECTS of them. A refused download is final; other failures are retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpcore
import httpx

from service.domain import addresses, backoff
from service.domain.work import Lane, WorkKind
from service.errors import JobhookError
from service.media import MediaFile, MediaStore
from service.providers.base import ImageBytes, sniff
from service.providers.http import USER_AGENT
from service.store.common import Store

log = logging.getLogger("jobhook")

MIRROR_ATTEMPTS = 8
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 3
# One image, every hop included: a server that trickles bytes cannot hold a download slot for ever.
DOWNLOAD_DEADLINE = 120.0
# One run over a job's images, all of them: the poller leases a mirror row for MIRROR_LEASE, so a run
# must end well before another replica (or this one) may claim the same row again. Images not reached
# in time are left to the next attempt.
RUN_DEADLINE = DOWNLOAD_DEADLINE
MIRROR_LEASE = RUN_DEADLINE + 30.0
STEP_TIMEOUTS = {"connect": 10.0, "read": 60.0, "write": 60.0, "pool": 60.0}
REDIRECTS = frozenset({301, 302, 303, 307, 308})
REFUSED_ADDRESS = "address not allowed"
# The built-in simulator's image files (service.simulator: /files/{task_id}.{ext}): one path segment.
_OWN_FILE = re.compile(rb"[A-Za-z0-9-]+\.[A-Za-z0-9]+")

Resolver = Callable[[str, int], Awaitable[list[str]]]


class DownloadError(JobhookError):
    """An image could not be fetched for mirroring (unreachable, too large, not an image): retried."""


class Refused(DownloadError):
    """jobhook will not fetch this image at all (an address not allowed, too many redirects): final."""

    def __init__(self, message: str, host: str) -> None:
        super().__init__(message)
        self.host = host


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, once each."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[str] = []
    for family, _, _, _, sockaddr in infos:
        address = str(sockaddr[0])
        if family in (socket.AF_INET, socket.AF_INET6) and address not in found:
            found.append(address)
    return found


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, but it connects only to addresses `addresses.judge` allows.

    The TCP connection is made to the judged IP address; httpcore then starts TLS with the URL's
    name (SNI and certificate check), and the request carries the URL's Host header.
    """

    def __init__(self, allow: Iterable[addresses.IPNetwork], resolver: Resolver = resolve) -> None:
        self.allow = tuple(allow)
        self._resolve = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                found = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout:g} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        if not found:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        # Every address, not only the first: a name that also leads inside is refused whole.
        for address in found:
            verdict = addresses.judge(address, self.allow)
            if not verdict.allowed:
                log.info("mirror: %s refused: %s is %s", host, address, verdict.reason)
                raise Refused(REFUSED_ADDRESS, host)
        failure: Exception | None = None
        for address in found:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise Refused(REFUSED_ADDRESS, "unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class Downloader:
    """Fetches one image at a time: at most MAX_IMAGE_BYTES, really an image, from allowed addresses.

    `own_prefix` (per call) is where the built-in simulator, part of this jobhook, serves its images:
    URLs of that exact origin and shape are fetched without the address check, so that the demo's
    images on loopback mirror without JOBHOOK_MIRROR_ALLOW_NETWORKS.
    """

    def __init__(self, allow: Iterable[addresses.IPNetwork], *, resolver: Resolver = resolve) -> None:
        ssl_context = httpx.create_ssl_context()
        # No proxy from the environment: a proxy would make the connection, past the address check.
        self._guarded = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, network_backend=GuardedBackend(allow, resolver), keepalive_expiry=5.0
        )
        self._own = httpcore.AsyncConnectionPool(ssl_context=ssl_context, keepalive_expiry=5.0)

    async def aclose(self) -> None:
        await self._guarded.aclose()
        await self._own.aclose()

    async def fetch(self, url: str, *, own_prefix: str | None = None, within: float = DOWNLOAD_DEADLINE) -> ImageBytes:
        """The image at `url`, every hop included within `within` seconds (at most DOWNLOAD_DEADLINE)."""
        limit = min(within, DOWNLOAD_DEADLINE)
        try:
            async with asyncio.timeout(limit):
                return await self._follow(url, own_prefix)
        except TimeoutError:
            raise DownloadError(f"not done within {limit:g} s") from None

    async def _follow(self, url: str, own_prefix: str | None) -> ImageBytes:
        target = _http_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            pool = self._own if own_prefix is not None and _is_own(target, own_prefix) else self._guarded
            answer = await self._get(pool, target)
            if isinstance(answer, ImageBytes):
                return answer
            target = answer
        raise Refused(f"more than {MAX_REDIRECTS} redirects", target.host)

    async def _get(self, pool: httpcore.AsyncConnectionPool, target: httpx.URL) -> ImageBytes | httpx.URL:
        """The image at `target`, or where it redirects to."""
        url = httpcore.URL(scheme=target.raw_scheme, host=target.raw_host, port=target.port, target=target.raw_path)
        headers = [(b"Host", target.netloc), (b"User-Agent", USER_AGENT.encode()), (b"Accept", b"image/*")]
        try:
            async with pool.stream(b"GET", url, headers=headers, extensions={"timeout": STEP_TIMEOUTS}) as response:
                if response.status in REDIRECTS:
                    location = _header(response.headers, b"location")
                    if location is None:
                        raise DownloadError(f"HTTP {response.status} without a Location")
                    return _http_url(location, base=target)
                if response.status != 200:
                    raise DownloadError(f"HTTP {response.status}")
                declared = _header(response.headers, b"content-length") or ""
                if declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
                    raise DownloadError(f"larger than {MAX_IMAGE_BYTES} bytes")
                chunks, size = [], 0
                async for chunk in response.aiter_stream():
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise DownloadError(f"larger than {MAX_IMAGE_BYTES} bytes")
                    chunks.append(chunk)
        except (
            httpcore.TimeoutException,
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
        ) as exc:
            raise DownloadError(f"{type(exc).__name__}: {exc}") from None
        data = b"".join(chunks)
        kind = sniff(data)
        if kind is None:
            raise DownloadError("the answer is not a PNG, JPEG or WebP image")
        return ImageBytes(data, kind)


def _http_url(text: str, base: httpx.URL | None = None) -> httpx.URL:
    try:
        url = base.join(text) if base is not None else httpx.URL(text)
    except httpx.InvalidURL:
        raise Refused("not an http(s) URL", "") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise Refused("not an http(s) URL", url.host)
    return url


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _is_own(target: httpx.URL, prefix: str) -> bool:
    """Is `target` one of the images jobhook's own simulator serves under `prefix`?"""
    own = httpx.URL(prefix)
    if (target.scheme, target.host, target.port) != (own.scheme, own.host, own.port):
        return False
    return target.raw_path.startswith(own.raw_path) and bool(_OWN_FILE.fullmatch(target.raw_path[len(own.raw_path) :]))


class Mirror:
    """Downloads a completed job's images into the media directory, as its 'mirror' row comes due."""

    def __init__(
        self,
        store: Store,
        media: MediaStore,
        downloader: Downloader,
        *,
        own_images: Mapping[str, str],
        nudge: Callable[[float], None],
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        """`own_images`: provider name → the URL prefix under which jobhook itself serves its images."""
        self.store = store
        self.media = media
        self.downloader = downloader
        self.own_images = own_images
        self._nudge = nudge
        self.clock = clock
        self.rng = rng

    async def aclose(self) -> None:
        await self.downloader.aclose()

    async def run(self, job_id: str, attempt: int) -> None:
        job = await self.store.get_job(job_id)
        if job is None:
            return
        missing = [index for index in range(len(job.images)) if job.held(index) is None]
        if attempt > 0 and missing:
            refused_before = await self._refused_before(job_id)
            missing = [index for index in missing if index not in refused_before]
        held: dict[int, MediaFile] = {}
        errors: dict[str, str] = {}
        refused: dict[str, dict[str, str]] = {}
        ends = time.monotonic() + RUN_DEADLINE
        for index in missing:
            left = ends - time.monotonic()
            if left <= 0:
                errors[str(index)] = f"not reached within this run's {RUN_DEADLINE:g} s"
                continue
            try:
                image = await self.downloader.fetch(
                    job.images[index], own_prefix=self.own_images.get(job.provider), within=left
                )
                held[index] = await self.media.save(job.id, index, image.data, image.content_type)
            except Refused as exc:
                # The host only: a URL's query may hold a credential (a signed link).
                refused[str(index)] = {"host": exc.host, "message": str(exc)}
                log.warning("mirror %s: image %d refused: %s (host %s)", job.id, index, exc, exc.host)
            except DownloadError as exc:
                errors[str(index)] = str(exc)
            except OSError as exc:  # the media directory is full, read-only or not a directory
                errors[str(index)] = f"cannot keep the image: {exc.strerror or exc}"
                log.warning("mirror %s: cannot keep image %d under JOBHOOK_MEDIA_DIR: %s", job.id, index, exc)
        if held or not (errors or refused):
            await self.store.record_media(job.id, held, {"attempt": attempt + 1})
        elif not errors:
            await self.store.unschedule(job.id, WorkKind.MIRROR)
        if refused:
            # Final: the job keeps the provider's URL, and nothing is tried again for these images.
            await self.store.note(job.id, "mirror", "refused", {"attempt": attempt + 1, "refused": refused})
        if not errors:
            return
        if attempt + 1 >= MIRROR_ATTEMPTS:
            await self.store.unschedule(job.id, WorkKind.MIRROR)
            await self.store.note(job.id, "mirror", "gave_up", {"attempts": attempt + 1, "errors": errors})
            log.warning("mirror %s: gave up after %d attempts", job.id, attempt + 1)
            return
        wait = backoff.delay(attempt, 5.0, 600.0, self.rng)
        event = ("mirror", "retry", {"attempt": attempt + 1, "errors": errors, "retry_in": round(wait, 1)})
        await self.store.reschedule(job.id, WorkKind.MIRROR, Lane.MIRROR, self.clock() + wait, attempt + 1, event)
        self._nudge(self.clock() + wait)

    async def _refused_before(self, job_id: str) -> set[int]:
        """Images an earlier attempt refused: a retry (for the others' sake) leaves them alone."""
        return {
            int(index)
            for event in await self.store.events(job_id)
            if event.type == "mirror" and event.outcome == "refused"
            for index in event.detail.get("refused", {})
        }
