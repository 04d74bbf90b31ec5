"""The PostgreSQL store: several jobhook replicas on one database (JOBHOOK_DATABASE=postgresql://…).

The named operations are the same functions of a `Tx` as on SQLite (service.store.common); what
this module adds is where they run and what holds them together across processes:

- Each write is one transaction on a connection of a pool (psycopg 3, its synchronous API in a
  thread of our own, so that the operations stay plain functions). The rows a write will change are
  read `FOR NO KEY UPDATE`: two replicas writing the same job take turns, and each sees the other's
  commit. A transaction that loses a race to a constraint (the same idempotency key, task id or
  receipt inserted by another replica at once) or to a deadlock is run again, and then sees the
  winner; the constraint, not process memory, decides.
- Due work and deliveries are claimed `FOR UPDATE SKIP LOCKED` and leased: a replica that dies
  holding them hands them back when the lease runs out.
- Every commit that changed jobs, queued notifications or a provider's health says so with
  `pg_notify` (delivered on COMMIT); each replica LISTENs, so that `?wait=N`, the dashboard's stream
  and the outbox worker wake on any replica's change, and provider health is shared.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import orjson

from service.errors import SchemaTooNew, StorageError
from service.store.base import OutboxPolicy, WriterStats, redact_url
from service.store.common import Store
from service.store.tx import Dialect, Row, Tx

log = logging.getLogger("jobhook.store")

T = TypeVar("T")
CHANNEL = "jobhook_changes"
POOL_SIZE = 10
# How long a write waits for a row or table lock another session holds before it gives up (and the
# request is answered 503, to be retried): replicas hold row locks for milliseconds, so a wait this
# long means something else holds the database (a migration, an operator's LOCK, a stuck session).
LOCK_TIMEOUT = 10.0
RETRIES = 5  # a write that lost a race (constraint, deadlock, serialization) is run this many times at most
NOTIFY_IDS = 200  # job ids per notification (a payload holds at most 8,000 bytes)
MIGRATION_LOCK = 0x6A6F62686F6F6B  # pg_advisory_xact_lock key: "jobhook"


def _dialect() -> Dialect:
    import psycopg

    return Dialect(
        "postgresql",
        integrity_errors=(psycopg.errors.IntegrityError,),
        lock_row=" FOR NO KEY UPDATE",
        skip_locked=" FOR UPDATE SKIP LOCKED",
        json_ids="SELECT jsonb_array_elements_text(CAST(? AS jsonb))",
    )


def migrations() -> list[tuple[int, str]]:
    """The numbered PostgreSQL migrations shipped with this code, in order."""
    import importlib.resources

    found = []
    folder = importlib.resources.files("service.store") / "migrations_postgresql"
    for entry in folder.iterdir():
        match = re.match(r"^(\d{4})_.*\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """`?` placeholders (the store's shared SQL) → psycopg's `%s`; a literal `%` is doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgRow:
    """A row by position or by column name, as sqlite3.Row is."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str, /) -> Any:
        return self._values[key] if isinstance(key, int) else self._values[self._index[key]]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], PgRow]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: PgRow(values, index)


class _Connection:
    """What a `Tx` needs of a connection: execute with `?` placeholders."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self._connection.execute(translate(sql), tuple(parameters))


class PostgresStore(Store):
    """jobhook's state in a PostgreSQL database, shared by any number of replicas."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        mirror_images: bool = False,
        policy: OutboxPolicy | None = None,
        pool_size: int = POOL_SIZE,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> None:
        super().__init__(clock=clock, mirror_images=mirror_images, policy=policy)
        self.dialect = _dialect()
        self.url = url
        self.replica = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._pool_size = pool_size
        self._lock_timeout = lock_timeout
        self._pool: Any = None
        self._threads = concurrent.futures.ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="jobhook-pg")
        self._listener: asyncio.Task[None] | None = None
        self._stats = WriterStats()

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.url)!r})"

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self, *, migrate: bool = True) -> None:
        """Connect (a pool), bring the schema up to date (unless `migrate` is False: a maintenance
        command checks the version instead), and start listening for other replicas."""
        import psycopg
        import psycopg_pool

        try:
            # One connection first, so that a database that cannot be reached says why in one line
            # (the pool would only time out, retrying in the background).
            def reach() -> None:
                with psycopg.connect(self.url, connect_timeout=10):
                    pass

            await self._in_thread(reach)
            self._pool = psycopg_pool.ConnectionPool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                kwargs={"autocommit": True, "row_factory": _row_factory},
                configure=self._configure,
                open=False,
                name="jobhook",
            )
            await self._in_thread(lambda: self._pool.open(wait=True, timeout=10))
            if migrate:
                await self.migrate()
            elif await self.schema_version() == 0:
                return  # an empty database: the caller's version check says what to do
            rows = await self._read("SELECT provider FROM provider_state WHERE degraded = 1")
            self.degraded = {row[0] for row in rows}
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="jobhook-pg-listen")
        except (psycopg.Error, psycopg_pool.PoolTimeout, OSError) as exc:
            await self.close()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise StorageError(f"cannot open database {redact_url(self.url)}: {reason}") from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                await self._in_thread(pool.close)
        self._threads.shutdown(wait=False)

    def _configure(self, connection: Any) -> None:
        """Each new connection of the pool: bounded lock waits."""
        connection.execute(f"SET lock_timeout = {int(self._lock_timeout * 1000)}")

    @property
    def write_stats(self) -> WriterStats:
        return self._stats

    async def migrate(self) -> int:
        """Apply the migrations this database lacks, in one transaction, under an advisory lock (several
        replicas may start at once); return the schema version."""
        return await self._in_thread(self._migrate)

    def _migrate(self) -> int:
        known = migrations()
        latest = known[-1][0]
        with self._connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            connection.execute("CREATE TABLE IF NOT EXISTS jobhook_schema (version INTEGER NOT NULL)")
            row = connection.execute("SELECT version FROM jobhook_schema").fetchone()
            current = int(row[0]) if row is not None else 0
            if current > latest:
                raise SchemaTooNew(
                    f"database {redact_url(self.url)} has schema version {current}, newer than this jobhook "
                    f"knows ({latest}); upgrade jobhook"
                )
            for version, sql in known:
                if version > current:
                    connection.execute(sql)  # no parameters: several statements in one go
            if row is None:
                connection.execute("INSERT INTO jobhook_schema (version) VALUES (%s)", (latest,))
            else:
                connection.execute("UPDATE jobhook_schema SET version = %s", (latest,))
        return latest

    async def schema_version(self) -> int:
        rows = await self._read("SELECT to_regclass('jobhook_schema') IS NOT NULL")
        if not rows or not rows[0][0]:
            return 0
        rows = await self._read("SELECT version FROM jobhook_schema")
        return int(rows[0][0]) if rows else 0

    # -- plumbing ----------------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._pool is None:
            raise StorageError("the database is not open")
        return self._pool.connection(timeout=30)

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn)

    def _transaction(self, work: Callable[[Tx], T]) -> tuple[Tx, T, float, float]:
        """In a thread: `work` in one transaction, run again if it lost a race; what it changed is
        announced to the other replicas on COMMIT. Returns the Tx, its value, and the seconds its
        statements and its COMMIT took."""
        import psycopg

        retryable = (
            psycopg.errors.UniqueViolation,
            psycopg.errors.DeadlockDetected,
            psycopg.errors.SerializationFailure,
        )
        with self._connection() as connection:
            for attempt in range(RETRIES):
                try:
                    started = time.perf_counter()
                    with connection.transaction():
                        tx = self._tx(_Connection(connection))
                        value = work(tx)
                        for payload in _announcements(self.replica, tx):
                            connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                        committing = time.perf_counter()
                    done = time.perf_counter()
                    return tx, value, committing - started, done - committing
                except retryable:
                    if attempt == RETRIES - 1:
                        raise
                    log.debug("a write lost a race (attempt %d); running it again", attempt + 1)
        raise AssertionError("unreachable")

    async def _write(self, work: Callable[[Tx], T]) -> T:
        import psycopg
        import psycopg_pool

        future = asyncio.get_running_loop().run_in_executor(self._threads, self._transaction, work)

        def committed(done: asyncio.Future[tuple[Tx, T, float, float]]) -> None:
            # Even if the caller was cancelled meanwhile: a committed change is announced.
            if not done.cancelled() and done.exception() is None:
                tx, _, write_seconds, commit_seconds = done.result()
                self._stats.commits += 1
                self._stats.writes += 1
                self._stats.write_seconds += write_seconds
                self._stats.commit_seconds += commit_seconds
                self._committed(tx)

        future.add_done_callback(committed)
        try:
            _, value, _, _ = await asyncio.shield(future)
        except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
            raise StorageError(f"write refused by the database: {exc}") from exc
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StorageError(f"write failed: {exc}") from exc
        return value

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        import psycopg
        import psycopg_pool

        def read() -> list[Row]:
            with self._connection() as connection:
                rows: list[Row] = connection.execute(translate(sql), tuple(params)).fetchall()
                return rows

        try:
            return await self._in_thread(read)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StorageError(f"read failed: {exc}") from exc

    # -- the other replicas ------------------------------------------------------------------------

    async def _listen(self) -> None:
        """LISTEN for the other replicas' commits, reconnecting when the connection drops."""
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    async for message in connection.notifies():
                        self._heard(message.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for other replicas' changes failed: %s; reconnecting", exc)
                await asyncio.sleep(1.0)

    def _heard(self, payload: str) -> None:
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict) or message.get("from") == self.replica:
            return  # our own commit: announced already
        for provider, degraded in (message.get("health") or {}).items():
            (self.degraded.add if degraded else self.degraded.discard)(provider)
        if message.get("outbox"):
            for wake in self._outbox_listeners:
                wake()
        jobs = message.get("jobs")
        if jobs:
            changed = frozenset(str(job_id) for job_id in jobs)
            for listener in self._listeners:
                listener(changed)


def _announcements(replica: str, tx: Tx) -> list[str]:
    """What a transaction tells the other replicas on COMMIT, in payloads that fit NOTIFY."""
    if not (tx.changed or tx.outbox_changed or tx.health):
        return []
    jobs = sorted(tx.changed)
    payloads = []
    for start in range(0, max(len(jobs), 1), NOTIFY_IDS):
        message: dict[str, Any] = {"from": replica, "jobs": jobs[start : start + NOTIFY_IDS]}
        if start == 0:
            message["outbox"] = tx.outbox_changed
            message["health"] = tx.health
        payloads.append(orjson.dumps(message).decode())
    return payloads
