"""`jobhook demo` as a person runs it: in a terminal or not, and the "serve it again" line it ends with."""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx

from tests.acceptance.harness import free_port, jobhook_command


def run_demo(tmp_path: Path, *args: str, stdin_terminal: bool) -> str:
    """The demo with its output on a terminal (a pty), stdin on that terminal too or on /dev/null;
    what it printed, once it has exited 0."""
    controller, terminal = pty.openpty()
    with contextlib.ExitStack() as stack:
        stdin = terminal if stdin_terminal else stack.enter_context(open(os.devnull, "rb"))
        process = subprocess.Popen(
            jobhook_command("demo", "--dir", str(tmp_path / "demo"), *args),
            stdin=stdin,
            stdout=terminal,
            stderr=terminal,
            cwd=tmp_path,
            env={**os.environ, "NO_COLOR": "1"},
        )
    os.close(terminal)
    chunks = []
    deadline = time.monotonic() + 120  # did not hang; the run itself takes seconds
    while time.monotonic() < deadline:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: every holder of the terminal has closed it
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    output = b"".join(chunks).decode().replace("\r\n", "\n")
    assert process.wait(timeout=10) == 0, output
    return output


def test_without_someone_at_the_terminal_the_demo_neither_pauses_nor_lingers(tmp_path: Path) -> None:
    """Output on a terminal but stdin not (a pipe, CI, `< /dev/null`): nobody will open the dashboard."""
    out = run_demo(tmp_path, stdin_terminal=False)
    assert "starting in" not in out
    assert "stays up" not in out
    assert "every job ended as scripted" in out
    assert 'answered "duplicate"' in out
    assert "refused: stale_timestamp" in out
    assert "HTTP 404" in out  # the forged callback
    assert "status → completed (by poll)" in out
    assert "status → failed" in out
    assert (tmp_path / "demo" / "jobhook.db").exists()
    # The simulator's images are served on loopback by jobhook itself: they are mirrored without
    # JOBHOOK_MIRROR_ALLOW_NETWORKS (the demo sets nothing of the user's), never refused.
    with sqlite3.connect(tmp_path / "demo" / "jobhook.db") as db:
        outcomes = [row[0] for row in db.execute("SELECT outcome FROM job_events WHERE type = 'mirror'")]
    assert outcomes and set(outcomes) == {"done"}, outcomes
    assert list((tmp_path / "demo" / "media").glob("job_*/0.*"))


def test_in_a_terminal_the_waits_are_said_and_serve_it_again_serves_the_jobs_and_their_images(
    tmp_path: Path,
) -> None:
    out = run_demo(tmp_path, "--linger", "0.2", stdin_terminal=True)
    assert "(starting in 5 s: time to open the dashboard)" in out
    assert "stays up for 0.2 s more" in out and "--linger 0 skips this wait" in out
    # Everything to know is said before the wait, not after it.
    assert out.index("serve it again") < out.index("stays up") and out.index("demo finished") < out.index("stays up")

    (line,) = [line for line in out.splitlines() if "serve it again" in line]
    command = line.split("serve it again", 1)[1].strip()
    assert command.endswith(" serve")
    port = free_port()
    # As the user would: pasted into a shell, from another folder (only the port is ours: 8000 may be taken).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with (tmp_path / "again.log").open("wb") as log:
        server = subprocess.Popen(
            ["bash", "-c", f"{command} --port {port}"],
            cwd=elsewhere,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole below
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None, (tmp_path / "again.log").read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz").status_code == 200:
                        break
                assert time.monotonic() < deadline, (tmp_path / "again.log").read_text()
                time.sleep(0.1)
            jobs = client.get("/v1/jobs").json()["jobs"]
            assert sorted(job["metadata"]["demo"] for job in jobs) == [
                "card",
                "cover",
                "label",
                "logo",
                "neon",
                "poster",
            ]
            images = [image for job in jobs if job["status"] == "completed" for image in job["result"]["images"]]
            assert len(images) == 5
            for image in images:
                # The demo's own server (and its simulator) is gone: the dashboard shows jobhook's copies.
                answer = client.get(image["mirror_url"])
                assert answer.status_code == 200, (image, answer.text)
                assert answer.headers["content-type"] == "image/png"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
