"""The `jobhook` command (SPEC §1). Settings come from the environment and `--env-file`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx

from service import config, maintenance
from service.config import ConnectionLimits, Settings
from service.errors import ConfigError, SchemaTooNew, StorageError
from service.store.engines import database_label

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_USAGE = 2  # a setting or an argument is wrong: starting again will not help
EXIT_TEMPFAIL = 75  # sysexits' EX_TEMPFAIL: the database could not be used just now
EVENTS_PAGE = 500  # `jobhook job` reads the job's history in pages this long (the API's largest)
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a command whose reader closed the pipe


ENV_FILE_HELP = "read JOBHOOK_* settings from a .env-style file too (the environment wins)"


class CLIError(Exception):
    """A one-line failure to print as `jobhook: …` and exit with status 2."""


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        raise SystemExit(EXIT_USAGE)
    try:
        code = args.handler(args)
    except BrokenPipeError:
        # The reader went away (`jobhook jobs --json | head`): nothing is wrong, and nothing is left to
        # say. stdout is pointed at /dev/null so that the flush at exit does not fail once more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(EXIT_BROKEN_PIPE) from None
    except (ConfigError, CLIError, SchemaTooNew, maintenance.MaintenanceError) as exc:
        print(f"jobhook: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except StorageError as exc:  # maybe passing (locked, disk full): a supervisor may try again
        print(f"jobhook: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_TEMPFAIL) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    raise SystemExit(code or 0)


def load_settings(args: argparse.Namespace) -> Settings:
    """The settings, after a warning on stderr for each JOBHOOK_* variable that is no setting."""
    return config.load(args.env_file)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobhook",
        description="Callbacks, polling and durable state for asynchronous image generation jobs.",
        epilog="Settings are environment variables (JOBHOOK_*); see README.md. Try `jobhook demo`.",
    )
    parser.add_argument("--env-file", metavar="FILE", help=ENV_FILE_HELP)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    serve = commands.add_parser("serve", help="run the service", description="Run the service (one uvicorn process).")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    serve.add_argument(
        "--forwarded-allow-ips",
        default=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        help="proxies trusted for X-Forwarded-Proto/For, comma-separated or * (env FORWARDED_ALLOW_IPS, "
        "default %(default)s): behind TLS termination this makes the dashboard cookie Secure",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without JOBHOOK_API_TOKENS (the API is then open to anyone)",
    )
    serve.set_defaults(handler=cmd_serve)

    demo = commands.add_parser(
        "demo",
        help="the whole flow on this machine, no account needed",
        description="Start jobhook with the built-in simulator on a free loopback port, submit a batch of jobs "
        "and show them move live: callbacks, duplicates, a dropped callback caught by polling, a forged "
        "callback refused, a failure.",
    )
    demo.add_argument("--dir", default="jobhook-demo", help="where the demo keeps its database (default: %(default)s)")
    demo.add_argument("--keep-serving", action="store_true", help="keep the service running after the demo")
    demo.add_argument(
        "--linger",
        type=float,
        help="seconds to stay up after the demo for a look at the dashboard (default: 60 in a terminal, else 0)",
    )
    demo.add_argument(
        "--database",
        metavar="URL",
        help="JOBHOOK_DATABASE to use instead of a new SQLite file in --dir (e.g. postgresql://…)",
    )
    demo.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="run that many jobhook processes on the one --database and spread the batch over them (default: 1)",
    )
    demo.set_defaults(handler=cmd_demo)

    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        description="Apply pending migrations to JOBHOOK_DATABASE.",
    )
    migrate.set_defaults(handler=cmd_migrate)
    maintenance.add_commands(commands)

    providers = commands.add_parser(
        "providers",
        help="the providers, how each is tracked, and their prices",
        description="List the providers jobhook speaks to: configured or not, base URL (keys are never shown), "
        "how a job's end is learnt, and the price per image.",
    )
    providers.add_argument("--json", action="store_true", help="print JSON")
    providers.set_defaults(handler=cmd_providers)

    budget = commands.add_parser(
        "budget",
        help="today's caps, what is reserved and spent, and when they reset",
        description="Show today's budget (UTC day, SPEC §9): each cap (JOBHOOK_BUDGET_USD_PER_DAY for all providers "
        "together, JOBHOOK_<P>_BUDGET_USD_PER_DAY for one), what is reserved (sent, outcome not known yet) and spent "
        "(kept: the provider took it), what is left, and when the day resets. Reads JOBHOOK_DATABASE directly: the "
        "figures every replica shares.",
    )
    budget.add_argument("--json", action="store_true", help="print JSON (as GET /v1/budget)")
    budget.set_defaults(handler=cmd_budget)

    outbox = commands.add_parser(
        "outbox",
        help="list notification deliveries, or resend them",
        description="List the outbox (newest first): `jobhook outbox [--dead]`. Deliver again from the start of "
        "the retry schedule, with the same event id: `jobhook outbox resend ID…` or `jobhook outbox resend --dead`. "
        "Works on JOBHOOK_DATABASE directly; a running service picks resent rows up within 15 s.",
    )
    outbox.add_argument("action", nargs="?", choices=["resend"], help="resend the given deliveries")
    outbox.add_argument("ids", nargs="*", type=int, metavar="ID", help="delivery ids (the first column)")
    outbox.add_argument("--dead", action="store_true", help="only dead deliveries (with resend: all of them)")
    outbox.add_argument("--status", choices=["pending", "delivered", "dead"], help="only deliveries in this state")
    outbox.add_argument("--limit", type=int, default=50, help="how many to list (default: %(default)s)")
    outbox.add_argument("--json", action="store_true", help="print JSON")
    outbox.set_defaults(handler=cmd_outbox)

    def client_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--url",
            default=os.environ.get("JOBHOOK_URL", DEFAULT_URL),
            help="the running jobhook (env JOBHOOK_URL, default %(default)s)",
        )
        sub.add_argument(
            "--token",
            default=os.environ.get("JOBHOOK_TOKEN"),
            help="bearer token (env JOBHOOK_TOKEN, else the first of JOBHOOK_API_TOKENS)",
        )

    submit = commands.add_parser(
        "submit", help="submit a generation", description="Submit a generation to a running jobhook."
    )
    submit.add_argument("prompt", help="the prompt")
    submit.add_argument(
        "--provider",
        required=True,
        help="aivideoapi, simulator, …; several in order of preference (a,b: the next is tried when one "
        "refuses, is down or fails the task); or auto (every configured provider, cheapest first unless JOBHOOK_ROUTE_ORDER says otherwise)",
    )
    submit.add_argument("--aspect-ratio", help="e.g. 16:9")
    submit.add_argument("--rendering-speed", choices=["TURBO", "BALANCED", "QUALITY"])
    submit.add_argument("--output-format", help="e.g. png")
    submit.add_argument(
        "--max-price",
        type=float,
        metavar="USD",
        help="leave out a provider whose price for this request is higher, or unknown (max_price_usd)",
    )
    submit.add_argument("--metadata", help="a JSON object kept on the job")
    submit.add_argument("--option", action="append", default=[], metavar="KEY=JSON", help="a provider_options entry")
    submit.add_argument("--idempotency-key", help="the same key returns the same job and submits once")
    submit.add_argument("--wait", action="store_true", help="show progress until the job is finished")
    submit.add_argument("--timeout", type=float, default=1800, help="with --wait: give up after this many seconds")
    client_options(submit)
    submit.set_defaults(handler=cmd_submit)

    jobs = commands.add_parser("jobs", help="list jobs, newest first", description="List jobs, newest first.")
    jobs.add_argument("--status", help="queued, submitted, processing, completed, failed or timed_out")
    jobs.add_argument("--provider", help="only this provider's jobs")
    jobs.add_argument("--limit", type=int, default=20, help="how many (default: %(default)s)")
    jobs.add_argument("--json", action="store_true", help="print the API's JSON")
    client_options(jobs)
    jobs.set_defaults(handler=cmd_jobs)

    job = commands.add_parser("job", help="show one job and its history", description="Show one job and its events.")
    job.add_argument("id", help="the job id (job_…)")
    job.add_argument("--json", action="store_true", help="print the API's JSON")
    client_options(job)
    job.set_defaults(handler=cmd_job)

    reroute = commands.add_parser(
        "reroute",
        help="try a job's next candidate provider now (both may charge)",
        description="Move a job to its next candidate provider now and send it there (POST /v1/jobs/ID/reroute), "
        "even though its current attempt was accepted, is uncertain, or the job timed out. That attempt is not "
        "cancelled: it may still deliver and charge, so BOTH PROVIDERS MAY CHARGE. The first attempt to complete "
        "completes the job; every attempt's cost is kept and the job's cost_usd is their sum. A job whose current "
        "attempt was never sent (waiting out a retry or an open circuit) costs nothing more. Asking twice moves "
        "the job once unless each names the attempt it leaves (--from-attempt).",
        epilog="Refused (exit 2) when the job is completed or failed, no candidate is left, the backend submitted it "
        "itself, or its submission has not answered yet.",
    )
    reroute.add_argument("id", help="the job id (job_…)")
    reroute.add_argument(
        "--from-attempt",
        type=int,
        metavar="N",
        help="the attempt to leave (as `jobhook job` numbers them); if the job has left it already, nothing "
        "changes (default: the job's current attempt)",
    )
    reroute.add_argument("--json", action="store_true", help="print the API's JSON")
    client_options(reroute)
    reroute.set_defaults(handler=cmd_reroute)
    # `jobhook serve --env-file x` as well as `jobhook --env-file x serve`. SUPPRESS: a subcommand that
    # is not given it keeps the value given before the subcommand.
    for sub in commands.choices.values():
        sub.add_argument("--env-file", metavar="FILE", default=argparse.SUPPRESS, help=ENV_FILE_HELP)
    return parser


# -- serve / migrate -------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if not _is_loopback(args.host) and not settings.api_tokens and not args.insecure:
        raise CLIError(
            f"refusing to listen on {args.host} with an open API: set JOBHOOK_API_TOKENS, or pass --insecure"
        )
    if not 0 < args.port < 65536:
        raise CLIError(f"--port must be between 1 and 65535, got {args.port}")
    if settings.simulator.enabled is None and not _is_loopback(args.host):
        # JOBHOOK_SIMULATOR=auto: a free renderer has no place on a public address.
        settings = dataclasses.replace(settings, simulator=dataclasses.replace(settings.simulator, enabled=False))
    listeners = _listen(args.host, args.port)  # a port in use stops us here, in one line, before anything
    asyncio.run(_migrate(settings))  # a database that cannot be opened stops us here, in one line
    import uvicorn

    from service import logs
    from service.app import create_app
    from service.http import KEEP_ALIVE_TIMEOUT, server_protocol

    logs.setup(settings.log_format)
    limits = _fit_open_files(settings.limits)
    local_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    self_url = f"http://{local_host}:{args.port}"
    app = create_app(settings, self_url=self_url)
    print(f"jobhook on {self_url}  (database {database_label(settings)})", file=sys.stderr, flush=True)
    print(f"dashboard  {self_url}/dashboard", file=sys.stderr, flush=True)
    # No access log: callback and image URLs carry tokens. Long `?wait=` requests are cut after 15 s
    # at shutdown; nothing acknowledged depends on them.
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http=server_protocol(limits),
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        timeout_graceful_shutdown=15,
    )
    server = uvicorn.Server(config)
    server.run(sockets=listeners)
    return 0 if server.started else 1


# The descriptors jobhook needs besides its connections: the database, media files, outgoing HTTP.
RESERVED_FILES = 256


def _listen(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for every address `host` names, so that a port in use is one line, not a traceback
    after the banner. uvicorn serves on them as they are."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CLIError(f"--host {host!r}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, _, _, _, address in addresses:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only then.
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CLIError(
                f"port {port} is in use on {host}: stop what listens there, or pass another --port"
            ) from None
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sockets


def _fit_open_files(limits: ConnectionLimits) -> ConnectionLimits:
    """Raise the open-file limit to what JOBHOOK_MAX_CONNECTIONS needs; if the system will not allow it,
    lower the cap (and say so) rather than fail on accept() when the descriptors run out."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = limits.max_connections + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    if soft != resource.RLIM_INFINITY and soft < needed:
        fitted = max(16, soft - RESERVED_FILES)
        logging.getLogger("jobhook").warning(
            "JOBHOOK_MAX_CONNECTIONS=%d needs %d open files, but the limit is %d: capping connections at %d",
            limits.max_connections,
            needed,
            soft,
            fitted,
        )
        return dataclasses.replace(limits, max_connections=fitted)
    return limits


async def _migrate(settings: Settings) -> int:
    """Open the database (creating a new SQLite file, but never its directory) and migrate it: `serve`
    and `migrate` stop here, in one line, on a database that cannot be used."""
    from service.store.engines import make_store

    config.check_database_directory(settings)
    store = make_store(settings)
    await store.open()
    try:
        return await store.schema_version()
    finally:
        await store.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    version = asyncio.run(_migrate(settings))
    print(f"{database_label(settings)}: schema version {version}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from service.config import database_setting
    from service.demo import DemoError, run_demo

    if not 1 <= args.replicas <= 16:
        raise CLIError("--replicas: expected 1 to 16")
    if args.database is not None:
        database_setting(args.database)  # a wrong URL is one line naming JOBHOOK_DATABASE
    if args.replicas > 1 and not (args.database or "").startswith(("postgresql://", "postgres://")):
        raise CLIError("--replicas needs --database postgresql://… (replicas share one PostgreSQL database)")
    try:
        return run_demo(
            args.dir, keep_serving=args.keep_serving, linger=args.linger, database=args.database, replicas=args.replicas
        )
    except DemoError as exc:
        raise CLIError(str(exc)) from None


def cmd_providers(args: argparse.Namespace) -> int:
    from service.providers.registry import describe

    settings = load_settings(args)
    rows = describe(settings)
    for row, (shown, measured) in zip(rows, _circuits(settings, [row["provider"] for row in rows]), strict=True):
        row["circuit"] = shown
        row.update(measured or {})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'provider':11} {'key':34} {'tracked by':32} {'base URL':30} {'circuit':36} "
        f"{'p50/p90 success (last 100)':28} price per image"
    )
    for row in rows:
        circuit = _circuit_text(row["circuit"])
        print(
            f"{row['provider']:11} {row['api_key']:34} {row['tracking']:32} {row['base_url']:30} {circuit:36} "
            f"{_measured_text(row):28} {_prices(row)}"
        )
    return 0


def _prices(row: dict[str, Any]) -> str:
    """A provider's prices per image as `jobhook providers` shows them (the dashboard says the same)."""
    prices: dict[str, float] = row["prices_usd"]
    provider = row["provider"]
    if not prices:
        return f"not published: set JOBHOOK_{provider.upper()}_PRICES (balance: x-remaining-credits)"
    values = set(prices.values())
    if values == {0.0}:
        shown = "free"
    elif len(values) == 1 and len(prices) == 3:  # every tier the same
        shown = f"any tier {_usd(values.pop())}"
    else:
        shown = " · ".join(f"{tier} {_usd(price)}" for tier, price in prices.items())
    return f"{shown} (JOBHOOK_{provider.upper()}_PRICES)" if row.get("prices_overridden") else shown


def _usd(amount: float) -> str:
    """$0.06; a price set to a fraction of a cent shows it ($0.035) rather than rounding it away."""
    return f"${amount:.2f}" if round(amount, 2) == amount else f"${amount:g}"


def _circuits(settings: Settings, providers: list[str]) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """Each provider's circuit and measured latency and success rate as the database holds them
    (SPEC §8); (None, None) each when they cannot be read. A SQLite database that is not there yet
    holds no circuit and no finished job: every circuit is closed, nothing is measured (none is created)."""
    from service.domain.circuit import Circuit
    from service.domain.measure import UNMEASURED, Measured

    async def read() -> tuple[dict[str, Circuit], dict[str, Measured]]:
        from service.store.engines import make_store

        store = make_store(settings)
        await store.open()
        try:
            return await store.provider_circuits(), await store.provider_measurements(providers)
        finally:
            await store.close()

    stored: dict[str, Circuit] = {}
    measured: dict[str, Measured] = {}
    if settings.database_url is not None or settings.database.is_file():
        try:
            stored, measured = asyncio.run(read())
        except (StorageError, SchemaTooNew, OSError) as exc:
            print(f"jobhook: circuits not shown: {exc}", file=sys.stderr)
            return [(None, None) for _ in providers]
    now = time.time()
    return [
        (stored.get(name, Circuit(name)).to_json(now), measured.get(name, UNMEASURED).to_json()) for name in providers
    ]


def _measured_text(row: dict[str, Any]) -> str:
    """`1.2s/3.4s 97% of 100`; `—` until a job finished there, `unknown` when it cannot be read."""
    if "jobs_measured" not in row:
        return "unknown"
    if not row["jobs_measured"]:
        return "—"
    latency = "—" if row["latency_p50_s"] is None else f"{row['latency_p50_s']:g}s/{row['latency_p90_s']:g}s"
    return f"{latency} {round(row['success_rate'] * 100)}% of {row['jobs_measured']}"


def _circuit_text(circuit: dict[str, Any] | None) -> str:
    """`closed`, `open until 2026-12-04T13:40:02Z (3× http_401)`, `half-open (one job trying it)`."""
    if circuit is None:
        return "unknown"
    state = circuit["state"]
    failures = f" ({circuit['failures_in_a_row']}× {circuit['reason']})" if circuit["failures_in_a_row"] else ""
    if state == "open":
        return f"open until {str(circuit['until'])[:19]}Z{failures}"
    if state == "half_open":
        return "half-open (one job trying it)" if circuit["probing"] else "half-open (the next job tries it)"
    return f"closed{failures}"


def cmd_budget(args: argparse.Namespace) -> int:
    from service.domain import budget
    from service.domain.budget import Figures
    from service.domain.routing import SIMULATOR
    from service.providers.registry import price_tables

    settings = load_settings(args)
    now = time.time()

    async def read() -> dict[str, Figures]:
        from service.store.engines import make_store

        store = make_store(settings)
        await store.open()
        try:
            return await store.budget_figures(budget.day_of(now))
        finally:
            await store.close()

    # A SQLite database that is not there yet has spent nothing (and is not created by a look at it).
    figures = asyncio.run(read()) if settings.database_url is not None or settings.database.is_file() else {}
    tables = price_tables(settings)
    if settings.simulator.enabled is False:
        tables.pop(SIMULATOR)
    report = budget.report(
        settings.budget, figures, {name: bool(table.per_image) for name, table in tables.items()}, now
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    left = budget.retry_after(now)
    print(
        f"budget for {report['day']} (UTC): resets at {report['reset_at'][:19]}Z, in {left // 3600}h {left % 3600 // 60:02d}m"
    )
    if not settings.budget:
        print(
            "no cap is set: JOBHOOK_BUDGET_USD_PER_DAY, JOBHOOK_<P>_BUDGET_USD_PER_DAY (what is spent is counted all the same)"
        )
    print(f"{'scope':11} {'cap':>10} {'spent':>10} {'reserved':>10} {'left':>10}")
    for row in (report["total"], *report["providers"]):
        print(
            f"{row['scope']:11} {_money(row['cap_usd']):>10} {_money(row['spent_usd']):>10} "
            f"{_money(row['reserved_usd']):>10} {_money(row['remaining_usd']):>10}  {_budget_note(row)}".rstrip()
        )
    return 0


def _money(amount: float | None) -> str:
    return "—" if amount is None else _usd(amount)


def _budget_note(row: dict[str, Any]) -> str:
    if row.get("note"):
        return str(row["note"])
    if row["exhausted_at"]:
        return f"refused work since {str(row['exhausted_at'])[11:19]}Z"
    return ""


def cmd_outbox(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if args.action == "resend":
        if bool(args.ids) == bool(args.dead):
            raise CLIError("resend takes delivery ids, or --dead for every dead delivery")
    elif args.ids:
        raise CLIError("ids go with `resend`: jobhook outbox resend ID…")
    if settings.database_url is None:
        maintenance.require_database(settings.database)  # opening the store would create an empty one
    rows = asyncio.run(_outbox(settings, args))
    missing = sorted(set(args.ids) - {row.id for row in rows})
    if args.json:
        print(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
    elif args.action == "resend" and rows:
        print(f"{len(rows)} deliver{'y' if len(rows) == 1 else 'ies'} queued again")
    elif args.action == "resend" and args.dead:
        print("no dead deliveries")
    elif not rows and not missing:
        print("no deliveries")
    if rows and not args.json:
        _print_outbox(rows)
    if missing:
        names = ", ".join(str(number) for number in missing)
        raise CLIError(f"no delivery with id {names} (`jobhook outbox` lists them)")
    return 0


def _print_outbox(rows: Sequence[Any]) -> None:
    print(f"{'id':>6}  {'destination':11} {'status':9} {'tries':>5}  {'type':28} {'job':32} last error")
    for row in rows:
        print(
            f"{row.id:>6}  {row.destination:11} {row.status:9} {row.attempts:>5}  {row.type:28} "
            f"{row.job_id or row.provider or '-':32} {row.last_error or ''}"
        )


async def _outbox(settings: Settings, args: argparse.Namespace) -> list[Any]:
    from service.store.engines import make_store

    store = make_store(settings)
    await store.open()
    try:
        if args.action == "resend":
            return list(await store.resend(None if args.dead else args.ids))
        status = "dead" if args.dead else args.status
        return list(await store.outbox(status=status, limit=args.limit))
    finally:
        await store.close()


# -- API clients -----------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> httpx.Client:
    try:
        config.http_url("--url", args.url)
    except ConfigError:
        # `localhost:8000` reads as a URL of scheme "localhost": say so, rather than "is it running?".
        raise CLIError(
            f"--url (or JOBHOOK_URL) must start with http:// or https://, e.g. {DEFAULT_URL}; "
            f"got {config.shown_url(args.url)!r}"
        ) from None
    token = args.token
    if token is None:  # the first of JOBHOOK_API_TOKENS, from the environment or --env-file
        tokens = load_settings(args).api_tokens
        token = tokens[0] if tokens else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=75)


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    return _answered(client, method, path, **kwargs)[1]


def _answered(client: httpx.Client, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """The answer's status and JSON; a refusal is one line (CLIError)."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise CLIError(f"cannot reach jobhook at {client.base_url}: {exc} (is `jobhook serve` running?)") from None
    try:
        data = response.json()
    except ValueError:
        raise CLIError(f"{method} {path}: HTTP {response.status_code}, not JSON") from None
    if response.status_code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        field = f" (field {error['field']})" if error.get("field") else ""
        # 422 no_provider: one line for each candidate left out and why.
        why = "".join(
            f"\n  {item.get('provider')}: {item.get('reason')}: {item.get('message')}"
            for item in error.get("candidates") or []
            if isinstance(item, dict)
        )
        raise CLIError(f"{error.get('code', response.status_code)}: {error.get('message', '')}{field}{why}")
    return response.status_code, data


def cmd_submit(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.provider.split(",") if name.strip()]
    provider: str | list[str] = names if len(names) > 1 else args.provider
    body: dict[str, Any] = {"provider": provider, "prompt": args.prompt}
    for flag in ("aspect_ratio", "rendering_speed", "output_format"):
        if getattr(args, flag):
            body[flag] = getattr(args, flag)
    if args.max_price is not None:
        body["max_price_usd"] = args.max_price
    if args.metadata:
        try:
            body["metadata"] = json.loads(args.metadata)
        except ValueError:
            raise CLIError("--metadata must be a JSON object") from None
    options: dict[str, Any] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise CLIError(f"--option expects KEY=JSON, got {item!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    if options:
        body["provider_options"] = options
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    with _client(args) as client:
        job = _call(client, "POST", "/v1/jobs", json=body, headers=headers)
        if not args.wait:
            print(json.dumps(job, indent=2))
            return 0
        return _follow(client, job, args.timeout)


FINISHED = ("completed", "failed", "timed_out")


def _follow(client: httpx.Client, job: dict[str, Any], timeout: float) -> int:
    started = time.monotonic()
    print(f"{job['id']}  {job['provider']}  submitted", file=sys.stderr)
    last = None
    while True:
        elapsed = time.monotonic() - started
        if job["status"] != last:
            last = job["status"]
            print(f"  {elapsed:6.1f}s  {last}", file=sys.stderr, flush=True)
        if job["status"] in FINISHED:
            break
        if elapsed > timeout:
            print(f"gave up waiting after {timeout:g}s; the job goes on: jobhook job {job['id']}", file=sys.stderr)
            return 1
        job = _call(client, "GET", f"/v1/jobs/{job['id']}", params={"wait": min(30, max(1, int(timeout - elapsed)))})
    print(json.dumps(job, indent=2))
    return 0 if job["status"] == "completed" else 1


def cmd_jobs(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    if args.provider:
        params["provider"] = args.provider
    with _client(args) as client:
        data = _call(client, "GET", "/v1/jobs", params=params)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    if not data["jobs"]:
        print("no jobs")
        return 0
    print(f"{'id':32}  {'provider':10}  {'status':10}  {'by':8}  {'created':24}  prompt")
    for job in data["jobs"]:
        prompt = job["request"].get("prompt", "")
        prompt = prompt if len(prompt) <= 40 else prompt[:39] + "…"
        print(
            f"{job['id']:32}  {job['provider']:10}  {job['status']:10}  {job['resolved_by'] or '-':8}  "
            f"{job['created_at']:24}  {prompt}"
        )
    return 0


def _job_events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """The job's whole history, page after page (a job's history is bounded: a few pages at most)."""
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": EVENTS_PAGE}
    while True:
        page = _call(client, "GET", f"/v1/jobs/{job_id}/events", params=params)
        events.extend(page["events"])
        if not page.get("next_cursor"):
            return events
        params["cursor"] = page["next_cursor"]


def cmd_reroute(args: argparse.Namespace) -> int:
    body = {"from_attempt": args.from_attempt} if args.from_attempt is not None else {}
    with _client(args) as client:
        status, job = _answered(client, "POST", f"/v1/jobs/{args.id}/reroute", json=body)
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    if status == 200:
        print(f"{job['id']}: attempt {args.from_attempt} was left already; the job is unchanged ({job['status']})")
    else:
        print(f"{job['id']}: rerouted to {job['provider']} ({job['status']})")
    for n, item in enumerate(job.get("attempts") or [], 1):
        task = item.get("provider_task_id") or "-"
        print(f"  {item.get('seq', n)}. {item['provider']:12} {item.get('state') or 'sending':10} {task}")
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = _call(client, "GET", f"/v1/jobs/{args.id}")
        events = _job_events(client, args.id)
    if args.json:
        print(json.dumps({"job": job, "events": events}, indent=2))
        return 0
    print(json.dumps(job, indent=2))
    if job.get("attempts"):
        print("\nattempts:")
        for n, item in enumerate(job["attempts"], 1):
            error = item.get("error") or {}
            why = f"  {error.get('provider_code') or error.get('code')}: {error.get('message')}" if error else ""
            task = item.get("provider_task_id") or "-"
            print(f"  {n}. {item['provider']:12} {item.get('state') or 'sending':10} {task}{why}")
    print("\nhistory:")
    for event in events:
        detail = ", ".join(f"{k}={v}" for k, v in event["detail"].items())
        print(f"  {event['at']}  {event['type']:9} {event['outcome'] or '':12} {detail}")
    return 0
