"""A real PostgreSQL server for the tests: Debian's binaries, a cluster in a temporary directory.

PostgreSQL refuses to run as root: when the tests run as root (CI does), the cluster belongs to the
unprivileged `postgres` user (Debian's package makes it) and its commands run through `runuser`.
The server listens on 127.0.0.1 at a free port with trust authentication, and durability is off
(fsync) — the tests kill jobhook, never PostgreSQL, so that costs them nothing but time.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.config import Settings
from tests.fakes.server import free_socket

USER = "jobhook"
# Trust authentication never asks for it, but the URLs carry it: a test can look for it in every
# output of a run on PostgreSQL (tests/acceptance/test_secrets.py).
PASSWORD = "pg-PASS-1122334455-never-print"


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_reason() -> str | None:
    """Why a server cannot be started here, or None if it can."""
    if binaries() is None:
        return "PostgreSQL is not installed (Debian's postgresql package; `make test` installs it as root)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no unprivileged `postgres` user to run PostgreSQL as"
    return None


class PostgresServer:
    """One cluster for the whole test session; a fresh database for each test."""

    def __init__(self, *, durable: bool = False, options: str = "") -> None:
        """`durable`: PostgreSQL's own defaults (fsync, synchronous_commit), as the bench wants;
        `options`: more `-c name=value` for the server (the bench loads pg_stat_statements)."""
        bin_dir = binaries()
        assert bin_dir is not None, missing_reason()
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="jobhook-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self.durable = durable
        self.options = options
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True, cwd="/")

    def start(self) -> None:
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
            "-c max_connections=300 -c shared_buffers=128MB"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        if self.options:
            options += f" {self.options}"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip

    @property
    def pid(self) -> int:
        """The postmaster's pid."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(sql)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database, dropped afterwards (with whatever is still connected to it)."""
        name = f"t{os.getpid()}_{next(self._names)}_{int(time.time() * 1000) % 100000}"
        self.admin(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(settings: Settings, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql` (`?` placeholders) read straight from the service's database, either engine."""
    return query_database(str(settings.database_url or settings.database), sql, params)


def query_database(database: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql` (`?` placeholders) on JOBHOOK_DATABASE `database`: a SQLite file or a PostgreSQL URL."""
    if not database.startswith(("postgresql://", "postgres://")):
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            return [tuple(row) for row in db.execute(sql, params).fetchall()]
        finally:
            db.close()
    import psycopg

    with psycopg.connect(database) as connection:
        return [tuple(row) for row in connection.execute(sql.replace("?", "%s"), params).fetchall()]  # type: ignore[arg-type]


def dump_database(database: str) -> list[str]:
    """Every row of every table, as sorted text: equal before and after means nothing changed."""
    if not database.startswith(("postgresql://", "postgres://")):
        with contextlib.closing(sqlite3.connect(database)) as db:
            return list(db.iterdump())
    tables = query_database(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    return sorted(
        f"{table}: {row!r}" for (table,) in tables for row in query_database(database, f"SELECT * FROM {table}")
    )
