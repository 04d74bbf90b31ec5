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
  `pg_notify`; each replica LISTENs, so that `?wait=N`, the dashboard's stream and the outbox worker
  wake on any replica's change, and provider health is shared. A provider's health (rare, and held
  only in memory elsewhere) is notified inside its transaction, delivered on COMMIT; everything else
  right after the COMMIT, in a statement of its own. NOTIFY inside a transaction takes a lock that
  every notifying transaction of the cluster waits for until the holder's COMMIT is flushed: their
  commits took turns, one WAL flush at a time (the open loop's p99 of ~80–120 ms on PostgreSQL at a
  quarter of its capacity, bench/README.md). A replica that dies between a COMMIT and its NOTIFY
  leaves the others to find that change on their own: a waiter at its timeout, the outbox worker on
  its next round (at most 15 s).
- The hot path runs from the event loop on a second, asynchronous pool, one prepared statement each:
  a job's read (the job, its attempts and its row version at once), and the plain callback, written
  by one server-side function call (service.store.pg_callback; any other callback takes the general
  transaction above).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from service.domain.job import Job
from service.domain.status import Observation
from service.errors import SchemaTooNew, StorageError
from service.store import pg_callback
from service.store.base import CallbackResult, OutboxPolicy, ReceiptKind, WriterStats, redact_url
from service.store.common import Store
from service.store.pg_batches import CallbackBatches
from service.store.tx import Dialect, Row, Tx, attempt_from_row, job_from_row, loads

log = logging.getLogger("jobhook.store")

T = TypeVar("T")
CHANNEL = "jobhook_changes"
POOL_SIZE = 10
# The event loop's pool (the hot path): a connection is held from a callback's call to its COMMIT's
# flush, so at most this many callbacks share a WAL flush (PostgreSQL's group commit). 20 carried ~40 %
# more callbacks than 10 where a flush took milliseconds (bench/README.md); a replica then holds up to
# 20 + POOL_SIZE + 1 (LISTEN) connections, the second pool growing only as the general path needs it.
LOOP_POOL_SIZE = 20
# How long a write waits for a row or table lock another session holds before it gives up (and the
# request is answered 503, to be retried): replicas hold row locks for milliseconds, so a wait this
# long means something else holds the database (a migration, an operator's LOCK, a stuck session).
LOCK_TIMEOUT = 10.0
RETRIES = 5  # a write that lost a race (constraint, deadlock, serialization) is run this many times at most
NOTIFY_IDS = 200  # job ids per notification (a payload holds at most 8,000 bytes)
# Jobs remembered as past their bound of refused and duplicate deliveries: their callbacks go straight
# to the general transaction (which counts them on the summary event), without a call that would
# only answer 'bounded'. A hint for speed only: what is written is decided in the database.
BOUNDED_JOBS = 1024
MIGRATION_LOCK = 0x6A6F62686F6F6B  # pg_advisory_xact_lock key: "jobhook"
# A job, its attempts and its row version (`xmin`, which every write to the row changes) in one statement.
JOB_SQL = (
    # Each attempt as its whole row (to_json: every column by name), read by the same attempt_from_row as
    # the general path's, so that a column added to attempts is never left out of one of the two reads.
    "SELECT j.*, j.xmin::text::bigint AS row_version, (SELECT json_agg(to_json(a) ORDER BY a.seq) "
    "FROM attempts a WHERE a.job_id = j.id)::text AS attempt_rows FROM jobs j WHERE j.id = %s"
)


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
        fast_callbacks: bool = True,
        loop_pool_size: int = LOOP_POOL_SIZE,
    ) -> None:
        """`fast_callbacks`: the plain callback in one round trip (JOBHOOK_POSTGRESQL_FAST_PATH); off,
        every callback takes the general transaction."""
        super().__init__(clock=clock, mirror_images=mirror_images, policy=policy)
        self.dialect = _dialect()
        self.url = url
        self.replica = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._pool_size = pool_size
        self._loop_pool_size = loop_pool_size
        self._lock_timeout = lock_timeout
        self._pool: Any = None
        self._loop_pool: Any = None  # psycopg's AsyncConnectionPool: the hot path, from the event loop
        self._batches: CallbackBatches | None = None  # plain callbacks, written in batches on that pool
        self.fast_callbacks = fast_callbacks
        self._job_index: dict[str, int] = {}  # JOB_SQL's column → position (its description, once)
        # How genuine callbacks were written: "accepted" and "duplicate" in one round trip, "general"
        # by the general transaction (for the bench and the tests).
        self.callback_paths: collections.Counter[str] = collections.Counter()
        self._bounded: collections.OrderedDict[str, None] = collections.OrderedDict()
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
            loop_pool = psycopg_pool.AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self._loop_pool_size,
                kwargs={"autocommit": True, "row_factory": _row_factory},
                configure=self._configure_async,
                open=False,
                name="jobhook-loop",
            )
            await loop_pool.open(wait=True, timeout=10)
            self._loop_pool = loop_pool
            self._batches = CallbackBatches(
                lambda: loop_pool.connection(timeout=30),
                on_commit=self._batch_committed,
                announce=self._announce_batch,
            )
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
        if self._batches is not None:
            batches, self._batches = self._batches, None
            await batches.close()
        if self._loop_pool is not None:
            loop_pool, self._loop_pool = self._loop_pool, None
            with contextlib.suppress(Exception):
                await loop_pool.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                await self._in_thread(pool.close)
        self._threads.shutdown(wait=False)

    def _configure(self, connection: Any) -> None:
        """Each new connection of the pool: bounded lock waits."""
        connection.execute(f"SET lock_timeout = {int(self._lock_timeout * 1000)}")

    async def _configure_async(self, connection: Any) -> None:
        """Each new connection of the event loop's pool: bounded lock waits, and no sequential scans.

        This pool runs only point lookups by key (the job's read, `jobhook_callbacks`), as prepared
        statements, whose plans PostgreSQL makes once per connection and keeps. Planned while a table
        was still empty — a new database, or the bench's — a lookup is cheapest as a scan of its one
        page, and that plan stayed while the table grew: the callback's check of its receipt took
        250 µs of the server's CPU at 40,000 receipts (bench/README.md), until an ANALYZE came.
        """
        await connection.execute(f"SET lock_timeout = {int(self._lock_timeout * 1000)}")
        await connection.execute("SET enable_seqscan = off")

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
                        announcements = _announcements(self.replica, tx)
                        if tx.health:  # rare, and kept only in memory elsewhere: on COMMIT, or not at all
                            _notify(connection, announcements)
                            announcements = []
                        committing = time.perf_counter()
                    done = time.perf_counter()
                    try:
                        _notify(connection, announcements)
                    except psycopg.Error as exc:  # committed: the others hear of it later, or not
                        log.warning("telling the other replicas of a commit failed: %s", exc)
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

    # -- the hot path ------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """The job with its attempts, and its row version (`Job.version`), in one statement."""
        import psycopg
        import psycopg_pool
        from psycopg.rows import tuple_row

        if self._loop_pool is None:
            return await super().get_job(job_id)
        try:
            async with self._loop_pool.connection(timeout=30) as connection:
                cursor = connection.cursor(row_factory=tuple_row)
                await cursor.execute(JOB_SQL, (job_id,), prepare=True)
                values = await cursor.fetchone()
                if values is not None and len(values) != len(self._job_index):
                    # Rows as tuples, named once: a description per read costs more than the read.
                    self._job_index = {column.name: n for n, column in enumerate(cursor.description or ())}
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StorageError(f"read failed: {exc}") from exc
        if values is None:
            return None
        row = PgRow(values, self._job_index)
        attempts = tuple(attempt_from_row(item) for item in loads(row["attempt_rows"]) or ())
        return job_from_row(row, attempts, row["row_version"])

    async def record_callback(
        self,
        job_id: str,
        event_key: str,
        observation: Observation,
        detail: Mapping[str, Any],
        *,
        bind_task_id: str | None,
        cost_if_completed: float | None,
        poll_if_bound: float | None = None,
        seq: int | None = None,
        seen: Job | None = None,
    ) -> CallbackResult:
        """The plain case (and a repeat) in one round trip when it can be; the general transaction
        otherwise (service.store.pg_callback says which is which)."""
        fast = self.fast_callbacks and self._batches is not None and bind_task_id is None
        fast = fast and job_id not in self._bounded
        if fast and seen is not None and seen.id == job_id:
            taken = await self._callback_in_one(seen, event_key, observation, detail, cost_if_completed)
            if taken is not None:
                self.callback_paths[str(taken.kind)] += 1
                return taken
        self.callback_paths["general"] += 1
        return await super().record_callback(
            job_id,
            event_key,
            observation,
            detail,
            bind_task_id=bind_task_id,
            cost_if_completed=cost_if_completed,
            poll_if_bound=poll_if_bound,
            seq=seq,
        )

    async def _callback_in_one(
        self,
        seen: Job,
        event_key: str,
        observation: Observation,
        detail: Mapping[str, Any],
        cost_if_completed: float | None,
    ) -> CallbackResult | None:
        """One call of `jobhook_callback`, in a batch: the result once committed, or None when it
        wrote nothing and the general transaction is to write the delivery."""
        import psycopg
        import psycopg_pool

        now = self._clock()
        planned = pg_callback.plan(
            seen,
            event_key,
            observation,
            detail,
            cost_if_completed,
            now=now,
            dialect=self.dialect,
            policy=self.policy,
            mirror_images=self.mirror_images,
        )
        params = pg_callback.parameters(
            seen.id,
            event_key,
            detail,
            now=now,
            version=seen.version,
            provider=seen.provider,
            planned=planned,
            channel=CHANNEL,
            announcement=None,  # told after the batch's COMMIT (_announce_batch)
        )
        assert self._batches is not None
        call = self._batches.submit(params, (seen.id, planned.tx.outbox_changed) if planned is not None else None)

        def committed(done: asyncio.Future[str]) -> None:
            # Even if the caller was cancelled meanwhile: a committed change is announced.
            if done.cancelled() or done.exception() is not None or done.result() in ("fallback", "bounded"):
                return
            self._stats.writes += 1
            if done.result() == "accepted" and planned is not None:
                self._committed(planned.tx)

        call.add_done_callback(committed)
        try:
            outcome = await asyncio.shield(call)
        except (
            psycopg.errors.SerializationFailure,
            psycopg.errors.DeadlockDetected,
            psycopg.errors.UniqueViolation,
        ):
            return None  # lost a race after writing, rolled back: the general transaction decides
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StorageError(f"write failed: {exc}") from exc
        if outcome == "accepted" and planned is not None:
            return CallbackResult(ReceiptKind.ACCEPTED, planned.job, planned.decision)
        if outcome == "duplicate":
            return CallbackResult(ReceiptKind.DUPLICATE, seen, None)
        if outcome == "bounded":
            self._bounded[seen.id] = None
            while len(self._bounded) > BOUNDED_JOBS:
                self._bounded.popitem(last=False)
        return None

    @property
    def callback_batches(self) -> tuple[int, int]:
        """Batches of plain callbacks committed, and the calls they held (for the tests and the bench)."""
        return (self._batches.batches, self._batches.calls) if self._batches is not None else (0, 0)

    async def _announce_batch(self, accepted: list[tuple[str, bool]]) -> None:
        """The jobs a batch of callbacks changed, told to the other replicas after its COMMIT."""
        jobs = sorted({job_id for job_id, _ in accepted})
        payloads = _payloads(self.replica, jobs, outbox=any(queued for _, queued in accepted), health={})
        async with self._loop_pool.connection(timeout=30) as connection:
            for payload in payloads:
                await connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    def _batch_committed(self, calls: int, seconds: float) -> None:
        self._stats.commits += 1
        self._stats.write_seconds += seconds

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


def _notify(connection: Any, payloads: list[str]) -> None:
    for payload in payloads:
        connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


def _announcements(replica: str, tx: Tx) -> list[str]:
    """What a transaction tells the other replicas, in payloads that fit NOTIFY."""
    if not (tx.changed or tx.outbox_changed or tx.health):
        return []
    return _payloads(replica, sorted(tx.changed), outbox=tx.outbox_changed, health=tx.health)


def _payloads(replica: str, jobs: list[str], *, outbox: bool, health: Mapping[str, Any]) -> list[str]:
    payloads = []
    for start in range(0, max(len(jobs), 1), NOTIFY_IDS):
        message: dict[str, Any] = {"from": replica, "jobs": jobs[start : start + NOTIFY_IDS]}
        if start == 0:
            message["outbox"] = outbox
            message["health"] = dict(health)
        payloads.append(orjson.dumps(message).decode())
    return payloads
