"""Sending a provider's WireRequest over HTTP, telling apart "never sent" from "sent, no answer".

That difference is what keeps a job from being created twice at a provider: a request that never
left may be retried; one that left and got no answer must not be (SPEC §3).
"""

from __future__ import annotations

import httpx

from service.providers.base import WireRequest, WireResponse

USER_AGENT = "jobhook/0.1"


class NotSent(Exception):
    """The request never reached the provider (refused, unresolvable, no connection in time)."""


class Uncertain(Exception):
    """The request may have reached the provider, but no answer came back."""


class ProviderHTTP:
    """One provider's base URL and credentials, and two connection pools.

    Submissions go over fresh connections: a pooled keep-alive connection that the server closed
    while idle would turn a harmless resend into an "uncertain" submission.
    """

    def __init__(self, base_url: str, auth_headers: dict[str, str], *, timeout: float, submit_timeout: float) -> None:
        headers = {"User-Agent": USER_AGENT, **auth_headers}
        self.base_url = base_url.rstrip("/")
        self._polls = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)
        self._submits = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=submit_timeout,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def send(self, wire: WireRequest, *, submission: bool = False) -> WireResponse:
        client = self._submits if submission else self._polls
        try:
            response = await client.request(wire.method, wire.path, json=wire.json)
        except httpx.InvalidURL as exc:  # built from what a client or provider sent: it never left
            raise NotSent(_describe(exc)) from exc
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol) as exc:
            raise NotSent(_describe(exc)) from exc
        except httpx.LocalProtocolError as exc:
            raise NotSent(_describe(exc)) from exc
        except httpx.HTTPError as exc:
            raise Uncertain(_describe(exc)) from exc
        return WireResponse(
            status=response.status_code,
            headers={key.lower(): value for key, value in response.headers.items()},
            body=response.content,
        )

    async def aclose(self) -> None:
        await self._polls.aclose()
        await self._submits.aclose()


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
