"""As a new user would (issue 15, "Done means"): two providers configured, the cheaper refusing;
`jobhook submit --provider auto … --wait` completes on the other and `jobhook job` shows both attempts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.acceptance.harness import ServeProcess
from tests.acceptance.test_cli import run
from tests.fakes.aivideoapi import FakeAivideoapi
from tests.fakes.apiframe import FakeApiframe, forced_error

TOKEN = "cli-token"


async def serve_two_providers(
    tmp_path: Path, database: str, aivideoapi: FakeAivideoapi, apiframe: FakeApiframe
) -> ServeProcess:
    """`jobhook serve` started with aivideoapi and apiframe configured (the fakes'), the API behind TOKEN."""
    service = ServeProcess(
        tmp_path,
        {
            "JOBHOOK_API_TOKENS": TOKEN,
            "JOBHOOK_CALLBACK_GRACE": "0.5",
            "JOBHOOK_MIRROR_IMAGES": "false",
            "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test",
            "JOBHOOK_AIVIDEOAPI_BASE_URL": aivideoapi.base_url,
            "JOBHOOK_APIFRAME_API_KEY": "afk_test",
            "JOBHOOK_APIFRAME_BASE_URL": apiframe.base_url,
        },
        database=database,
    )
    await service.start()
    return service


def cli_env(service: ServeProcess) -> dict[str, str]:
    return {"JOBHOOK_URL": service.url, "JOBHOOK_TOKEN": TOKEN}


async def test_submit_auto_fails_over_and_job_shows_both_attempts(tmp_path: Path, database: str) -> None:
    async with FakeAivideoapi(complete_after=0.2) as aivideoapi, FakeApiframe(complete_after=0.2) as apiframe:
        apiframe.create_responses = [forced_error(402, "insufficient_credits")]  # the cheaper one is broke
        service = await serve_two_providers(tmp_path, database, aivideoapi, apiframe)
        try:
            env = cli_env(service)
            # The fakes run in this event loop: the CLI runs in a thread so that they can answer it.
            submitted = await asyncio.to_thread(run, "submit", "--provider", "auto", "A red kite", "--wait", env=env)
            assert submitted.returncode == 0, submitted.stderr + service.log()
            job = json.loads(submitted.stdout)
            assert (job["status"], job["provider"]) == ("completed", "aivideoapi")
            assert [(a["provider"], a["state"]) for a in job["attempts"]] == [
                ("apiframe", "rejected"),
                ("aivideoapi", "completed"),
            ]
            shown = await asyncio.to_thread(run, "job", job["id"], env=env)
            assert shown.returncode == 0, shown.stderr
            attempts = shown.stdout.split("\nattempts:\n", 1)[1].split("\n\n", 1)[0].splitlines()
            assert attempts[0].split()[:3] == ["1.", "apiframe", "rejected"]
            assert "insufficient_credits" in attempts[0]
            assert attempts[1].split()[:3] == ["2.", "aivideoapi", "completed"]
            assert "failover" in shown.stdout and "from=apiframe, to=aivideoapi" in shown.stdout
            listed = await asyncio.to_thread(
                run, "submit", "--provider", "aivideoapi,apiframe", "A blue kite", "--wait", env=env
            )
            assert listed.returncode == 0, listed.stderr
            assert [a["provider"] for a in json.loads(listed.stdout)["attempts"]] == ["aivideoapi"]
            assert (len(apiframe.creates), len(aivideoapi.creates)) == (1, 2)
        finally:
            service.stop()
