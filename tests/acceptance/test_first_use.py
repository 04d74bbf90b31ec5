"""What a first-time user runs into (issue 14, items 11, 12 and 16): the CLI as a child process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.harness import jobhook_command


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdout: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`jobhook …` in `cwd`, with none of this environment's JOBHOOK_* settings but `env`."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("JOBHOOK_")}
    return subprocess.run(
        jobhook_command(*args),
        env={**clean, **(env or {})},
        cwd=cwd,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )


def files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# -- item 11: no database, nothing created ----------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("backup", "copy.db"),
        ("purge", "--older-than", "30d"),
        ("purge", "--older-than", "30d", "--dry-run"),
        ("outbox",),
        ("outbox", "--dead"),
        ("outbox", "resend", "1"),
        ("outbox", "resend", "--dead"),
    ],
)
def test_maintenance_without_a_database_says_so_and_creates_nothing(tmp_path: Path, command: tuple[str, ...]) -> None:
    (tmp_path / "elsewhere").mkdir()
    before = files(tmp_path)
    line = one_line(run(*command, cwd=tmp_path))
    assert "no database at jobhook.db" in line and "JOBHOOK_DATABASE" in line
    named = one_line(run(*command, cwd=tmp_path, env={"JOBHOOK_DATABASE": str(tmp_path / "elsewhere" / "x.db")}))
    assert f"no database at {tmp_path / 'elsewhere' / 'x.db'}" in named
    assert files(tmp_path) == before


@pytest.mark.parametrize("command", [("serve", "--port", "1"), ("migrate",)])
def test_a_database_in_a_missing_directory_is_refused_naming_it(tmp_path: Path, command: tuple[str, ...]) -> None:
    database = tmp_path / "typo" / "deeper" / "jobhook.db"
    line = one_line(run(*command, cwd=tmp_path, env={"JOBHOOK_DATABASE": str(database)}))
    assert "JOBHOOK_DATABASE" in line and f"the directory {database.parent} does not exist" in line
    assert files(tmp_path) == set()
    # A new file in a directory that exists is still created, as before.
    created = run("migrate", cwd=tmp_path, env={"JOBHOOK_DATABASE": str(tmp_path / "fresh.db")})
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "fresh.db").is_file()


# -- item 12: misspelt settings ---------------------------------------------------------------------


def test_a_misspelt_setting_is_warned_about_with_the_closest_name(tmp_path: Path) -> None:
    env_file = tmp_path / "jobhook.env"
    env_file.write_text("JOBHOOK_SIMULATOR_LATENCE=1\n")
    env = {"JOBHOOK_POLL_INTERVALL": "3", "JOBHOOK_WHATEVER": "1", "JOBHOOK_TEST_ENGINES": "sqlite"}
    result = run("migrate", "--env-file", str(env_file), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "jobhook: warning: unknown setting JOBHOOK_POLL_INTERVALL is ignored; did you mean JOBHOOK_POLL_INTERVAL?",
        "jobhook: warning: unknown setting JOBHOOK_SIMULATOR_LATENCE is ignored; did you mean JOBHOOK_SIMULATOR_LATENCY?",
        "jobhook: warning: unknown setting JOBHOOK_WHATEVER is ignored",
    ]
    # serve reads its settings first: the warning comes before anything else it says.
    serve = run("serve", "--host", "0.0.0.0", cwd=tmp_path, env={"JOBHOOK_POLL_INTERVALL": "3"})
    assert serve.returncode == 2
    assert serve.stderr.splitlines()[0].endswith("did you mean JOBHOOK_POLL_INTERVAL?")
    assert "JOBHOOK_API_TOKENS" in serve.stderr.splitlines()[1]
    quiet = run("migrate", cwd=tmp_path, env={"JOBHOOK_POLL_INTERVAL": "3", "JOBHOOK_URL": "http://127.0.0.1:1"})
    assert quiet.returncode == 0 and quiet.stderr == ""


# -- item 16 ----------------------------------------------------------------------------------------


def test_env_file_is_taken_before_or_after_the_command(tmp_path: Path) -> None:
    env_file = tmp_path / "jobhook.env"
    env_file.write_text(f"JOBHOOK_DATABASE={tmp_path / 'from-file.db'}\n")
    after = run("migrate", "--env-file", str(env_file), cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert (tmp_path / "from-file.db").is_file()
    before = run("--env-file", str(env_file), "providers", "--json", cwd=tmp_path)
    assert before.returncode == 0, before.stderr
    missing = run("outbox", "--env-file", str(tmp_path / "absent.env"), cwd=tmp_path)
    assert "--env-file" in one_line(missing)


def test_resending_a_delivery_that_does_not_exist_says_so(tmp_path: Path) -> None:
    assert run("migrate", cwd=tmp_path).returncode == 0
    result = run("outbox", "resend", "99", cwd=tmp_path)
    assert "no delivery with id 99" in one_line(result)
    assert "queued" not in result.stdout


@pytest.mark.parametrize("url", ["localhost:8000", "127.0.0.1:8000"])
def test_a_url_without_its_scheme_is_told_to_add_http(tmp_path: Path, url: str) -> None:
    line = one_line(run("jobs", cwd=tmp_path, env={"JOBHOOK_URL": url}))
    assert "http://" in line and repr(url) in line
    assert "is `jobhook serve` running" not in line


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path: Path) -> None:
    """`jobhook providers --json | head -1`: the pipe is closed before anything is written."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = run("providers", "--json", cwd=tmp_path, stdout=writer)
    finally:
        os.close(writer)
    assert result.returncode == 141
    assert result.stderr == ""
