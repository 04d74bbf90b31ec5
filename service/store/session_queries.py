"""The store's dashboard-session queries (a mixin of every engine's store): open, look up, end.

A session is a row, so that ending one (signing out) holds on every replica and across restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from service.store.tx import Row, Tx

T = TypeVar("T")


class SessionQueries:
    if TYPE_CHECKING:

        async def _write(self, work: Callable[[Tx], T]) -> T: ...

        async def _lookup_one(self, sql: str, params: tuple[Any, ...]) -> list[Row]: ...

        async def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Row]: ...

    async def open_session(self, session_id: str, token_digest: str, expires_at: float) -> None:
        """Record a new session; the expired ones go in the same transaction (the table stays small)."""

        def write(tx: Tx) -> None:
            tx.execute("DELETE FROM sessions WHERE expires_at < ?", (tx.now,))
            tx.execute(
                "INSERT INTO sessions (id, token_digest, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (session_id, token_digest, tx.now, expires_at),
            )

        await self._write(write)

    async def session_digest(self, session_id: str, now: float) -> str | None:
        """The token digest of a session that is open and unexpired at `now`, else None."""
        rows = await self._lookup_one(
            "SELECT token_digest FROM sessions WHERE id = ? AND expires_at > ?", (session_id, now)
        )
        return str(rows[0][0]) if rows else None

    async def end_session(self, session_id: str) -> None:
        def write(tx: Tx) -> None:
            tx.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

        await self._write(write)
