"""Mirroring fetches only from allowed addresses (issue 14, item 1: server-side request forgery).

An image URL comes from a callback or a poll, so whoever sends one names what jobhook fetches. A
real server on loopback holds a "secret": it must never be fetched, whatever spelling of its address
the URL uses, through a redirect either, unless JOBHOOK_MIRROR_ALLOW_NETWORKS opens loopback.
No test here sends anything to an address that is not loopback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service.config import Settings
from service.domain import addresses
from service.domain.status import Observation, Status
from service.ids import new_job_id
from service.media import MediaStore
from service.mirror import Downloader, Mirror, Refused
from service.store.base import NewJob
from service.store.engines import make_store
from tests.conftest import Service, ServiceFactory, eventually
from tests.fakes.aivideoapi import FakeAivideoapi, TaskScript
from tests.fakes.server import free_socket, serve_asgi

# A PNG's magic bytes, so that it passes for an image once fetched, then what must stay inside.
SECRET = b"\x89PNG\r\n\x1a\n" + b"the metadata service's credentials"
QUERY_SECRET = "sig=query-credential-42"


@dataclasses.dataclass
class ImageHost:
    """A server on a loopback address that records every request it gets."""

    url: str = ""
    hits: list[str] = dataclasses.field(default_factory=list)
    hosts: list[str] = dataclasses.field(default_factory=list)

    def app(self) -> Starlette:
        async def secret(request: Request) -> Response:
            self._hit(request)
            return Response(SECRET, media_type="image/png")

        async def hop(request: Request) -> Response:
            self._hit(request)
            left = int(request.path_params["left"])
            return RedirectResponse(f"/hop/{left - 1}" if left > 1 else "/secret.png", status_code=302)

        async def to(request: Request) -> Response:
            self._hit(request)
            return RedirectResponse(request.query_params["url"], status_code=307)

        async def flaky(request: Request) -> Response:
            self._hit(request)
            if self.hits.count(request.url.path) == 1:
                return Response(b"busy", status_code=503)
            return Response(SECRET, media_type="image/png")

        return Starlette(
            routes=[
                Route("/secret.png", secret),
                Route("/files/{name}", secret),  # the simulator's shape of image path
                Route("/hop/{left:int}", hop),
                Route("/to", to),
                Route("/flaky.png", flaky),  # 503 the first time
            ]
        )

    def _hit(self, request: Request) -> None:
        self.hits.append(request.url.path)
        self.hosts.append(request.headers.get("host", ""))


@contextlib.asynccontextmanager
async def image_host(address: str = "127.0.0.1") -> AsyncIterator[ImageHost]:
    host = ImageHost()
    async with serve_asgi(host.app(), sock=free_socket(address)) as url:
        host.url = url
        yield host


@pytest.fixture
async def fake() -> AsyncIterator[FakeAivideoapi]:
    async with FakeAivideoapi(complete_after=0.1, callback_retry_delays=(0.0, 0.3, 0.6)) as provider:
        yield provider


def env(fake: FakeAivideoapi, allow: str = "<unset>") -> dict[str, str]:
    return {
        "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
        "JOBHOOK_AIVIDEOAPI_BASE_URL": fake.base_url,
        "JOBHOOK_MIRROR_ALLOW_NETWORKS": allow,
    }


async def mirror_events(svc: Service, job_id: str) -> list[dict[str, Any]]:
    return [e for e in await svc.events(job_id) if e["type"] == "mirror"]


async def completed_with(svc: Service, fake: FakeAivideoapi, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job whose callback names `url` as its image; returns it and its (first) mirror event."""
    fake.next_scripts = [TaskScript(urls=[url])]
    job = await svc.submit(provider="aivideoapi", prompt="an image somewhere")
    done = await svc.wait_finished(job["id"])
    assert done["status"] == "completed" and done["resolved_by"] == "callback", done
    [event] = await eventually(lambda: mirror_events(svc, job["id"]))
    return await svc.job(job["id"]), event


async def assert_refused_once(svc: Service, job: dict[str, Any], url: str, host: str, message: str) -> None:
    """One 'refused' event naming the host, nothing due again, the provider's URL kept, nothing held."""
    events = await mirror_events(svc, job["id"])
    assert [(e["outcome"], e["detail"]) for e in events] == [
        ("refused", {"attempt": 1, "refused": {"0": {"host": host, "message": message}}})
    ]
    assert [due.kind for due in await svc.runtime.store.due_for(job["id"])] == []  # no retry, ever
    assert job["result"]["images"] == [{"url": url}]  # no mirror_url
    served = await svc.client.get(f"/v1/jobs/{job['id']}/images/0")
    assert served.status_code == 404 and served.json()["error"]["code"] == "image_not_held"
    assert QUERY_SECRET not in json.dumps(await svc.events(job["id"]))


@pytest.mark.parametrize(
    "spelling",
    [
        "127.0.0.1",
        "localhost",  # a name that resolves to loopback
        "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6: the same socket
        "2130706433",  # 127.0.0.1 as one number, which the resolver accepts
        "127.1",
    ],
)
async def test_a_loopback_image_url_is_refused_and_its_secret_never_fetched_nor_served(
    jobhook: ServiceFactory, fake: FakeAivideoapi, spelling: str
) -> None:
    async with image_host() as secret, jobhook(**env(fake)) as svc:
        port = secret.url.rsplit(":", 1)[1]
        url = f"http://{spelling}:{port}/secret.png?{QUERY_SECRET}"
        job, _ = await completed_with(svc, fake, url)
        await assert_refused_once(svc, job, url, spelling.strip("[]"), "address not allowed")
        assert secret.hits == []


async def test_with_loopback_allowed_the_same_url_is_mirrored(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    # The control for the test above: its server would be reached, and its secret served, if allowed.
    async with image_host() as secret, jobhook(**env(fake, allow="127.0.0.0/8")) as svc:
        url = f"{secret.url}/secret.png?{QUERY_SECRET}"
        job, event = await completed_with(svc, fake, url)
        assert event["outcome"] == "done"
        assert job["result"]["images"][0]["mirror_url"].endswith("/images/0")
        assert (await svc.client.get(f"/v1/jobs/{job['id']}/images/0")).content == SECRET
        assert secret.hits == ["/secret.png"]


async def test_a_redirect_to_a_refused_address_is_refused(jobhook: ServiceFactory, fake: FakeAivideoapi) -> None:
    # 127.0.0.1 is allowed, 127.0.0.2 (another loopback address) is not: the second hop is judged too.
    async with (
        image_host("127.0.0.1") as allowed,
        image_host("127.0.0.2") as secret,
        jobhook(**env(fake, allow="127.0.0.1/32")) as svc,
    ):
        url = f"{allowed.url}/to?url={secret.url}/secret.png"
        job, _ = await completed_with(svc, fake, url)
        await assert_refused_once(svc, job, url, "127.0.0.2", "address not allowed")
        assert allowed.hits == ["/to"]
        assert secret.hits == []


@pytest.mark.parametrize(("hops", "mirrored"), [(3, True), (4, False)])
async def test_at_most_three_redirects_are_followed(
    jobhook: ServiceFactory, fake: FakeAivideoapi, hops: int, mirrored: bool
) -> None:
    async with image_host() as host, jobhook(**env(fake, allow="127.0.0.0/8")) as svc:
        url = f"{host.url}/hop/{hops}"
        job, event = await completed_with(svc, fake, url)
        if mirrored:
            assert event["outcome"] == "done"
            assert (await svc.client.get(f"/v1/jobs/{job['id']}/images/0")).content == SECRET
            assert host.hits == ["/hop/3", "/hop/2", "/hop/1", "/secret.png"]
        else:
            await assert_refused_once(svc, job, url, "127.0.0.1", "more than 3 redirects")
            assert host.hits == ["/hop/4", "/hop/3", "/hop/2", "/hop/1"]  # the image itself: never


async def test_a_closed_port_and_an_open_one_look_the_same_when_refused(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    closed = free_socket()  # bound, never listening: nothing answers on its port
    closed_port = closed.getsockname()[1]
    try:
        async with image_host() as open_host, jobhook(**env(fake)) as svc:
            open_job, open_event = await completed_with(svc, fake, f"{open_host.url}/secret.png")
            closed_job, closed_event = await completed_with(svc, fake, f"http://127.0.0.1:{closed_port}/secret.png")
            assert (open_event["outcome"], open_event["detail"]) == (closed_event["outcome"], closed_event["detail"])
            assert open_job["result"]["images"][0].keys() == closed_job["result"]["images"][0].keys() == {"url"}
            assert open_host.hits == []
    finally:
        closed.close()


async def test_the_simulators_own_images_are_mirrored_without_the_setting(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_MIRROR_ALLOW_NETWORKS="<unset>") as svc:
        assert svc.settings.mirror_allow_networks == ()
        job = await svc.submit(provider="simulator", prompt="an image from jobhook itself", output_format="png")
        assert (await svc.wait_finished(job["id"]))["status"] == "completed"
        [event] = await eventually(lambda: mirror_events(svc, job["id"]))
        assert event["outcome"] == "done"
        image = (await svc.job(job["id"]))["result"]["images"][0]
        assert image["url"].startswith(f"{svc.url}/simulator/files/") and "mirror_url" in image


async def test_another_providers_url_on_the_simulators_path_is_not_trusted(
    jobhook: ServiceFactory, fake: FakeAivideoapi
) -> None:
    # Trusting the simulator's images is for jobs of the `simulator` provider only.
    async with jobhook(**env(fake)) as svc:
        simulated = await svc.submit(provider="simulator", prompt="a real simulator image", output_format="png")
        own_url = (await svc.wait_finished(simulated["id"]))["result"]["images"][0]["url"]
        job, _ = await completed_with(svc, fake, own_url)
        await assert_refused_once(svc, job, own_url, "127.0.0.1", "address not allowed")


# -- the downloader itself: a name resolved by a resolver we choose, the simulator's prefix ----------


def resolver(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


LOOPBACK = addresses.parse_networks("127.0.0.0/8")


async def test_a_public_name_that_resolves_to_loopback_is_refused_on_the_address_connected_to() -> None:
    async with image_host() as host:
        port = host.url.rsplit(":", 1)[1]
        url = f"http://images.example.com:{port}/secret.png"
        names = {"images.example.com": ["127.0.0.1"]}
        refusing = Downloader((), resolver=resolver(names))
        try:
            with pytest.raises(Refused) as refused:
                await refusing.fetch(url)
            assert (str(refused.value), refused.value.host) == ("address not allowed", "images.example.com")
        finally:
            await refusing.aclose()
        assert host.hits == []
        # Allowed, it connects to the checked address and still asks for the name (Host header).
        allowing = Downloader(LOOPBACK, resolver=resolver(names))
        try:
            assert (await allowing.fetch(url)).data == SECRET
        finally:
            await allowing.aclose()
        assert host.hosts == [f"images.example.com:{port}"]


async def test_a_name_resolving_to_an_allowed_and_a_refused_address_is_refused_whole() -> None:
    async with image_host() as host:
        port = host.url.rsplit(":", 1)[1]
        downloader = Downloader(LOOPBACK, resolver=resolver({"mixed.example.com": ["127.0.0.1", "10.0.0.1"]}))
        try:
            with pytest.raises(Refused):
                await downloader.fetch(f"http://mixed.example.com:{port}/secret.png")
        finally:
            await downloader.aclose()
        assert host.hits == []


@pytest.mark.parametrize(
    ("path", "trusted"),
    [
        ("/files/0b8c6a1e-task.png", True),
        ("/files/0b8c6a1e-task.jpg?x=1", False),
        ("/secret.png", False),
        ("/files/%2e%2e/secret.png", False),
        ("/files/sub/secret.png", False),
    ],
)
async def test_only_the_simulators_own_file_urls_skip_the_address_check(path: str, trusted: bool) -> None:
    async with image_host() as host:
        downloader = Downloader(())
        try:
            if trusted:
                assert (await downloader.fetch(f"{host.url}{path}", own_prefix=f"{host.url}/files/")).data == SECRET
            else:
                with pytest.raises(Refused):
                    await downloader.fetch(f"{host.url}{path}", own_prefix=f"{host.url}/files/")
            # Another port of the same host is another origin: never trusted.
            with pytest.raises(Refused):
                await downloader.fetch(f"{host.url}{path}", own_prefix="http://127.0.0.1:1/files/")
        finally:
            await downloader.aclose()
        assert len(host.hits) == int(trusted)


async def test_a_retry_for_another_image_leaves_a_refused_one_alone(database: str, tmp_path: Path) -> None:
    # No provider asks for two images by URL today; a job that holds two (its request says 2) shows
    # that a refusal stays final while another image of the same job is retried.
    store = make_store(Settings.from_environ({"JOBHOOK_DATABASE": database}), mirror_images=True)
    await store.open()
    downloader = Downloader(addresses.parse_networks("127.0.0.1/32"))
    try:
        async with image_host("127.0.0.1") as allowed, image_host("127.0.0.2") as secret:
            job, _ = await store.create_job(
                NewJob(
                    id=new_job_id(),
                    provider="aivideoapi",
                    request={"prompt": "two", "num_images": 2},
                    metadata=None,
                    callback_url_registered=True,
                    submitted_by_backend=True,
                    idempotency_key=None,
                    request_hash=None,
                    deadline_at=time.time() + 600,
                    submit_lease_until=None,
                )
            )
            urls = (f"{secret.url}/secret.png", f"{allowed.url}/flaky.png")
            done = Observation(Status.COMPLETED, images=urls)
            await store.record_callback(job.id, "completed", done, {}, bind_task_id="t-1", cost_if_completed=None)
            mirror = Mirror(
                store,
                MediaStore(tmp_path / "media"),
                downloader,
                own_images={},
                nudge=lambda due_at: None,
                clock=time.time,
                rng=random.Random(1),
            )
            await mirror.run(job.id, 0)
            [due] = [due for due in await store.due_for(job.id) if due.kind == "mirror"]
            await mirror.run(job.id, due.attempt)
            events = [e for e in await store.events(job.id) if e.type == "mirror"]
            assert [(e.outcome, e.detail.get("attempt")) for e in events] == [
                ("refused", 1),
                ("retry", 1),
                ("done", 2),
            ]
            assert events[0].detail["refused"] == {"0": {"host": "127.0.0.2", "message": "address not allowed"}}
            assert events[1].detail["errors"] == {"1": "HTTP 503"}
            assert events[2].detail["images"] == [1]
            held = await store.get_job(job.id)
            assert held is not None and held.held(0) is None and held.held(1) is not None
            assert secret.hits == []
            assert allowed.hits == ["/flaky.png", "/flaky.png"]
            assert [due.kind for due in await store.due_for(job.id)] == []
    finally:
        await downloader.aclose()
        await store.close()
