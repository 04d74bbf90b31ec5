"""No secret ever leaves in a log line, an error answer or /metrics: a whole run, grepped."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.acceptance.harness import ServeProcess
from tests.fakes.aivideoapi import FakeAivideoapi, ForcedResponse, TaskScript
from tests.fakes.sinks import WEBHOOK_SECRET, HTTPSink, SMTPSink
from tests.postgres import PASSWORD as PG_PASSWORD
from tests.rawhttp import RawConnection, request_bytes

API_TOKEN = "tok-ABCDEF0123456789-never-print"
API_KEY = "sk-LIVEKEY-9f8e7d6c5b4a-never-print"
SIGNING_KEY = "signing-KEY-0011223344-never-print"
SMTP_PASSWORD = "smtp-PASS-5566778899-never-print"


async def test_a_full_run_prints_no_secret(tmp_path: Path, database: str) -> None:
    async with (
        FakeAivideoapi(complete_after=0.2, callback_retry_delays=(0.0,)) as fake,
        HTTPSink() as slack,
        HTTPSink(verify=True) as backend,
        SMTPSink() as smtp,
    ):
        slack_url = slack.url + "/T000/B000/XXXXslack-hook-never-print"
        slack.always = 500  # failures are logged: their lines must still hold no secret
        env = {
            "JOBHOOK_LOG_FORMAT": "json",
            "JOBHOOK_API_TOKENS": API_TOKEN,
            "JOBHOOK_AIVIDEOAPI_API_KEY": API_KEY,
            "JOBHOOK_AIVIDEOAPI_BASE_URL": fake.base_url,
            "JOBHOOK_SECRET": SIGNING_KEY,
            "JOBHOOK_SLACK_WEBHOOK_URL": slack_url,
            "JOBHOOK_SMTP_URL": f"smtp://jobhook:{SMTP_PASSWORD}@127.0.0.1:{smtp.port}",
            "JOBHOOK_EMAIL_FROM": "jobhook@example.com",
            "JOBHOOK_EMAIL_TO": "ops@example.com",
            "JOBHOOK_FORWARD_URL": backend.url,
            "JOBHOOK_FORWARD_SECRET": WEBHOOK_SECRET,
            "JOBHOOK_NOTIFY_RETRY_SCHEDULE": "0,0.1",
            "JOBHOOK_CALLBACK_GRACE": "0.5",
            "JOBHOOK_POLL_INTERVAL": "0.2",
        }
        fake.next_scripts = [TaskScript(), TaskScript(timestamp_offset=-3600), TaskScript(outcome="failed")]
        fake.create_responses = [ForcedResponse.error(402, "insufficient_credits")]
        service = ServeProcess(tmp_path, env, database=database)
        await service.start()
        answers: list[str] = []
        try:
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            async with httpx.AsyncClient(base_url=service.url, headers=headers) as client:
                refused = await client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": "no money"})
                answers.append(refused.text)
                tracked = (
                    await client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": "x", "submit": False})
                ).json()
                token_url = tracked["callback_url"]
                ids = [
                    (await client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": f"job {n}"})).json()["id"]
                    for n in range(3)
                ]
                for bad in (b"not json", b'{"id": "x", "status": "completed"}'):
                    answers.append((await client.post(token_url.removeprefix(service.url), content=bad)).text)
                answers.append((await client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"})).text)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    jobs = [(await client.get(f"/v1/jobs/{job_id}")).json() for job_id in ids]
                    if all(job["status"] in ("completed", "failed") for job in jobs) and len(slack.received) >= 5:
                        break
                    await asyncio.sleep(0.2)
                answers.append((await client.get("/metrics")).text)
                answers.append((await client.get("/v1/outbox")).text)
                answers.append((await client.get("/v1/providers")).text)
        finally:
            service.stop()
        token = token_url.rsplit("/", 1)[1]
        everything = service.log() + "\n".join(answers)
        assert '"level":"warning"' in everything  # the run did log its failures and refusals
        for secret in (
            API_TOKEN,
            API_KEY,
            SIGNING_KEY,
            SMTP_PASSWORD,
            "XXXXslack-hook-never-print",
            token,
            WEBHOOK_SECRET,
            PG_PASSWORD,  # in JOBHOOK_DATABASE on PostgreSQL
        ):
            assert secret not in everything, f"{secret[:12]}… was printed"


async def test_a_hostile_run_prints_no_secret(tmp_path: Path, database: str) -> None:
    """Refusals of every kind, a provider quoting our key back, sign-in attempts: then every log line
    and every answer jobhook gave (events, listings, the stream, the dashboard) is grepped."""
    async with FakeAivideoapi(complete_after=0.2, callback_retry_delays=(0.0,)) as fake, HTTPSink() as slack:
        env = {
            "JOBHOOK_LOG_FORMAT": "json",
            "JOBHOOK_API_TOKENS": API_TOKEN,
            "JOBHOOK_AIVIDEOAPI_API_KEY": API_KEY,
            "JOBHOOK_AIVIDEOAPI_BASE_URL": fake.base_url,
            "JOBHOOK_SECRET": SIGNING_KEY,
            "JOBHOOK_SLACK_WEBHOOK_URL": slack.url + "/T000/B000/XXXXslack-hook-never-print",
            "JOBHOOK_CALLBACK_GRACE": "0.3",
            "JOBHOOK_POLL_INTERVAL": "0.2",
            "JOBHOOK_POLL_MAX_INTERVAL": "0.3",
        }
        quoting = f"Invalid API key {API_KEY}"
        fake.create_responses = [ForcedResponse.error(401, "invalid_api_key", quoting)]
        fake.query_responses = [ForcedResponse.error(500, "internal_error", quoting)]
        fake.next_scripts = [TaskScript(drop_callback=True)]
        service = ServeProcess(tmp_path, env, database=database)
        await service.start()
        answers: list[str] = []  # no callback token may be in these
        listings: list[str] = []  # these name the backend-submitted job's callback URL, by design
        try:
            bearer = {"Authorization": f"Bearer {API_TOKEN}"}
            async with httpx.AsyncClient(base_url=service.url, headers=bearer, timeout=30) as client:
                answers.append((await client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": "key"})).text)
                polled = (await client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": "polled"})).json()
                tracked = (
                    await client.post("/v1/jobs", json={"provider": "aivideoapi", "prompt": "x", "submit": False})
                ).json()
                path = "/callbacks/" + tracked["callback_url"].rsplit("/callbacks/", 1)[1]
                token = path.rsplit("/", 1)[1]
                forged = [token[:-1] + ("A" if token[-1] != "A" else "B"), token + "x", token.swapcase()]
                for candidate in forged:
                    answers.append((await client.post(f"/callbacks/{candidate}", content=b"{}")).text)
                for raw, headers in (
                    (b"x" * (300 * 1024), {}),
                    (b"\xff\xfe", {}),
                    (b'{"id": "t", "status": "completed"}', {"X-Task-Id": "t, t"}),
                ):
                    answers.append((await client.post(path, content=raw, headers=headers)).text)
                async with await RawConnection.open(service.port) as connection:
                    await connection.send(
                        request_bytes("GET", "/v1/jobs", [("Authorization", f"Bearer {API_TOKEN}" + "x" * 70_000)])
                    )
                    refused_head = await connection.response()
                    answers.append(refused_head.body.decode() if refused_head is not None else "")
                for wrong in (API_TOKEN[:-1], API_TOKEN + "x", API_TOKEN.upper(), f"{API_TOKEN} {API_TOKEN}"):
                    answers.append((await client.get("/v1/jobs", headers={"Authorization": f"Bearer {wrong}"})).text)
                answers.append((await client.get(f"/v1/jobs?token={API_TOKEN}", headers={"Authorization": ""})).text)
                async with httpx.AsyncClient(base_url=service.url) as browser:
                    sign_in = await browser.post("/dashboard/login", data={"token": API_TOKEN[:-1]})
                    answers.append(sign_in.text)
                    signed = await browser.post("/dashboard/login", data={"token": API_TOKEN})
                    answers.append(str(signed.headers) + str(browser.cookies))
                    answers.append((await browser.get("/dashboard")).text)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    if (await client.get(f"/v1/jobs/{polled['id']}")).json()["status"] == "completed":
                        break
                    await asyncio.sleep(0.2)
                listing = await client.get("/v1/jobs?limit=200")
                listings.append(listing.text)
                for job in listing.json()["jobs"]:
                    events = (await client.get(f"/v1/jobs/{job['id']}/events")).text
                    answers.append(events)
                    (listings if job["id"] == tracked["id"] else answers).append(
                        (await client.get(f"/v1/jobs/{job['id']}")).text
                    )
                async with client.stream("GET", "/v1/stream") as stream:
                    await client.post(f"/v1/jobs/{polled['id']}/refresh")
                    async for chunk in stream.aiter_text():
                        listings.append(chunk)
                        if "event: job" in "".join(listings):
                            break
                for route in ("/metrics", "/v1/outbox", "/v1/providers", "/readyz", "/healthz"):
                    answers.append((await client.get(route)).text)
        finally:
            service.stop()
        log = service.log()
        assert "[redacted]" in log + "".join(answers)  # the provider did quote the key: it was scrubbed
        assert '"level":"warning"' in log
        for secret in (API_TOKEN, API_KEY, SIGNING_KEY, "XXXXslack-hook-never-print", token, PG_PASSWORD):
            assert secret not in log, f"{secret[:12]}… was logged"
            for answer in answers:
                assert secret not in answer, f"{secret[:12]}… was in an answer: {answer[:200]}"
        for secret in (API_TOKEN, API_KEY, SIGNING_KEY, "XXXXslack-hook-never-print"):
            assert all(secret not in text for text in listings)
        assert any(token in text for text in listings)  # where the backend is meant to find it
