"""The store's purge queries (a mixin of every engine's store): which finished jobs may go, and removing
them with every row they own. `service.maintenance.purge` drives them batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from service.store.base import PURGEABLE, PurgedRows

if TYPE_CHECKING:
    from service.store.tx import Dialect, Row, Tx

T = TypeVar("T")

_STATUSES = ", ".join(f"'{status}'" for status in PURGEABLE)
_OLD_FINISHED = f"status IN ({_STATUSES}) AND COALESCE(finished_at, updated_at) < ?"
# Work the running service may be doing on a job right now: a due row (leased while it runs), or a
# delivery still pending.
_BUSY = (
    "(EXISTS (SELECT 1 FROM due WHERE due.job_id = jobs.id)"
    " OR EXISTS (SELECT 1 FROM notifications n JOIN outbox o ON o.notification_id = n.id"
    " WHERE n.job_id = jobs.id AND o.status = 'pending'))"
)
_CHOOSE = f"SELECT id, status FROM jobs WHERE {_OLD_FINISHED} AND id > ? AND NOT {_BUSY} ORDER BY id LIMIT ?"
_PROVIDER_NOTIFICATIONS = (
    "SELECT id FROM notifications WHERE job_id IS NULL AND created_at < ? AND NOT EXISTS"
    " (SELECT 1 FROM outbox WHERE outbox.notification_id = notifications.id AND outbox.status = 'pending')"
)
Chosen = list[tuple[str, str]]  # (job id, status)


def _chosen(rows: Iterable[Row]) -> Chosen:
    return [(str(row[0]), str(row[1])) for row in rows]


def _ids(job_ids: Sequence[str]) -> tuple[str]:
    return (orjson.dumps(list(job_ids)).decode(),)


class PurgeQueries:
    if TYPE_CHECKING:
        dialect: Dialect

        async def _write(self, work: Callable[[Tx], T]) -> T: ...

        async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Row]: ...

    async def purgeable(self, cutoff: float, after: str, limit: int) -> Chosen:
        """The next `limit` jobs a purge may remove, by id after `after` (finished before `cutoff`, idle)."""
        return _chosen(await self._read(_CHOOSE, (cutoff, after, limit)))

    async def count_job_rows(self, job_ids: Sequence[str]) -> PurgedRows:
        """What removing these jobs would remove with them."""
        ids = self.dialect.json_ids  # a batch's ids, as one JSON array parameter
        rows = await self._read(
            f"SELECT (SELECT COUNT(*) FROM job_events WHERE job_id IN ({ids})),"
            f" (SELECT COUNT(*) FROM callback_receipts WHERE job_id IN ({ids})),"
            f" (SELECT COUNT(*) FROM notifications WHERE job_id IN ({ids})),"
            f" (SELECT COUNT(*) FROM outbox WHERE notification_id IN"
            f" (SELECT id FROM notifications WHERE job_id IN ({ids})))",
            _ids(job_ids) * 4,
        )
        events, receipts, notifications, deliveries = rows[0]
        return PurgedRows(events, receipts, notifications, deliveries)

    async def delete_purgeable(self, cutoff: float, after: str, limit: int) -> tuple[Chosen, PurgedRows]:
        """Choose the next batch as `purgeable` does and delete it, in one transaction: the jobs and every
        row they own, children first (the counts are these deletes' own; ON DELETE CASCADE would do the
        same, but would not say how many)."""

        def write(tx: Tx) -> tuple[Chosen, PurgedRows]:
            chosen = _chosen(tx.execute(_CHOOSE, (cutoff, after, limit)))
            if not chosen:
                return chosen, PurgedRows()
            batch, ids = _ids([job_id for job_id, _ in chosen]), tx.dialect.json_ids
            deliveries = tx.execute(
                f"DELETE FROM outbox WHERE notification_id IN (SELECT id FROM notifications WHERE job_id IN ({ids}))",
                batch,
            ).rowcount
            notifications = tx.execute(f"DELETE FROM notifications WHERE job_id IN ({ids})", batch).rowcount
            events = tx.execute(f"DELETE FROM job_events WHERE job_id IN ({ids})", batch).rowcount
            receipts = tx.execute(f"DELETE FROM callback_receipts WHERE job_id IN ({ids})", batch).rowcount
            tx.execute(f"DELETE FROM job_event_bounds WHERE job_id IN ({ids})", batch)
            tx.execute(f"DELETE FROM attempts WHERE job_id IN ({ids})", batch)
            tx.execute(f"DELETE FROM due WHERE job_id IN ({ids})", batch)  # none: busy jobs are not chosen
            tx.execute(f"DELETE FROM jobs WHERE id IN ({ids})", batch)
            return chosen, PurgedRows(events, receipts, notifications, deliveries)

        return await self._write(write)

    async def count_old_rest(self, cutoff: float) -> tuple[PurgedRows, int]:
        """Provider notifications (no job) delivered before `cutoff`, and refused callbacks before it."""
        rows = await self._read(
            f"SELECT (SELECT COUNT(*) FROM ({_PROVIDER_NOTIFICATIONS}) AS chosen),"
            f" (SELECT COUNT(*) FROM outbox WHERE notification_id IN ({_PROVIDER_NOTIFICATIONS})),"
            " (SELECT COUNT(*) FROM refused_callbacks WHERE at < ?)",
            (cutoff,) * 3,
        )
        notifications, deliveries, refused = rows[0]
        return PurgedRows(notifications=notifications, deliveries=deliveries), int(refused)

    async def delete_old_rest(self, cutoff: float) -> tuple[PurgedRows, int]:
        """Delete what `count_old_rest` counts, in one transaction."""

        def write(tx: Tx) -> tuple[PurgedRows, int]:
            params = (cutoff,)
            deliveries = tx.execute(
                f"DELETE FROM outbox WHERE notification_id IN ({_PROVIDER_NOTIFICATIONS})", params
            ).rowcount
            notifications = tx.execute(f"DELETE FROM notifications WHERE id IN ({_PROVIDER_NOTIFICATIONS})", params)
            refused = tx.execute("DELETE FROM refused_callbacks WHERE at < ?", params).rowcount
            return PurgedRows(notifications=notifications.rowcount, deliveries=deliveries), int(refused)

        return await self._write(write)

    async def count_kept(self, cutoff: float) -> int:
        """Old finished jobs a purge leaves alone because work on them is still owed."""
        rows = await self._read(f"SELECT COUNT(*) FROM jobs WHERE {_OLD_FINISHED} AND {_BUSY}", (cutoff,))
        return int(rows[0][0])
