"""Sending a provider's WireRequest over HTTP, telling apart "never sent" from "sent, no answer".

That difference is what keeps a job from being created twice at a provider: a request that never
left may be retried; one that left and got no answer must not be (SPEC §3).
"""

from __future__ import annotations

import asyncio
import dataclasses

import httpx

from service.providers.base import WireRequest, WireResponse

USER_AGENT = "jobhook/0.1"


class NotSent(Exception):
    """The request never reached the provider (refused, unresolvable, no connection in time)."""


class Uncertain(Exception):
    """The request may have reached the provider, but no answer came back."""


# Bounds on an answer's body: a synchronous provider's images (up to 8, possibly base64), or a task.
MAX_SUBMIT_ANSWER_BYTES = 128 * 1024 * 1024
MAX_POLL_ANSWER_BYTES = 16 * 1024 * 1024


def deadline(timeout: float) -> float:
    """The whole exchange's bound for a client whose per-step timeout is `timeout`.

    httpx's timeout bounds each step (connect, each read), not the call: a provider trickling one
    byte per step would hold a call open for ever, past the lease that keeps it from being made
    twice (SPEC §3). A little over `timeout`, so that a connect timeout still reads as "never sent",
    and within the leases of service.engine (a submission's: timeout + min(30, max(1, timeout));
    a poll's: 45 s for at most 30 s).
    """
    return timeout + 0.25 * min(30.0, max(1.0, timeout))


class ProviderHTTP:
    """One provider's base URL and credentials, and two connection pools.

    Submissions go over fresh connections: a pooled keep-alive connection that the server closed
    while idle would turn a harmless resend into an "uncertain" submission.
    """

    def __init__(
        self,
        base_url: str,
        auth_headers: dict[str, str],
        *,
        timeout: float,
        submit_timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`transport`: for tests (httpx.MockTransport); by default, the network."""
        headers = {"User-Agent": USER_AGENT, **auth_headers}
        self.base_url = base_url.rstrip("/")
        self._credentials = _credentials(auth_headers)
        self._deadlines = (deadline(timeout), deadline(submit_timeout))
        self._polls = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)
        self._submits = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=submit_timeout,
            limits=httpx.Limits(max_keepalive_connections=0),
            transport=transport,
        )

    async def send(self, wire: WireRequest, *, submission: bool = False) -> WireResponse:
        client = self._submits if submission else self._polls
        limit = MAX_SUBMIT_ANSWER_BYTES if submission else MAX_POLL_ANSWER_BYTES
        try:
            async with asyncio.timeout(self._deadlines[submission]):
                return self._scrubbed(await self._exchange(client, wire, limit))
        except httpx.InvalidURL as exc:  # built from what a client or provider sent: it never left
            raise NotSent(_describe(exc)) from exc
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol) as exc:
            raise NotSent(_describe(exc)) from exc
        except httpx.LocalProtocolError as exc:
            raise NotSent(_describe(exc)) from exc
        except httpx.HTTPError as exc:
            raise Uncertain(_describe(exc)) from exc
        except TimeoutError:
            raise Uncertain(f"no whole answer within {self._deadlines[submission]:g} s") from None

    @staticmethod
    async def _exchange(client: httpx.AsyncClient, wire: WireRequest, limit: int) -> WireResponse:
        async with client.stream(wire.method, wire.path, json=wire.json) as response:
            declared = response.headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > limit:
                raise Uncertain(f"the answer declares {declared} bytes, over the {limit} accepted")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():  # decoded: a gzip bomb counts at its true size
                size += len(chunk)
                if size > limit:
                    raise Uncertain(f"the answer exceeds {limit} bytes")
                chunks.append(chunk)
        return WireResponse(
            status=response.status_code,
            headers={key.lower(): value for key, value in response.headers.items()},
            body=b"".join(chunks),
        )

    def _scrubbed(self, response: WireResponse) -> WireResponse:
        """The answer without our own API key in it: a provider's error message may quote the key it
        refused ("Invalid API key sk-…"), and that message goes on to the job, the log and Slack."""
        if response.content_type.startswith("image/") or not any(key in response.body for key in self._credentials):
            return response
        body = response.body
        for key in self._credentials:
            body = body.replace(key, b"[redacted]")
        return dataclasses.replace(response, body=body)

    async def aclose(self) -> None:
        await self._polls.aclose()
        await self._submits.aclose()


def _credentials(auth_headers: dict[str, str]) -> tuple[bytes, ...]:
    """The secrets in our auth headers: each value, and the key after a scheme ("Bearer sk-…")."""
    found = set()
    for value in auth_headers.values():
        for candidate in (value, value.rpartition(" ")[2]):
            if len(candidate) >= 8:  # a short value could be any word of a message
                found.add(candidate.encode("utf-8"))
    return tuple(sorted(found, key=len, reverse=True))  # longest first: "Bearer sk-x" before "sk-x"


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
