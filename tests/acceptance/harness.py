"""`jobhook serve` as a real child process: started, probed, killed with SIGKILL, restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fakes.server import free_socket


def free_port() -> int:
    sock = free_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def jobhook_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "service", *args]


class ServeProcess:
    def __init__(
        self, tmp_path: Path, env: dict[str, str], port: int | None = None, *, database: str | None = None
    ) -> None:
        """`database`: JOBHOOK_DATABASE (the `database` fixture's, to run on each engine); by default
        a SQLite file in tmp_path."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "JOBHOOK_DATABASE": database or str(tmp_path / "jobhook.db"),
            "JOBHOOK_MEDIA_DIR": str(tmp_path / "media"),
            "JOBHOOK_PUBLIC_URL": self.url,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    async def start(self, timeout: float = 15) -> None:
        self.spawn()
        await self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process and return at once (it is not ready yet: see wait_ready)."""
        self.starts += 1
        with (self.tmp_path / f"serve-{self.starts}.log").open("wb") as log:  # the child keeps its own fd
            self.process = subprocess.Popen(
                jobhook_command("serve", "--port", str(self.port)), env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    async def wait_ready(self, timeout: float = 15) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"jobhook exited: {self.log()}")
                try:
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"jobhook did not become ready: {self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.tmp_path.glob("serve-*.log")))
