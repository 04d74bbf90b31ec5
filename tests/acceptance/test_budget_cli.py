"""As a new user would (issue 16, "Done means"): `JOBHOOK_BUDGET_USD_PER_DAY=1` with the simulator
priced at $0.25 a job; `jobhook submit` is accepted four times, the fifth is refused with a clear
message, and `jobhook budget` shows the day's figures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.acceptance.harness import ServeProcess
from tests.acceptance.test_cli import run


async def test_jobs_are_accepted_up_to_the_cap_and_jobhook_budget_shows_the_day(tmp_path: Path, database: str) -> None:
    settings = {
        "JOBHOOK_BUDGET_USD_PER_DAY": "1",
        "JOBHOOK_SIMULATOR_PRICES": "0.25",
        "JOBHOOK_SIMULATOR_LATENCY": "0.2",
        "JOBHOOK_CALLBACK_GRACE": "0.5",
        "JOBHOOK_MIRROR_IMAGES": "false",
    }
    service = ServeProcess(tmp_path, {**settings, "JOBHOOK_API_TOKENS": "cli-token"}, database=database)
    await service.start()
    try:
        client = {"JOBHOOK_URL": service.url, "JOBHOOK_TOKEN": "cli-token"}
        for n in range(4):
            submitted = await asyncio.to_thread(run, "submit", "--provider", "simulator", f"poster {n}", env=client)
            assert submitted.returncode == 0, submitted.stderr + service.log()
            assert json.loads(submitted.stdout)["cost_usd"] in (None, 0.25)
        refused = await asyncio.to_thread(run, "submit", "--provider", "simulator", "one too many", env=client)
        assert refused.returncode == 2, refused.stdout
        first, *why = refused.stderr.strip().splitlines()
        assert first.startswith(
            "jobhook: budget_exceeded: no provider can take this job within today's budget: the daily budget of all "
            "providers (JOBHOOK_BUDGET_USD_PER_DAY=1) cannot take this job's $0.25 at simulator: $1.00 of $1.00 is "
            "spent or reserved today (UTC); it resets at "
        ), refused.stderr
        assert why[0].startswith("  simulator: over_budget: "), refused.stderr
        jobs = await asyncio.to_thread(run, "jobs", "--json", env=client)
        assert len(json.loads(jobs.stdout)["jobs"]) == 4  # the refused one left no job

        # `jobhook budget` reads the database with the same settings, as an operator would.
        env = {**settings, "JOBHOOK_DATABASE": service.env["JOBHOOK_DATABASE"]}
        shown = await asyncio.to_thread(run, "budget", env=env)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].startswith("budget for ") and " (UTC): resets at " in lines[0]
        assert lines[1].split() == ["scope", "cap", "spent", "reserved", "left"]
        assert lines[2].split()[:5] == ["total", "$1.00", "$1.00", "$0.00", "$0.00"]
        assert "refused work since" in lines[2]
        [simulator] = [line for line in lines if line.startswith("simulator")]
        assert simulator.split()[:5] == ["simulator", "—", "$1.00", "$0.00", "—"]
        as_json = json.loads((await asyncio.to_thread(run, "budget", "--json", env=env)).stdout)
        assert (as_json["total"]["cap_usd"], as_json["total"]["spent_usd"]) == (1.0, 1.0)
        served = json.loads(
            (await asyncio.to_thread(run, "budget", "--json", env={**env, "JOBHOOK_BUDGET_USD_PER_DAY": "2"})).stdout
        )
        assert served["total"]["remaining_usd"] == 1.0  # a raised cap: today's spend still counts
    finally:
        service.stop()


def test_budget_help_says_what_it_shows() -> None:
    shown = run("budget", "--help")
    assert shown.returncode == 0
    assert "JOBHOOK_BUDGET_USD_PER_DAY" in shown.stdout and "--json" in shown.stdout


def test_a_wrong_cap_stops_the_program_with_one_line(tmp_path: Path) -> None:
    env = {"JOBHOOK_DATABASE": str(tmp_path / "jobhook.db"), "JOBHOOK_APIFRAME_BUDGET_USD_PER_DAY": "ten dollars"}
    for command in (("budget",), ("serve", "--port", "1")):
        result = run(*command, env=env)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "jobhook: JOBHOOK_APIFRAME_BUDGET_USD_PER_DAY: expected US dollars per UTC day from 0 to 1,000,000 such as "
            "25 or 0.50, got 'ten dollars'"
        ]
