"""The running service's parts, as the routes reach them (`runtime(request)`).

`service.app` builds one in its lifespan and keeps it on the app's state; the route modules read it
here, so that none of them imports the module that wires them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

from starlette.requests import Request

if TYPE_CHECKING:
    from service.callbacks import CallbackIntake
    from service.config import Settings
    from service.engine import Engine
    from service.limits import Slots
    from service.loop import WorkLoop
    from service.metrics import Metrics
    from service.outbox import OutboxWorker
    from service.poller import Poller
    from service.sessions import Sessions
    from service.store.common import Store
    from service.watch import ChangeHub


@dataclasses.dataclass
class Runtime:
    settings: Settings
    store: Store
    engine: Engine
    poller: Poller
    outbox: OutboxWorker
    hub: ChangeHub
    tasks: dict[str, asyncio.Task[None]]
    sessions: Sessions
    metrics: Metrics
    waiters: Slots  # GET /v1/jobs/{id}?wait=N held now (JOBHOOK_MAX_WAITERS)
    streams: Slots  # /v1/stream clients now (JOBHOOK_MAX_STREAMS)
    callbacks: CallbackIntake  # POST /callbacks/{token}

    @property
    def loops(self) -> dict[str, WorkLoop]:
        return {"poller": self.poller, "outbox": self.outbox}


def runtime(request: Request) -> Runtime:
    """The service's parts, for a route."""
    rt: Runtime = request.app.state.runtime
    return rt
