"""The store's outbox and provider-state operations (a mixin of every engine's store, same plumbing).

Rows are claimed with a lease, exactly like due work: a delivery cut short by a crash comes due again,
with the same notification id, so that a receiver can drop what it has already seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from service.store.base import OutboxRow, StoredNotification

if TYPE_CHECKING:
    from service.store.tx import Row, Tx

T = TypeVar("T")

_ROW = "SELECT o.*, n.type, n.job_id, n.provider FROM outbox o JOIN notifications n ON n.id = o.notification_id"


def _row(row: Row) -> OutboxRow:
    return OutboxRow(
        id=row["id"],
        notification_id=row["notification_id"],
        destination=row["destination"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        type=row["type"],
        job_id=row["job_id"],
        provider=row["provider"],
    )


class OutboxQueries:
    if TYPE_CHECKING:

        async def _write(self, work: Callable[[Tx], T]) -> T: ...

        async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Row]: ...

    async def claim_outbox(self, destination: str, now: float, limit: int, lease_until: float) -> list[OutboxRow]:
        """Take up to `limit` pending deliveries to `destination` that are due, leased until `lease_until`."""
        if limit <= 0:
            return []

        def write(tx: Tx) -> list[OutboxRow]:
            cursor = tx.execute(
                "UPDATE outbox SET next_attempt_at = ? WHERE id IN ("
                " SELECT id FROM outbox WHERE status = 'pending' AND destination = ? AND next_attempt_at <= ?"
                f" ORDER BY next_attempt_at LIMIT ?{tx.dialect.skip_locked}) RETURNING id",
                (lease_until, destination, now, limit),
            )
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return []
            marks = ", ".join("?" for _ in ids)
            return [_row(row) for row in tx.execute(f"{_ROW} WHERE o.id IN ({marks}) ORDER BY o.id", ids)]

        return await self._write(write)

    async def next_outbox_due(self, destination: str) -> float | None:
        rows = await self._read(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending' AND destination = ?", (destination,)
        )
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    async def notification(self, notification_id: str) -> StoredNotification | None:
        rows = await self._read("SELECT * FROM notifications WHERE id = ?", (notification_id,))
        if not rows:
            return None
        row = rows[0]
        return StoredNotification(
            row["id"], row["type"], row["job_id"], row["provider"], orjson.loads(row["payload"]), row["created_at"]
        )

    async def record_delivery(
        self,
        row_id: int,
        *,
        ok: bool,
        status: int | None,
        error: str | None,
        next_attempt_at: float | None,
        gone: bool = False,
    ) -> OutboxRow:
        """One attempt's outcome: delivered, due again at `next_attempt_at`, or dead (None)."""

        def write(tx: Tx) -> OutboxRow:
            current = tx.one(f"{_ROW} WHERE o.id = ?", (row_id,))
            assert current is not None
            attempt = current["attempts"] + 1
            if ok:
                state, due = "delivered", None
            elif next_attempt_at is None or gone:
                state, due = "dead", None
            else:
                state, due = "pending", next_attempt_at
            tx.execute(
                "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = ?, last_status = ?, last_error = ?,"
                " updated_at = ?, delivered_at = ? WHERE id = ?",
                (state, attempt, due, status, None if ok else error, tx.now, tx.now if ok else None, row_id),
            )
            if gone:
                tx.execute(
                    "INSERT INTO destination_state (destination, stopped, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (destination) DO UPDATE SET stopped = excluded.stopped, updated_at = excluded.updated_at",
                    (current["destination"], f"HTTP {status}: gone; resend to resume", tx.now),
                )
            if current["job_id"] is not None:
                detail: dict[str, Any] = {
                    "destination": current["destination"],
                    "type": current["type"],
                    "id": current["notification_id"],
                    "attempt": attempt,
                }
                if status is not None:
                    detail["status"] = status
                if not ok:
                    detail["error"] = error
                if due is not None:
                    detail["next_attempt_in"] = round(due - tx.now, 1)
                outcome = "delivered" if ok else ("retry" if state == "pending" else "dead")
                tx.event(current["job_id"], "notification", outcome, detail)
            updated = tx.one(f"{_ROW} WHERE o.id = ?", (row_id,))
            assert updated is not None
            return _row(updated)

        return await self._write(write)

    async def outbox(self, *, status: str | None = None, limit: int = 100) -> list[OutboxRow]:
        """Deliveries, newest first; `status` one of pending, delivered, dead."""
        if status is None:
            rows = await self._read(f"{_ROW} ORDER BY o.id DESC LIMIT ?", (limit,))
        else:
            rows = await self._read(f"{_ROW} WHERE o.status = ? ORDER BY o.id DESC LIMIT ?", (status, limit))
        return [_row(row) for row in rows]

    async def resend(self, ids: Sequence[int] | None) -> list[OutboxRow]:
        """Deliver again from the start of the schedule: these rows, or (None) every dead one.

        The notification keeps its id, so a receiver that already has it can drop it. A destination
        stopped by a 410 resumes.
        """

        def write(tx: Tx) -> list[OutboxRow]:
            if ids is None:
                cursor = tx.execute("SELECT id FROM outbox WHERE status = 'dead'")
                chosen = [row[0] for row in cursor.fetchall()]
            else:
                chosen = list(ids)
            if not chosen:
                return []
            marks = ", ".join("?" for _ in chosen)
            tx.execute(
                f"UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ?,"
                f" delivered_at = NULL WHERE id IN ({marks})",
                (tx.now, tx.now, *chosen),
            )
            cursor = tx.execute(f"{_ROW} WHERE o.id IN ({marks}) ORDER BY o.id", chosen)
            rows = [_row(row) for row in cursor.fetchall()]
            for destination in {row.destination for row in rows}:
                tx.execute("DELETE FROM destination_state WHERE destination = ?", (destination,))
            for row in rows:
                if row.job_id is not None:
                    detail = {"destination": row.destination, "type": row.type, "id": row.notification_id}
                    tx.event(row.job_id, "notification", "resent", detail)
            tx.outbox_changed = True
            return rows

        return await self._write(write)

    async def outbox_counts(self) -> dict[str, dict[str, int]]:
        """Per destination, how many deliveries are pending and dead (delivered ones are not counted)."""
        rows = await self._read(
            "SELECT destination, status, COUNT(*) FROM outbox WHERE status IN ('pending', 'dead') GROUP BY 1, 2"
        )
        counts: dict[str, dict[str, int]] = {}
        for destination, status, count in rows:
            counts.setdefault(destination, {"pending": 0, "dead": 0})[status] = count
        return counts

    async def stopped_destinations(self) -> dict[str, str]:
        rows = await self._read("SELECT destination, stopped FROM destination_state WHERE stopped IS NOT NULL")
        return {row[0]: row[1] for row in rows}

    async def provider_states(self) -> list[Mapping[str, Any]]:
        rows = await self._read("SELECT * FROM provider_state ORDER BY provider")
        return [dict(row) for row in rows]
