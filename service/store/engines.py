"""Which store JOBHOOK_DATABASE names: a SQLite file (the default) or a PostgreSQL database."""

from __future__ import annotations

import time
from collections.abc import Callable

from service.config import Settings
from service.store.base import OutboxPolicy, redact_url
from service.store.common import Store


def make_store(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    mirror_images: bool = False,
    policy: OutboxPolicy | None = None,
) -> Store:
    """The store for these settings, not yet open."""
    if settings.database_url is not None:
        from service.store.postgres import PostgresStore

        return PostgresStore(
            settings.database_url,
            clock=clock,
            mirror_images=mirror_images,
            policy=policy,
            fast_callbacks=settings.postgresql_fast_path,
        )
    from service.store.sqlite import SQLiteStore

    return SQLiteStore(
        settings.database,
        synchronous=settings.sqlite_synchronous,
        clock=clock,
        mirror_images=mirror_images,
        policy=policy,
    )


def database_label(settings: Settings) -> str:
    """Where the state is, for people: the file, or the PostgreSQL URL without its password."""
    if settings.database_url is not None:
        return redact_url(settings.database_url)
    return str(settings.database)
