"""No secret ever leaves in a log line, an error answer or /metrics: a whole run, grepped."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.acceptance.harness import ServeProcess
from tests.fakes.aivideoapi import FakeAivideoapi, ForcedResponse, TaskScript
from tests.fakes.sinks import WEBHOOK_SECRET, HTTPSink, SMTPSink

API_TOKEN = "tok-ABCDEF0123456789-never-print"
API_KEY = "sk-LIVEKEY-9f8e7d6c5b4a-never-print"
SIGNING_KEY = "signing-KEY-0011223344-never-print"
SMTP_PASSWORD = "smtp-PASS-5566778899-never-print"


async def test_a_full_run_prints_no_secret(tmp_path: Path) -> None:
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
        service = ServeProcess(tmp_path, env)
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
        ):
            assert secret not in everything, f"{secret[:12]}… was printed"
