"""Daily budgets in the store (SPEC §9): the reservation made in the transaction that marks an attempt
sending, its settlement when the attempt ends, and the day's figures as routing, `GET /v1/budget`, the
dashboard and /metrics read them. What each means is `service.domain.budget`'s; this writes it.

Figures are rows of `budget_days` per (UTC day, scope, shard); a scope's figure is the sum of its
shards. An attempt adds its price to one shard, chosen by its job, of the total and of its provider,
and settles in the same shard: jobs sent at once (by replicas on PostgreSQL) take row locks on
different rows. Where a cap applies, the reservation first locks the scope's shard 0 and reads the
sum under that lock: every reservation against a cap takes the same lock, so that none sees a sum
another is about to change. Locks are always taken in one order (the total's, then the provider's;
shard 0 before the others), so reservations never wait on each other in a circle.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from service.domain import budget
from service.domain.budget import TOTAL, Figures, Held, Refusal, Why

if TYPE_CHECKING:
    from service.store.tx import Row, Tx

T = TypeVar("T")
SHARDS = 8


@dataclasses.dataclass(frozen=True)
class Hold:
    """A price reserved in this transaction, for the attempt that sends it."""

    amount: int  # micro-dollars
    day: str
    shard: int


def shard_of(job_id: str) -> int:
    return zlib.crc32(job_id.encode()) % SHARDS


def reserve(tx: Tx, job_id: str, provider: str, request: Mapping[str, Any]) -> Hold | Refusal | None:
    """Reserve the price of an attempt of `job_id` at `provider`, within the caps: the Hold to attach
    to the attempt, a Refusal (nothing was written), or None (free, or unpriced with no cap: nothing
    to hold)."""
    policy = tx.policy.budget
    price = policy.price(provider, request)
    scopes = policy.caps.scopes(provider)
    if price == 0 or (price is None and not scopes):
        return None
    day = budget.day_of(tx.now)
    figures = {scope: _locked(tx, day, scope) for scope, _ in scopes}
    refusal = budget.check(policy.caps, figures, provider, price, tx.now)
    if refusal is not None:
        return refusal
    assert price is not None
    shard = shard_of(job_id)
    for scope in (TOTAL, provider):
        tx.execute(
            "INSERT INTO budget_days (day, scope, shard, reserved) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (day, scope, shard) DO UPDATE SET reserved = budget_days.reserved + excluded.reserved",
            (day, scope, shard, price),
        )
    return Hold(price, day, shard)


def _locked(tx: Tx, day: str, scope: str) -> Figures:
    """A capped scope's figures today, read under the lock of its shard 0 (kept to the commit)."""
    tx.execute(
        "INSERT INTO budget_days (day, scope, shard) VALUES (?, ?, 0) ON CONFLICT (day, scope, shard) DO NOTHING",
        (day, scope),
    )
    row = tx.one(
        f"SELECT exhausted_at FROM budget_days WHERE day = ? AND scope = ? AND shard = 0{tx.dialect.lock_row}",
        (day, scope),
    )
    sums = tx.one(
        "SELECT COALESCE(SUM(reserved), 0), COALESCE(SUM(spent), 0) FROM budget_days WHERE day = ? AND scope = ?",
        (day, scope),
    )
    assert row is not None and sums is not None
    return Figures(int(sums[0]), int(sums[1]), row["exhausted_at"])


def hold(tx: Tx, job_id: str, held: Hold) -> None:
    """The job's current attempt holds `held` (a reservation made for it in this transaction)."""
    tx.execute(
        "UPDATE attempts SET budget_micros = ?, budget_day = ?, budget_shard = ?, budget_held = ? "
        "WHERE job_id = ? AND seq = (SELECT MAX(seq) FROM attempts WHERE job_id = ?)",
        (held.amount, held.day, held.shard, str(Held.RESERVED), job_id, job_id),
    )


def settle(tx: Tx, row: Row, state: str) -> None:
    """An attempt (`row`: its job_id, seq, provider and budget columns) entered `state`: keep or release
    what it holds (`budget.settle`), in the day and shard it was reserved in."""
    held = row["budget_held"]
    move = budget.settle(Held(held) if held is not None else None, row["budget_micros"] or 0, state)
    if move is None:
        return
    for scope in (TOTAL, row["provider"]):
        tx.execute(
            "UPDATE budget_days SET reserved = reserved + ?, spent = spent + ? WHERE day = ? AND scope = ? AND shard = ?",
            (move.reserved, move.spent, row["budget_day"], scope, row["budget_shard"]),
        )
    tx.execute(
        "UPDATE attempts SET budget_held = ? WHERE job_id = ? AND seq = ?",
        (str(move.held) if move.held is not None else None, row["job_id"], row["seq"]),
    )


def exhausted(tx: Tx, refusal: Refusal) -> bool:
    """A cap refused something: `budget.exhausted` is queued the first time this day for its scope
    (one conditional UPDATE: of two replicas refusing at once, one marks it). True if this was it."""
    if refusal.why is not Why.OVER_CAP:
        return False  # an unknown price is not a spent cap
    day = budget.day_of(refusal.reset_at - budget.SECONDS_PER_DAY)  # the day it refused on
    tx.execute(
        "INSERT INTO budget_days (day, scope, shard) VALUES (?, ?, 0) ON CONFLICT (day, scope, shard) DO NOTHING",
        (day, refusal.scope),
    )
    marked = tx.execute(
        "UPDATE budget_days SET exhausted_at = ? WHERE day = ? AND scope = ? AND shard = 0 AND exhausted_at IS NULL",
        (tx.now, day, refusal.scope),
    ).rowcount
    if marked != 1:
        return False
    tx.exhausted.append(refusal)
    provider = None if refusal.scope == TOTAL else refusal.scope
    tx.notify("budget.exhausted", provider=provider, detail=refusal.detail())
    return True


class BudgetQueries:
    """The store's budget reads and the one write made outside a sending transaction (a mixin)."""

    if TYPE_CHECKING:

        async def _write(self, work: Callable[[Tx], T]) -> T: ...

        async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Row]: ...

    async def budget_figures(self, day: str) -> dict[str, Figures]:
        """Each scope's figures on `day` (a UTC day, `budget.day_of`): one that has none is left out."""
        rows = await self._read(
            "SELECT scope, SUM(reserved), SUM(spent), MAX(exhausted_at) FROM budget_days WHERE day = ? GROUP BY scope",
            (day,),
        )
        return {row[0]: Figures(int(row[1]), int(row[2]), row[3]) for row in rows}

    async def spend_by_provider(self) -> dict[str, int]:
        """What each provider's kept attempts came to, every day recorded (micro-dollars; /metrics)."""
        rows = await self._read(
            "SELECT scope, SUM(spent) FROM budget_days WHERE scope != ? GROUP BY scope ORDER BY scope", (TOTAL,)
        )
        return {row[0]: int(row[1]) for row in rows}

    async def budget_exhausted(self, refusal: Refusal) -> bool:
        """Routing left a provider out for a cap (SPEC §9): `budget.exhausted`, once per scope per day."""

        def write(tx: Tx) -> bool:
            return exhausted(tx, refusal)

        return await self._write(write)
