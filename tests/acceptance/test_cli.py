"""The `jobhook` command as a user runs it: a child process, its exit code and what it prints."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from service.store.sqlite import migrations
from tests.acceptance.harness import ServeProcess, jobhook_command


def run(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
    stdout: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """`stdout`: a file descriptor to write to instead of a pipe read here."""
    return subprocess.run(
        jobhook_command(*args),
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_lists_the_commands_and_settings() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "demo", "submit", "jobs", "job", "migrate"):
        assert command in result.stdout
    serve_help = run("serve", "--help").stdout
    assert "--insecure" in serve_help and "JOBHOOK_API_TOKENS" in serve_help
    submit_help = run("submit", "--help").stdout
    assert "JOBHOOK_URL" in submit_help and "--wait" in submit_help


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JOBHOOK_POLL_INTERVAL", "abc"),
        ("JOBHOOK_PUBLIC_URL", "hooks.example.com"),
        ("JOBHOOK_JOB_TIMEOUT", "-5"),
        ("JOBHOOK_AIVIDEOAPI_BASE_URL", "ftp://x"),
        ("JOBHOOK_LOG_FORMAT", "xml"),
    ],
)
def test_a_wrong_setting_stops_serve_with_one_line_naming_it(tmp_path: Path, variable: str, value: str) -> None:
    result = run("serve", env={variable: value, "JOBHOOK_DATABASE": str(tmp_path / "x.db")})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


def test_env_file_is_read_and_its_errors_are_named(tmp_path: Path) -> None:
    env_file = tmp_path / "jobhook.env"
    env_file.write_text("# settings\nexport JOBHOOK_POLL_INTERVAL='nope'\n")
    result = run("--env-file", str(env_file), "migrate", env={"JOBHOOK_DATABASE": str(tmp_path / "x.db")})
    assert result.returncode == 2
    assert "JOBHOOK_POLL_INTERVAL" in result.stderr
    missing = run("--env-file", str(tmp_path / "absent.env"), "migrate")
    assert missing.returncode == 2
    assert "--env-file" in missing.stderr


def test_serve_refuses_an_open_api_on_a_public_address(tmp_path: Path) -> None:
    result = run("serve", "--host", "0.0.0.0", env={"JOBHOOK_DATABASE": str(tmp_path / "x.db")})
    assert result.returncode == 2
    assert "JOBHOOK_API_TOKENS" in result.stderr and "--insecure" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_migrate_creates_the_schema_and_refuses_a_newer_database(tmp_path: Path) -> None:

    db = tmp_path / "jobhook.db"
    result = run("migrate", env={"JOBHOOK_DATABASE": str(db)})
    assert result.returncode == 0, result.stderr
    latest = migrations()[-1][0]
    assert f"schema version {latest}" in result.stdout
    again = run("migrate", env={"JOBHOOK_DATABASE": str(db)})
    assert again.returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    newer = run("migrate", env={"JOBHOOK_DATABASE": str(db)})
    assert newer.returncode == 2
    assert "newer" in newer.stderr and "99" in newer.stderr
    assert "Traceback" not in newer.stderr
    (tmp_path / "a-file").write_text("")
    unusable = run("migrate", env={"JOBHOOK_DATABASE": str(tmp_path / "a-file" / "it.db")})
    assert unusable.returncode == 75  # a storage failure: EX_TEMPFAIL, a supervisor may retry
    assert "Traceback" not in unusable.stderr


async def test_submit_jobs_and_job_against_a_running_service(tmp_path: Path, database: str) -> None:
    service = ServeProcess(
        tmp_path,
        {"JOBHOOK_API_TOKENS": "cli-token", "JOBHOOK_SIMULATOR_LATENCY": "0.3", "JOBHOOK_CALLBACK_GRACE": "1"},
        database=database,
    )
    await service.start()
    try:
        env = {"JOBHOOK_URL": service.url, "JOBHOOK_TOKEN": "cli-token"}
        submitted = run("submit", "--provider", "simulator", "A sign reading HELLO", "--wait", env=env)
        assert submitted.returncode == 0, submitted.stderr
        assert "completed" in submitted.stderr  # progress lines
        assert '"status": "completed"' in submitted.stdout
        listing = run("jobs", env=env)
        assert listing.returncode == 0
        assert "simulator" in listing.stdout and "completed" in listing.stdout
        job_id = listing.stdout.splitlines()[1].split()[0]
        # serve logs a job's end as it logs its submission: one INFO line (issue 14, item 16).
        for _ in range(100):  # the log is written by a thread of its own: give it a moment
            if f"finished {job_id}: completed (by callback)" in service.log():
                break
            await asyncio.sleep(0.05)
        assert f"finished {job_id}: completed (by callback)" in service.log(), service.log()
        assert service.log().count(f"finished {job_id}") == 1
        # `jobhook jobs --json | head`: a reader that went away ends the output quietly (issue 14, item 16).
        reader, writer = os.pipe()
        os.close(reader)
        try:
            piped = run("jobs", "--json", env=env, stdout=writer)
        finally:
            os.close(writer)
        assert piped.returncode == 141 and piped.stderr == "", piped.stderr
        shown = run("job", job_id, env=env)
        assert shown.returncode == 0
        assert "history:" in shown.stdout and "callback" in shown.stdout
        refused = run("submit", "--provider", "simulator", "x", "--aspect-ratio", "2:1", env=env)
        assert refused.returncode == 2
        assert "aspect_ratio" in refused.stderr
        unauthorized = run("jobs", env={"JOBHOOK_URL": service.url, "JOBHOOK_TOKEN": "wrong"})
        assert unauthorized.returncode == 2
        assert "unauthorized" in unauthorized.stderr
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{service.url}/v1/jobs")).status_code == 401
    finally:
        service.stop()
    down = run("jobs", env={"JOBHOOK_URL": service.url})
    assert down.returncode == 2
    assert "jobhook serve" in down.stderr


def test_providers_lists_tracking_and_prices_and_never_a_key() -> None:
    env = {"JOBHOOK_AIVIDEOAPI_API_KEY": "sk-very-secret-key", "JOBHOOK_PUBLIC_URL": "https://hooks.example.com"}
    result = run("providers", env=env)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(lines) == {"aivideoapi", "apiframe", "segmind", "apiinone", "simulator"}
    assert "callback" in lines["aivideoapi"] and "$0.08" in lines["aivideoapi"]
    assert "webhook + confirm" in lines["apiframe"] and "$0.03" in lines["apiframe"]
    assert "synchronous" in lines["segmind"]
    assert "polling" in lines["apiinone"] and "$0.12" in lines["apiinone"]
    assert "JOBHOOK_APIFRAME_API_KEY" in lines["apiframe"]
    as_json = run("providers", "--json", env=env)
    assert "sk-very-secret-key" not in result.stdout + as_json.stdout
    assert '"configured": true' in as_json.stdout


def test_providers_masks_a_base_urls_credentials_and_says_the_simulator_is_off() -> None:
    """Issue 14, items 7 and 16."""
    env = {
        "JOBHOOK_SEGMIND_BASE_URL": "https://ops:s3cret-pass@proxy.example/segmind?key=s3cret-key",
        "JOBHOOK_SIMULATOR": "false",
    }
    result = run("providers", env=env)
    as_json = run("providers", "--json", env=env)
    assert result.returncode == 0 and as_json.returncode == 0, result.stderr + as_json.stderr
    assert "s3cret" not in result.stdout + result.stderr + as_json.stdout
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "https://***@proxy.example/segmind?key=***" in lines["segmind"]
    assert "off: JOBHOOK_SIMULATOR=false" in lines["simulator"] and "built in" not in lines["simulator"]
    assert "built in" in run("providers", env={"JOBHOOK_SIMULATOR": "auto"}).stdout


def test_a_malformed_slack_webhook_url_stops_serve_naming_it_not_showing_it(tmp_path: Path) -> None:
    """Issue 14, item 7: the URL is the credential."""
    url = "hooks.slack.com/services/T0AAAA/B0BBBB/s3cretWebhookPath"
    result = run(
        "serve", "--port", "1", env={"JOBHOOK_SLACK_WEBHOOK_URL": url, "JOBHOOK_DATABASE": str(tmp_path / "x.db")}
    )
    assert result.returncode == 2
    assert "JOBHOOK_SLACK_WEBHOOK_URL" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_providers_show_each_tier_and_the_configured_prices() -> None:
    """SPEC §8: PROVIDERS.md's prices, JOBHOOK_<P>_PRICES over them, segmind unpriced unless set."""
    env = {"JOBHOOK_APIFRAME_PRICES": "TURBO=0.025", "JOBHOOK_APIINONE_PRICES": "0.1"}
    result = run("providers", env=env)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert lines["apiframe"].endswith("TURBO $0.025 · BALANCED $0.06 · QUALITY $0.10 (JOBHOOK_APIFRAME_PRICES)")
    assert lines["aivideoapi"].endswith("TURBO $0.08 · BALANCED $0.14 · QUALITY $0.22")
    assert lines["apiinone"].endswith("any tier $0.10 (JOBHOOK_APIINONE_PRICES)")
    assert "not published: set JOBHOOK_SEGMIND_PRICES" in lines["segmind"]
    assert lines["simulator"].endswith("free")
    wrong = run("providers", env={"JOBHOOK_SEGMIND_PRICES": "cheap"})
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1].startswith("jobhook: JOBHOOK_SEGMIND_PRICES: expected TIER=USD")
    assert "Traceback" not in wrong.stderr


async def test_submit_with_a_max_price(tmp_path: Path, database: str) -> None:
    """`jobhook submit --max-price`: a provider over it, or unpriced, is left out, each one said."""
    service = ServeProcess(
        tmp_path,
        {
            "JOBHOOK_API_TOKENS": "cli-token",
            "JOBHOOK_SIMULATOR_LATENCY": "0.2",
            # Never called: a job over its cap is refused before anything is sent.
            "JOBHOOK_SEGMIND_API_KEY": "sg-never-used",
            "JOBHOOK_SEGMIND_BASE_URL": "http://127.0.0.1:9",
        },
        database=database,
    )
    await service.start()
    try:
        env = {"JOBHOOK_URL": service.url, "JOBHOOK_TOKEN": "cli-token"}
        refused = run("submit", "--provider", "segmind", "--max-price", "0.5", "A red kite", env=env)
        assert refused.returncode == 2, refused.stderr
        assert "no_provider: no provider can take this job: segmind (unknown_price)" in refused.stderr
        assert "  segmind: unknown_price: " in refused.stderr and "JOBHOOK_SEGMIND_PRICES" in refused.stderr
        free = run("submit", "--provider", "simulator", "--max-price", "0.01", "A red kite", "--wait", env=env)
        assert free.returncode == 0, free.stderr
        assert '"cost_usd": 0.0' in free.stdout
        listing = run("jobs", "--json", env=env)
        assert listing.stdout.count('"id": "job_') == 1  # the refused one made no job
    finally:
        service.stop()
