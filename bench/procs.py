"""Processes of the bench: the real service, the bare app, the fake provider; ports; CPU from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
JOBHOOK = str(Path(sys.executable).with_name("jobhook"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"  # every byte of the bench stays on loopback


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int, path: str | None = None) -> float:
    """utime + stime of the whole process (all its threads), in seconds, from /proc/<pid>/stat
    (or of one thread, from /proc/<pid>/task/<tid>/stat given as `path`)."""
    with open(path or f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    # After "pid (comm)": field 3 is state, so utime (14) and stime (15) are at 11 and 12 here.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy (not idle, not waiting for I/O), from /proc/stat."""
    with open("/proc/stat", "rb") as fh:
        fields = [int(x) for x in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any JOBHOOK_* of the caller's, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOBHOOK_")}
    env.update(extra)
    return env


class Proc:
    """A child process we started; stopped by its own pid only."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.name = name
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        self.pid = self.popen.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def wait_http(self, path: str = "/healthz", timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}); see {self.log}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer {path} within {timeout:g} s; see {self.log}")

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def kill9(self) -> None:
        """SIGKILL, as a crash: nothing of the service's shutdown runs."""
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait()


def start_jobhook(workdir: Path, name: str, db: Path | str, port: int, settings: dict[str, str]) -> Proc:
    env = clean_env(
        JOBHOOK_DATABASE=str(db),
        JOBHOOK_MEDIA_DIR=str(workdir / f"{name}-media"),
        JOBHOOK_PUBLIC_URL=f"http://{HOST}:{port}",
        JOBHOOK_SIMULATOR="false",
        JOBHOOK_MIRROR_IMAGES="false",
        **settings,
    )
    proc = Proc(name, [JOBHOOK, "serve", "--host", HOST, "--port", str(port)], env, workdir / f"{name}.log", port)
    proc.wait_http("/healthz")
    return proc


def migrate(db: Path | str, log: Path) -> None:
    """`jobhook migrate` on a SQLite file or a PostgreSQL URL."""
    env = clean_env(JOBHOOK_DATABASE=str(db), JOBHOOK_SIMULATOR="false")
    with log.open("ab") as out:
        subprocess.run([JOBHOOK, "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT, check=True, cwd=REPO)


def start_bare(
    workdir: Path, name: str, port: int, job_json: Path | None = None, list_json: Path | None = None
) -> Proc:
    argv = [PYTHON, str(BENCH / "bare.py"), "--port", str(port)]
    if job_json is not None:
        argv += ["--job-json", str(job_json)]
    if list_json is not None:
        argv += ["--list-json", str(list_json)]
    proc = Proc(name, argv, clean_env(), workdir / f"{name}.log", port)
    proc.wait_http("/healthz")
    return proc


def start_fake(workdir: Path, name: str, port: int, latency: float) -> Proc:
    argv = [PYTHON, str(BENCH / "fake_provider.py"), "--port", str(port), "--poll-latency", str(latency)]
    proc = Proc(name, argv, clean_env(), workdir / f"{name}.log", port)
    proc.wait_http("/_stats")
    return proc


class CPUSampler:
    """Samples utime+stime of some processes every `interval` s in a thread, for windows cut later."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1, threads_of: str | None = None) -> None:
        """`threads_of`: the name (in `pids`) of a process whose threads are sampled one by one too,
        as "<name>:<tid>" (the main thread's tid is the pid)."""
        self.pids = dict(pids)
        self.threads_of = threads_of
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def _sample(self) -> None:
        values = {"machine": machine_busy_seconds()}
        for name, pid in list(self.pids.items()):
            with contextlib.suppress(OSError, IndexError, ValueError):
                values[name] = cpu_seconds(pid)
        if self.threads_of in self.pids:
            pid = self.pids[self.threads_of]
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        values[f"{self.threads_of}:{tid}"] = cpu_seconds(int(tid), f"/proc/{pid}/task/{tid}/stat")
        self.samples.append((time.monotonic(), values))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> CPUSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def names(self) -> set[str]:
        return {key for _, values in self.samples for key in values}

    def percent(self, name: str, start: float, end: float) -> float | None:
        """CPU of `name` over [start, end] (monotonic), as % of one core, from the nearest samples."""
        inside = [
            (t, v[name]) for t, v in self.samples if name in v and start - self.interval <= t <= end + self.interval
        ]
        if len(inside) < 2:
            return None
        first = min(inside, key=lambda item: abs(item[0] - start))
        last = min(inside, key=lambda item: abs(item[0] - end))
        if last[0] <= first[0]:
            return None
        return 100.0 * (last[1] - first[1]) / (last[0] - first[0])


def stop_all(procs: Iterable[Proc | None]) -> None:
    for proc in procs:
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.stop()
