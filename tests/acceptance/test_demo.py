"""`jobhook demo` as a person runs it: in a terminal or not, what it shows (failover and a circuit opening
and closing among the rest), and the "serve it again" line it ends with."""

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
    # Every image is mirrored, never refused: the built-in simulator's by right, the demo's aivideoapi's
    # (another loopback server) because the demo allows 127.0.0.1.
    with sqlite3.connect(tmp_path / "demo" / "jobhook.db") as db:
        outcomes = [row[0] for row in db.execute("SELECT outcome FROM job_events WHERE type = 'mirror'")]
    assert outcomes and set(outcomes) == {"done"}, outcomes
    assert list((tmp_path / "demo" / "media").glob("job_*/0.*"))


def line_of(out: str, *parts: str) -> int:
    """The index of the one line holding every part, in order."""
    lines = [n for n, line in enumerate(out.splitlines()) if _in_order(line, parts)]
    assert len(lines) == 1, (parts, lines, out)
    return lines[0]


def _in_order(line: str, parts: tuple[str, ...]) -> bool:
    at = 0
    for part in parts:
        at = line.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


def test_the_demo_shows_a_failover_and_a_circuit_opening_then_closing(tmp_path: Path) -> None:
    """SPEC §8 as it happens: a job refused by its first candidate (out of credits) done by its second,
    both attempts shown; two refusals in a row open that provider's circuit, a job skips it, another
    waits for it, probes it after the cooldown and closes it; the backend receives both circuit events."""
    out = run_demo(tmp_path, stdin_terminal=False)
    assert "every job ended as scripted" in out
    assert "a second provider, aivideoapi" in out and "another simulator" in out  # said to be simulated

    # The failover, and both attempts.
    refused = line_of(out, "switch", "aivideoapi refused it: HTTP 402 insufficient_credits")
    moved = line_of(out, "switch", "failover aivideoapi → simulator")
    ended = line_of(
        out, "✓ switch", "completed", "attempts: aivideoapi rejected (insufficient_credits), simulator completed"
    )
    assert refused < moved < ended

    # The circuit: opened by the second refusal in a row, skipped, waited for, probed, closed.
    opened = line_of(out, "again", "provider.circuit_opened: aivideoapi failed 2 in a row (insufficient_credits)")
    line_of(out, "✓ skip", "attempts: simulator completed")
    waits = line_of(out, "probe", "waits queued, not sent: aivideoapi's circuit is open until")
    closed = line_of(out, "probe", "provider.circuit_closed: aivideoapi took the probe")
    line_of(out, "✓ probe", "attempts: aivideoapi completed")
    assert opened < waits < closed
    line_of(out, "✓ aivideoapi received 3 creations: 2 refused, none while its circuit was open", "closed again")
    received_open = line_of(out, "backend received provider.circuit_opened: aivideoapi")
    received_closed = line_of(out, "backend received provider.circuit_closed: aivideoapi")
    assert opened < received_open < received_closed
    line_of(out, "✓ your backend received", "1 provider.circuit_opened", "1 provider.circuit_closed")

    # What was printed is what the database holds.
    with sqlite3.connect(tmp_path / "demo" / "jobhook.db") as db:
        attempts = db.execute(
            "SELECT json_extract(j.metadata, '$.demo'), a.provider, a.state FROM attempts a "
            "JOIN jobs j ON j.id = a.job_id ORDER BY j.id, a.seq"
        ).fetchall()
        circuit = db.execute(
            "SELECT json_extract(j.metadata, '$.demo'), e.outcome FROM job_events e JOIN jobs j ON j.id = e.job_id "
            "WHERE e.type = 'circuit' ORDER BY e.id"
        ).fetchall()
    routed = [row for row in attempts if row[0] in ("switch", "again", "skip", "probe")]
    assert routed == [
        ("switch", "aivideoapi", "rejected"),
        ("switch", "simulator", "completed"),
        ("again", "aivideoapi", "rejected"),
        ("again", "simulator", "completed"),
        ("skip", "simulator", "completed"),
        ("probe", "aivideoapi", "completed"),
    ]
    assert circuit == [("again", "opened"), ("probe", "waiting"), ("probe", "closed")]


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
                "again",
                "card",
                "cover",
                "label",
                "logo",
                "neon",
                "poster",
                "probe",
                "skip",
                "switch",
            ]
            images = [image for job in jobs if job["status"] == "completed" for image in job["result"]["images"]]
            assert len(images) == 9
            for image in images:
                # The demo's own server (and its simulator) is gone: the dashboard shows jobhook's copies.
                answer = client.get(image["mirror_url"])
                assert answer.status_code == 200, (image, answer.text)
                assert answer.headers["content-type"] == "image/png"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
