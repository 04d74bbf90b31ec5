"""`jobhook serve` on a port already taken (issue 14, item 13): one line naming the port, a non-zero exit,
no banner, no traceback, and no database created."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from tests.acceptance.harness import ServeProcess, jobhook_command
from tests.fakes.server import free_socket


def serve(port: int, tmp_path: Path, host: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOBHOOK_DATABASE": str(tmp_path / "jobhook.db"), "JOBHOOK_MEDIA_DIR": str(tmp_path / "m")}
    return subprocess.run(
        jobhook_command("serve", "--host", host, "--port", str(port)),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_port_in_use_is_one_line_and_a_failure(tmp_path: Path) -> None:
    taken = free_socket()
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = serve(port, tmp_path)
    finally:
        taken.close()
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"jobhook: port {port} is in use on 127.0.0.1: stop what listens there, or pass another --port"
    ]
    assert not (tmp_path / "jobhook.db").exists()


def test_a_port_taken_on_one_of_the_host_names_addresses_is_refused_too(tmp_path: Path) -> None:
    """`--host localhost` listens on each address the name has; one of them taken is enough to refuse."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = serve(port, tmp_path, host="localhost")
    finally:
        taken.close()
    assert result.returncode != 0
    assert result.stderr.startswith(f"jobhook: port {port} is in use on localhost") and "Traceback" not in result.stderr


async def test_a_free_port_still_serves(tmp_path: Path) -> None:
    service = ServeProcess(tmp_path, {})
    await service.start()
    service.stop()
    assert service.log().startswith(f"jobhook on http://127.0.0.1:{service.port}")
