"""Dashboard sign-in and the headers of every answer (issue 14, items 4 and 9): a session ends for good at
sign-out, its cookie carries no token digest, the sign-in takes only a small form or JSON body, its page
may not be framed, and no JSON answer may be sniffed as something else."""

from __future__ import annotations

import base64
import hashlib
import zlib
from urllib.parse import urlsplit

import httpx

from tests.conftest import ServiceFactory
from tests.rawhttp import RawConnection, request_bytes

TOKEN = "dashboard-token-1"
CSRF = {"X-Jobhook-CSRF": "1"}


async def sign_in(svc_url: str, token: str = TOKEN) -> str:
    async with httpx.AsyncClient(base_url=svc_url) as browser:
        answer = await browser.post("/dashboard/login", data={"token": token})
        assert answer.status_code == 303, answer.text
        return answer.cookies["jobhook_session"]


def signed_in(url: str, cookie: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, cookies={"jobhook_session": cookie}, follow_redirects=False)


async def test_sign_out_ends_the_session_even_for_a_copy_of_its_cookie(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_API_TOKENS=TOKEN) as svc:
        cookie = await sign_in(svc.url)
        async with signed_in(svc.url, cookie) as browser:
            assert (await browser.get("/v1/jobs")).status_code == 200
            assert (await browser.post("/dashboard/logout", headers=CSRF)).status_code == 303
        async with signed_in(svc.url, cookie) as copy:  # the old cookie, kept by someone
            refused = await copy.get("/v1/jobs")
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
            page = await copy.get("/dashboard")
            assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
        other = await sign_in(svc.url)  # signing in again opens a new session
        async with signed_in(svc.url, other) as browser:
            assert (await browser.get("/v1/jobs")).status_code == 200


async def test_the_cookie_carries_an_opaque_id_and_no_digest_of_the_token(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_API_TOKENS=TOKEN) as svc:
        cookie = await sign_in(svc.url)
    payload = cookie.split(".")[0]
    compressed = payload.startswith(".")
    raw = base64.urlsafe_b64decode(payload.lstrip(".") + "=" * (-len(payload.lstrip(".")) % 4))
    text = (zlib.decompress(raw) if compressed else raw).decode()
    assert TOKEN not in text
    assert hashlib.sha256(TOKEN.encode()).hexdigest()[:16] not in text


async def test_sessions_outlive_a_restart_and_end_with_their_token(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_API_TOKENS=f"other,{TOKEN}") as svc:
        cookie = await sign_in(svc.url)
    async with jobhook(JOBHOOK_API_TOKENS=f"other,{TOKEN}") as svc, signed_in(svc.url, cookie) as browser:
        assert (await browser.get("/v1/jobs")).status_code == 200  # kept in the database
    async with jobhook(JOBHOOK_API_TOKENS="other") as svc, signed_in(svc.url, cookie) as browser:
        assert (await browser.get("/v1/jobs")).status_code == 401  # its token was removed


async def test_sign_in_takes_a_small_form_or_json_and_refuses_anything_else(jobhook: ServiceFactory) -> None:
    async with (
        jobhook(JOBHOOK_API_TOKENS=TOKEN) as svc,
        httpx.AsyncClient(base_url=svc.url, follow_redirects=False) as browser,
    ):
        assert (await browser.post("/dashboard/login", json={"token": TOKEN})).status_code == 303
        assert (await browser.post("/dashboard/login", data={"token": TOKEN})).status_code == 303
        assert (await browser.post("/dashboard/login", json={"token": "wrong"})).status_code == 401
        refusals = [
            (await browser.post("/dashboard/login", files={"token": ("t", TOKEN.encode())}), 415),
            (await browser.post("/dashboard/login", content=TOKEN, headers={"Content-Type": "text/plain"}), 415),
            (await browser.post("/dashboard/login", content=b"token=" + TOKEN.encode()), 415),  # no type
            (await browser.post("/dashboard/login", data={"token": TOKEN, "pad": "x" * 9000}), 413),
            (await browser.post("/dashboard/login", content=b"[1,", headers={"Content-Type": "application/json"}), 400),
        ]
        for answer, status in refusals:
            assert answer.status_code == status, answer.text
            error = answer.json()["error"]
            assert error["code"] in ("unsupported_media_type", "payload_too_large", "invalid_body") and error["message"]
            assert "jobhook_session" not in answer.headers.get("set-cookie", "")


async def test_a_large_upload_to_sign_in_is_refused_before_its_body_is_sent(jobhook: ServiceFactory) -> None:
    """300 MB announced, 64 KiB sent: the refusal comes without the rest (nothing is spooled to disk)."""
    async with jobhook(JOBHOOK_API_TOKENS=TOKEN) as svc:
        port = urlsplit(svc.url).port
        assert port is not None
        for kind in ("multipart/form-data; boundary=x", "application/x-www-form-urlencoded"):
            head = request_bytes("POST", "/dashboard/login", {"Content-Type": kind}, content_length=300 * 1024 * 1024)
            async with await RawConnection.open(port) as connection:
                await connection.send(head + b"--x\r\n" + b"a" * 65536)
                answer = await connection.response(timeout=10)
                assert answer is not None and answer.status in (413, 415), answer
                assert answer.json()["error"]["code"] in ("unsupported_media_type", "payload_too_large")
                assert await connection.closed_by_server(10)


async def test_the_sign_in_page_may_not_be_framed(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_API_TOKENS=TOKEN) as svc:
        for answer in (
            await svc.client.get("/dashboard/login"),
            await svc.client.post("/dashboard/login", data={"token": "wrong"}),
        ):
            policy = answer.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "script-src" not in policy
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["x-content-type-options"] == "nosniff"


async def test_every_json_answer_says_nosniff(jobhook: ServiceFactory) -> None:
    async with jobhook(JOBHOOK_API_TOKENS=TOKEN) as svc:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        answers = [
            await svc.client.get("/healthz"),
            await svc.client.get("/"),
            await svc.client.get("/v1/jobs", headers=bearer),
            await svc.client.get("/v1/jobs"),  # 401 from the auth middleware
            await svc.client.get("/v1/jobs/job_nothing", headers=bearer),  # 404
            await svc.client.post("/v1/jobs", json={"provider": "nobody"}, headers=bearer),  # 422
            await svc.client.get("/no/such/route"),
            await svc.client.post(f"/callbacks/{'x' * 40}", json={}),  # a refused callback
        ]
        for answer in answers:
            assert answer.headers["content-type"].startswith("application/json"), answer.request.url
            assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url
        statuses = [answer.status_code for answer in answers]
        assert 200 in statuses and 401 in statuses and 404 in statuses and 422 in statuses
