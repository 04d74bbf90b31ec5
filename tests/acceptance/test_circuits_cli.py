"""`jobhook providers` shows each provider's circuit as the database holds it (SPEC §8)."""

from __future__ import annotations

import json
from pathlib import Path

from service.config import Settings
from service.domain import attempt
from service.domain.status import JobError
from service.store.engines import make_store
from tests.acceptance.test_cli import run
from tests.conftest import new_stored_job


async def test_providers_shows_an_open_circuit_with_its_end_and_why(database: str) -> None:
    store = make_store(Settings.from_environ({"JOBHOOK_DATABASE": database}))
    await store.open()
    try:
        refusal = attempt.rejected(
            {"http_status": 401}, JobError("provider_rejected", "bad key", "invalid_api_key"), http_status=401
        )
        for _ in range(3):
            job, _ = await store.create_job(new_stored_job())
            await store.record_submit(job.id, refusal)
    finally:
        await store.close()
    env = {"JOBHOOK_DATABASE": database, "JOBHOOK_AIVIDEOAPI_API_KEY": "sk-test"}
    table = run("providers", env=env)
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert "open until " in lines["aivideoapi"] and "(3× http_401)" in lines["aivideoapi"]
    assert " closed " in lines["apiframe"]
    as_json = run("providers", "--json", env=env)
    circuits = {row["provider"]: row["circuit"] for row in json.loads(as_json.stdout)}
    assert circuits["aivideoapi"]["state"] == "open"
    assert circuits["aivideoapi"]["failures_in_a_row"] == 3
    assert circuits["segmind"] == {
        "state": "closed",
        "until": None,
        "failures_in_a_row": 0,
        "reason": None,
        "probing": False,
    }


def test_providers_without_a_database_yet_says_every_circuit_is_closed_and_creates_none(tmp_path: Path) -> None:
    result = run("providers", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {row["circuit"]["state"] for row in json.loads(result.stdout)} == {"closed"}
    assert not (tmp_path / "jobhook.db").exists()
