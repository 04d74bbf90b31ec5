"""create_app(settings): the only place where the parts are wired. The lifespan runs the loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from service import __version__, api, callbacks, dashboard, openapi, operators, sessions
from service.config import Settings, generate_secret
from service.domain import budget
from service.domain.callbacks import CallbackTokens
from service.engine import Engine, ProviderRuntime
from service.errors import StorageError
from service.http import ApiError, BearerAuth, JSONResponse, SecurityHeaders, error_response, json_answer
from service.limits import Slots
from service.loop import MAX_SLEEP
from service.media import MediaStore
from service.metrics import Metrics
from service.notify import destinations_from_settings
from service.outbox import OutboxWorker
from service.poller import Poller
from service.providers.base import Tracking
from service.providers.http import USER_AGENT, ProviderHTTP
from service.providers.registry import adapters, price_tables, simulator_adapter
from service.runtime import Runtime, runtime
from service.simulator import Simulator
from service.store import engines
from service.store.base import OutboxPolicy
from service.watch import ChangeHub

log = logging.getLogger("jobhook")

VERSION = __version__
SIMULATOR_KEY = "sk-simulator"


def simulator_enabled(settings: Settings) -> bool:
    """JOBHOOK_SIMULATOR=auto (unset) counts as on here; `jobhook serve` turns it off for a public host."""
    return settings.simulator.enabled is not False


def build_providers(settings: Settings, self_url: str | None) -> dict[str, ProviderRuntime]:
    runtimes: dict[str, ProviderRuntime] = {}
    timeout, submit_timeout = settings.poll_timeout, settings.submit_timeout
    for name, adapter in adapters(settings).items():
        provider = settings.providers.get(name)
        http = None
        if provider is not None and provider.api_key is not None:
            # A synchronous provider answers the submission with the images: it may take minutes.
            limit = settings.sync_timeout if adapter.tracking is Tracking.SYNCHRONOUS else submit_timeout
            http = ProviderHTTP(
                provider.base_url, adapter.auth_headers(provider.api_key), timeout=timeout, submit_timeout=limit
            )
        runtimes[name] = ProviderRuntime(name, adapter, http)
    if simulator_enabled(settings) and self_url is not None:
        simulator = simulator_adapter(settings)
        base_url = settings.simulator.base_url or f"{self_url}/simulator"
        http = ProviderHTTP(
            base_url, simulator.auth_headers(SIMULATOR_KEY), timeout=timeout, submit_timeout=submit_timeout
        )
        # The simulator is part of jobhook: its images are mirrored from it, wherever it listens.
        runtimes["simulator"] = ProviderRuntime("simulator", simulator, http, own_images=f"{base_url}/files/")
    return runtimes


def create_app(settings: Settings, *, self_url: str | None = None, clock: Callable[[], float] = time.time) -> Starlette:
    """The ASGI app. `self_url` is where this process listens (the simulator's base URL hangs off it)."""
    simulator = None
    if simulator_enabled(settings) and self_url is not None:
        # Only jobhook's own callback URLs: the simulator sits on the public port.
        prefix = f"{settings.public_url or self_url}/callbacks/"
        simulator = Simulator(settings.simulator, callback_prefix=prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        policy = OutboxPolicy(
            destinations=settings.destinations,
            notify_on=settings.notify_on,
            degraded_after=settings.degraded_after,
            credits_low=settings.credits_low,
            base_url=settings.public_url or self_url or "",
            circuits=settings.circuits,
            poll_interval=settings.poll_interval,
            budget=budget.Policy(settings.budget, price_tables(settings)),
        )
        store = engines.make_store(settings, clock=clock, mirror_images=settings.mirror_images, policy=policy)
        await store.open()
        # The key kept in the database stays a verifying key when JOBHOOK_SECRET is set, so that the
        # callback URLs and image links made before keep working.
        stored_key = await store.secret(generate_secret)
        keys = (*settings.secrets, stored_key) if settings.secrets else (stored_key,)
        hub = ChangeHub()
        store.add_listener(hub.notify)
        providers = build_providers(settings, self_url)
        media = MediaStore(settings.media_dir)
        metrics = Metrics()
        engine = Engine(settings, store, providers, CallbackTokens(keys), hub, media, metrics=metrics, clock=clock)
        poller = Poller(engine, concurrency=settings.poll_concurrency, clock=clock)
        notify_client = httpx.AsyncClient(timeout=30.0, headers={"User-Agent": USER_AGENT})
        destinations = destinations_from_settings(settings, notify_client)
        outbox = OutboxWorker(
            store,
            destinations,
            schedule=settings.notify_retry_schedule,
            image_url=engine.public_image_url,
            clock=clock,
            metrics=metrics,
        )
        if settings.public_url is None:
            log.warning(
                "JOBHOOK_PUBLIC_URL is unset: no callback URL is registered and jobs are tracked by polling alone"
            )
        if simulator is not None:
            await simulator.start()
        stop = asyncio.Event()
        tasks = {
            loop.name: asyncio.create_task(loop.run(stop), name=f"jobhook-{loop.name}") for loop in (poller, outbox)
        }
        signins = sessions.Sessions(keys, settings.api_tokens, store, clock=clock)
        limits = settings.limits
        app.state.runtime = Runtime(
            settings,
            store,
            engine,
            poller,
            outbox,
            hub,
            tasks,
            signins,
            metrics,
            waiters=Slots(limits.max_waiters, "too_many_waiters", "requests waiting on a job (?wait=)"),
            streams=Slots(limits.max_streams, "too_many_streams", "event streams (/v1/stream)"),
            callbacks=callbacks.CallbackIntake(engine),
        )
        try:
            yield
        finally:
            stop.set()
            for task in tasks.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for destination in destinations.values():
                await destination.aclose()
            await notify_client.aclose()
            for runtime in providers.values():
                if runtime.http is not None:
                    await runtime.http.aclose()
            await engine.aclose()
            if simulator is not None:
                await simulator.aclose()
            await store.close()

    routes: list[BaseRoute] = [
        # First: a retry storm is matched on the first route tried, not after every other pattern.
        *callbacks.routes,
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        *openapi.routes,
        *api.routes,
        *operators.routes,
        *sessions.routes,
        *dashboard.routes,
    ]
    if simulator is not None:
        routes.append(Mount("/simulator", app=simulator.app))
    return App(
        routes=routes,
        # SecurityHeaders first, so that it also marks the sign-in refusals of BearerAuth.
        middleware=[Middleware(SecurityHeaders), Middleware(BearerAuth, tokens=list(settings.api_tokens))],
        exception_handlers={
            ApiError: _api_error,
            StorageError: _storage_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )


class App(Starlette):
    """jobhook's Starlette app, with one fast path: `POST /callbacks/{token}` (a provider's retry storm)
    is answered before the middleware and the router (`callbacks.answer`). None of the middleware acts
    on it (BearerAuth guards /v1 and the dashboard; SecurityHeaders' header is in the answer already);
    its errors are answered by the app's own handlers, and an unexpected one is raised again after its
    500, as Starlette's ServerErrorMiddleware does."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = callbacks.fast_token(scope) if scope["type"] == "http" else None
        if token is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        scope["route"] = callbacks.routes[0]  # what an error's log line names (loggable_path)
        try:
            status, body = await callbacks.answer(self.state.runtime, token, scope["headers"], receive)
        except StorageError as exc:
            await (await _storage_error(Request(scope), exc))(scope, receive, send)
            return
        except Exception as exc:
            await (await _server_error(Request(scope), exc))(scope, receive, send)
            raise
        start, message = json_answer(status, body)
        await send(start)
        await send(message)


async def index(request: Request) -> Response:
    """A browser goes to the dashboard; a program gets the map of the service."""
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/dashboard", status_code=303)
    return JSONResponse(
        {
            "service": "jobhook",
            "version": VERSION,
            "links": {
                "dashboard": "/dashboard",
                "jobs": "/v1/jobs",
                "health": "/healthz",
                "ready": "/readyz",
                "metrics": "/metrics",
                "openapi": "/openapi.json",
            },
        }
    )


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    rt = runtime(request)
    checks: dict[str, str] = {}
    try:
        await rt.store.write_probe()
        checks["database"] = "ok"
    except StorageError as exc:
        # /readyz answers anyone: the driver's text (paths, hosts, users) goes to the log only.
        log.warning("readiness: the database is unavailable: %s", exc)
        checks["database"] = "failing: database unavailable"
    for name, loop in rt.loops.items():
        age = time.monotonic() - loop.heartbeat
        if rt.tasks[name].done():
            checks[name] = "stopped"
        elif age > 3 * MAX_SLEEP:
            checks[name] = f"stalled for {age:.0f} s"
        else:
            checks[name] = "ok"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )


async def metrics_route(request: Request) -> Response:
    rt = runtime(request)
    body = await rt.metrics.render(
        rt.store, rt.engine.providers, rt.outbox.destinations, rt.loops, await rt.engine.measurements()
    )
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _storage_error(request: Request, exc: Exception) -> Response:
    log.error("storage unavailable: %s", exc)
    return error_response(
        503, "storage_unavailable", "the database is unavailable; retry later", headers={"Retry-After": "5"}
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        str(exc.detail),
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, loggable_path(request), exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


def loggable_path(request: Request) -> str:
    """The route's template (`/callbacks/{token}`), never the path itself: a callback URL's or an
    image link's token is a credential, and so may be anything a client put in a path."""
    route = request.scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else "(no route)"
