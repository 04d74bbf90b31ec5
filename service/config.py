"""Settings, parsed once from an explicit mapping (the environment, then an env file, then defaults).

Every error names the variable and says what it expects, so that `serve` can stop with one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import secrets as _secrets
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from service.domain import addresses, budget, pricing, routing
from service.domain.budget import Caps as BudgetCaps
from service.domain.circuit import CircuitPolicy
from service.errors import ConfigError

PROVIDER_NAMES = ("aivideoapi", "apiframe", "segmind", "apiinone")
PRICE_ORDER = routing.Order(routing.OrderBy.PRICE)  # JOBHOOK_ROUTE_ORDER's default (SPEC §8)

DEFAULT_BASE_URLS = {
    "aivideoapi": "https://api.aivideoapi.ai",
    "apiframe": "https://api.apiframe.ai",
    "segmind": "https://api.segmind.com",
    "apiinone": "https://apiin.one",
}


class Secret(str):
    """A string whose repr never shows its value (API keys, tokens, signing keys)."""

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclasses.dataclass(frozen=True)
class SimulatorSettings:
    """How the built-in `simulator` provider behaves (SPEC §7). Rates are probabilities in [0, 1]."""

    enabled: bool | None = None  # None ("auto"): on when jobhook listens on loopback only, off otherwise
    latency: float = 2.0
    failure_rate: float = 0.0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    # aivideoapi retries an unanswered callback 3 times: now, +3 min, +10 min (PROVIDERS.md §1).
    retry_delays: tuple[float, ...] = (0.0, 180.0, 600.0)
    seed: int | None = None
    # Where jobhook reaches the simulator: None is this process's own /simulator. A simulator keeps its
    # tasks in memory, so replicas on one database must all use one replica's (JOBHOOK_SIMULATOR_BASE_URL).
    base_url: str | None = None
    # JOBHOOK_SIMULATOR_PRICES: what its jobs are said to cost (free unless set), to try budgets out.
    prices: Mapping[str, float] | None = None


@dataclasses.dataclass(frozen=True)
class SmtpSettings:
    """`smtp://user:pass@host:port` (`smtps://` for TLS from the start, `?starttls=true` to upgrade)."""

    host: str
    port: int
    username: str | None
    password: Secret | None
    use_tls: bool  # implicit TLS (smtps)
    start_tls: bool
    sender: str
    recipients: tuple[str, ...]
    timeout: float = 30.0


@dataclasses.dataclass(frozen=True)
class ForwardSettings:
    url: str
    secret: Secret  # Standard Webhooks `whsec_…`


NOTIFY_EVENTS = ("completed", "failed", "timed_out")
# A poll in flight is leased for 45 s (service.engine.POLL_LEASE): its HTTP call must end well before.
POLL_TIMEOUT_MAX = 30.0
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (
    0.0,
    5.0,
    300.0,
    1800.0,
    7200.0,
    18000.0,
    36000.0,
    50400.0,
    72000.0,
    86400.0,
)


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """What one client or a crowd of them can hold of `jobhook serve` (issue 14, item 3)."""

    max_connections: int = 4096  # open connections; past it, idle ones are closed first, else 503
    max_waiters: int = 1000  # GET /v1/jobs/{id}?wait=N held at once; past it, 503 with Retry-After
    max_streams: int = 100  # /v1/stream clients at once; past it, 503 with Retry-After
    head_timeout: float = 10.0  # seconds for a request line and headers to arrive, then the connection closes


@dataclasses.dataclass(frozen=True)
class ProviderSettings:
    name: str
    api_key: Secret | None
    base_url: str
    # JOBHOOK_<P>_PRICES: USD per image by tier, over PROVIDERS.md's; None: not set.
    prices: Mapping[str, float] | None = None

    @property
    def configured(self) -> bool:
        return self.api_key is not None


@dataclasses.dataclass(frozen=True)
class Settings:
    database: Path = Path("./jobhook.db")
    # JOBHOOK_DATABASE=postgresql://…: the PostgreSQL store (several replicas); `database` is then unused.
    database_url: Secret | None = None
    media_dir: Path = Path("./jobhook-media")
    public_url: str | None = None
    secrets: tuple[Secret, ...] = ()
    api_tokens: tuple[Secret, ...] = ()
    providers: Mapping[str, ProviderSettings] = dataclasses.field(default_factory=dict)
    callback_grace: float = 60.0
    poll_interval: float = 5.0
    poll_max_interval: float = 60.0
    poll_concurrency: int = 8
    job_timeout: float = 1800.0
    timestamp_tolerance: float = 300.0
    submit_timeout: float = 30.0
    sync_timeout: float = 300.0
    poll_timeout: float = 30.0  # at most POLL_TIMEOUT_MAX: a poll's lease (service.engine) assumes it
    mirror_images: bool = True
    # Networks images may be mirrored from although they are not public (JOBHOOK_MIRROR_ALLOW_NETWORKS).
    mirror_allow_networks: tuple[addresses.IPNetwork, ...] = ()
    sqlite_synchronous: str = "FULL"
    # JOBHOOK_POSTGRESQL_FAST_PATH: the plain callback in one round trip (service.store.pg_callback).
    postgresql_fast_path: bool = True
    log_format: str = "text"
    simulator: SimulatorSettings = SimulatorSettings()
    slack_webhook_url: Secret | None = None  # the URL is the credential
    smtp: SmtpSettings | None = None
    forward: ForwardSettings | None = None
    notify_on: frozenset[str] = frozenset(NOTIFY_EVENTS)
    notify_retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    degraded_after: int = 3
    credits_low: float = 20.0
    limits: ConnectionLimits = ConnectionLimits()
    circuits: CircuitPolicy = dataclasses.field(
        default_factory=CircuitPolicy
    )  # JOBHOOK_ROUTE_BREAKER_FAILURES, …_COOLDOWN (SPEC §8)
    route_order: routing.Order = PRICE_ORDER  # JOBHOOK_ROUTE_ORDER: "auto"'s order
    # JOBHOOK_BUDGET_USD_PER_DAY and JOBHOOK_<P>_BUDGET_USD_PER_DAY (SPEC §9): none unless set.
    budget: BudgetCaps = dataclasses.field(default_factory=BudgetCaps)

    @property
    def destinations(self) -> tuple[str, ...]:
        """The configured notification destinations, in a fixed order."""
        configured = (("slack", self.slack_webhook_url), ("email", self.smtp), ("webhook", self.forward))
        return tuple(name for name, setting in configured if setting is not None)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, env_file: str | None = None) -> Settings:
        """Read settings: the environment first, then `env_file` (if given), then the defaults."""
        return _parse(environment(environ, env_file))


def environment(environ: Mapping[str, str] | None = None, env_file: str | None = None) -> dict[str, str]:
    """The variables settings are read from: `environ` (by default the process's) over `env_file`'s."""
    env: dict[str, str] = {}
    if env_file is not None:
        env.update(read_env_file(env_file))
    env.update(os.environ if environ is None else environ)
    return env


def load(env_file: str | None = None, *, warn: Callable[[str], None] | None = None) -> Settings:
    """Settings for a command: as `Settings.from_environ`, after a warning for each JOBHOOK_* variable
    that is no setting (`setting_warnings`), printed on stderr unless `warn` takes them."""
    env = environment(None, env_file)
    for line in setting_warnings(env):
        if warn is None:
            print(f"jobhook: warning: {line}", file=sys.stderr, flush=True)
        else:
            warn(line)
    return Settings.from_environ(env)


# -- the names of the settings (issue 14, item 12) --------------------------------------------------
# Every JOBHOOK_* variable that means something, in one place: a name missing here is warned about as
# unknown at start-up, so a new setting is added here too.
SETTING_NAMES: tuple[str, ...] = (
    "JOBHOOK_DATABASE",
    "JOBHOOK_MEDIA_DIR",
    "JOBHOOK_PUBLIC_URL",
    "JOBHOOK_SECRET",
    "JOBHOOK_API_TOKENS",
    "JOBHOOK_CALLBACK_GRACE",
    "JOBHOOK_POLL_INTERVAL",
    "JOBHOOK_POLL_MAX_INTERVAL",
    "JOBHOOK_POLL_CONCURRENCY",
    "JOBHOOK_POLL_TIMEOUT",
    "JOBHOOK_JOB_TIMEOUT",
    "JOBHOOK_TIMESTAMP_TOLERANCE",
    "JOBHOOK_SUBMIT_TIMEOUT",
    "JOBHOOK_SYNC_TIMEOUT",
    "JOBHOOK_MIRROR_IMAGES",
    "JOBHOOK_MIRROR_ALLOW_NETWORKS",
    "JOBHOOK_SQLITE_SYNCHRONOUS",
    "JOBHOOK_POSTGRESQL_FAST_PATH",
    "JOBHOOK_LOG_FORMAT",
    "JOBHOOK_SIMULATOR",
    "JOBHOOK_SIMULATOR_LATENCY",
    "JOBHOOK_SIMULATOR_FAILURE_RATE",
    "JOBHOOK_SIMULATOR_DROP_RATE",
    "JOBHOOK_SIMULATOR_DUPLICATE_RATE",
    "JOBHOOK_SIMULATOR_CALLBACK_RETRIES",
    "JOBHOOK_SIMULATOR_SEED",
    "JOBHOOK_SIMULATOR_BASE_URL",
    "JOBHOOK_SIMULATOR_PRICES",
    "JOBHOOK_SIMULATOR_BUDGET_USD_PER_DAY",
    "JOBHOOK_SLACK_WEBHOOK_URL",
    "JOBHOOK_SMTP_URL",
    "JOBHOOK_EMAIL_FROM",
    "JOBHOOK_EMAIL_TO",
    "JOBHOOK_FORWARD_URL",
    "JOBHOOK_FORWARD_SECRET",
    "JOBHOOK_NOTIFY_ON",
    "JOBHOOK_NOTIFY_RETRY_SCHEDULE",
    "JOBHOOK_DEGRADED_AFTER",
    "JOBHOOK_CREDITS_LOW",
    "JOBHOOK_MAX_CONNECTIONS",
    "JOBHOOK_HEAD_TIMEOUT",
    "JOBHOOK_MAX_WAITERS",
    "JOBHOOK_MAX_STREAMS",
    "JOBHOOK_ROUTE_ORDER",
    "JOBHOOK_ROUTE_BREAKER_FAILURES",
    "JOBHOOK_ROUTE_COOLDOWN",
    "JOBHOOK_ROUTE_MAX_COOLDOWN",
    "JOBHOOK_ROUTE_CREDITS_COOLDOWN",
    "JOBHOOK_BUDGET_USD_PER_DAY",
    # the API clients (`jobhook submit`, `jobs`, `job`)
    "JOBHOOK_URL",
    "JOBHOOK_TOKEN",
    # read by deploy/ (compose, Caddy) from the same env file, not by jobhook itself
    "JOBHOOK_DOMAIN",
    "JOBHOOK_UPSTREAM",
    "JOBHOOK_PRIVATE_ADDR",
    "JOBHOOK_PRIVATE_BIND",
    "JOBHOOK_PG_PASSWORD",
    "JOBHOOK_ENV_FILE",
)
# JOBHOOK_<PROVIDER>_<suffix>, for each provider of PROVIDER_NAMES.
# Only what this version reads: a cap it does not enforce must be warned about, not accepted.
PROVIDER_SETTING_SUFFIXES = ("API_KEY", "BASE_URL", "PRICES", "BUDGET_USD_PER_DAY")
# The test suite's own variables (JOBHOOK_TEST_ENGINES, JOBHOOK_CRASH_SEED): never warned about.
TEST_ONLY_PREFIXES = ("JOBHOOK_TEST_", "JOBHOOK_CRASH_")


def known_setting_names() -> tuple[str, ...]:
    per_provider = tuple(
        f"JOBHOOK_{provider.upper()}_{suffix}" for provider in PROVIDER_NAMES for suffix in PROVIDER_SETTING_SUFFIXES
    )
    return SETTING_NAMES + per_provider


def setting_warnings(env: Mapping[str, str]) -> list[str]:
    """One line for each JOBHOOK_* variable that is no setting, with the closest known name if there is
    one: a misspelt setting is otherwise silently ignored, and its default silently used."""
    known = known_setting_names()
    lines = []
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith("JOBHOOK_") or name in known or upper.startswith(TEST_ONLY_PREFIXES):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"unknown setting {name} is ignored{hint}")
    return lines


def read_env_file(path: str) -> dict[str, str]:
    """A `.env`-style file: `KEY=value` lines, `#` comments, optional `export ` and quotes."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("--env-file", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("--env-file", f"{path} is not UTF-8 text") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError("--env-file", f"{path}:{number}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds from `0.5`, `5s`, `5m`, `2h`, `30d` or `250ms`. Raises ValueError."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(text)
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError(text)
    return seconds


def _parse(env: Mapping[str, str]) -> Settings:
    def get(name: str) -> str | None:
        value = env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def duration(name: str, default: float, *, minimum: float = 0.0, maximum: float = math.inf) -> float:
        raw = get(name)
        if raw is None:
            return default
        try:
            value = parse_duration(raw)
        except ValueError:
            raise ConfigError(name, f"expected seconds such as 5, 0.5 or 2m, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(name, f"must be at least {minimum:g} seconds, got {raw!r}")
        if value > maximum:
            raise ConfigError(name, f"must be at most {maximum:g} seconds, got {raw!r}")
        return value

    def integer(name: str, default: int, *, minimum: int) -> int:
        raw = get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(name, f"must be at least {minimum}, got {value}")
        return value

    def rate(name: str, default: float) -> float:
        raw = get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"expected a probability between 0 and 1, got {raw!r}") from None
        if not 0.0 <= value <= 1.0:
            raise ConfigError(name, f"expected a probability between 0 and 1, got {raw!r}")
        return value

    def boolean(name: str, default: bool) -> bool:
        raw = get(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"expected true or false, got {raw!r}")

    def choice(name: str, default: str, allowed: tuple[str, ...], *, upper: bool = False) -> str:
        raw = get(name)
        if raw is None:
            return default
        value = raw.upper() if upper else raw.lower()
        if value not in allowed:
            raise ConfigError(name, f"expected one of {', '.join(allowed)}, got {raw!r}")
        return value

    def secret_list(name: str) -> tuple[Secret, ...]:
        raw = get(name)
        if raw is None:
            return ()
        items = tuple(Secret(part.strip()) for part in raw.split(","))
        if any(not item for item in items):
            raise ConfigError(name, "expected a comma-separated list without empty entries")
        return items

    def simulator_enabled() -> bool | None:
        """JOBHOOK_SIMULATOR: `auto` (the default, None), or a boolean."""
        raw = get("JOBHOOK_SIMULATOR")
        if raw is None or raw.lower() == "auto":
            return None
        try:
            return boolean("JOBHOOK_SIMULATOR", True)
        except ConfigError:
            raise ConfigError("JOBHOOK_SIMULATOR", f"expected auto, true or false, got {raw!r}") from None

    def prices(name: str) -> Mapping[str, float] | None:
        raw = get(name)
        try:
            return pricing.parse_prices(raw) if raw is not None else None
        except pricing.PriceSyntaxError as exc:
            raise ConfigError(name, str(exc)) from None

    def cap(name: str) -> int | None:
        """A daily budget in US dollars (SPEC §9), in micro-dollars; None: unset, no cap."""
        raw = get(name)
        try:
            return budget.parse_cap(raw) if raw is not None else None
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None

    providers = {}
    caps: dict[str, int] = {}
    for provider in PROVIDER_NAMES:
        key_name = f"JOBHOOK_{provider.upper()}_API_KEY"
        url_name = f"JOBHOOK_{provider.upper()}_BASE_URL"
        api_key = get(key_name)
        base_url = get(url_name) or DEFAULT_BASE_URLS[provider]
        own = cap(f"JOBHOOK_{provider.upper()}_BUDGET_USD_PER_DAY")
        if own is not None:
            caps[provider] = own
        providers[provider] = ProviderSettings(
            name=provider,
            api_key=Secret(api_key) if api_key else None,
            base_url=http_url(url_name, base_url),
            prices=prices(f"JOBHOOK_{provider.upper()}_PRICES"),
        )
    simulator_cap = cap("JOBHOOK_SIMULATOR_BUDGET_USD_PER_DAY")
    if simulator_cap is not None:
        caps[routing.SIMULATOR] = simulator_cap

    public_url = get("JOBHOOK_PUBLIC_URL")
    poll_interval = duration("JOBHOOK_POLL_INTERVAL", 5.0, minimum=0.01)
    poll_max_interval = duration("JOBHOOK_POLL_MAX_INTERVAL", 60.0, minimum=0.01)
    if poll_max_interval < poll_interval:
        raise ConfigError(
            "JOBHOOK_POLL_MAX_INTERVAL",
            f"must not be below JOBHOOK_POLL_INTERVAL ({poll_interval:g}s), got {poll_max_interval:g}s",
        )
    retry_raw = get("JOBHOOK_SIMULATOR_CALLBACK_RETRIES")
    retry_delays = SimulatorSettings.retry_delays
    if retry_raw is not None:
        try:
            retry_delays = tuple(parse_duration(part) for part in retry_raw.split(","))
        except ValueError:
            raise ConfigError(
                "JOBHOOK_SIMULATOR_CALLBACK_RETRIES",
                f"expected comma-separated delays such as 0,3m,10m, got {retry_raw!r}",
            ) from None
    seed_raw = get("JOBHOOK_SIMULATOR_SEED")
    simulator_url = get("JOBHOOK_SIMULATOR_BASE_URL")
    slack = get("JOBHOOK_SLACK_WEBHOOK_URL")
    notify_raw = get("JOBHOOK_NOTIFY_ON")
    notify_on = frozenset(NOTIFY_EVENTS)
    if notify_raw is not None:
        items = [item.strip().removeprefix("job.") for item in notify_raw.split(",") if item.strip()]
        unknown = [item for item in items if item not in NOTIFY_EVENTS]
        if unknown:
            raise ConfigError(
                "JOBHOOK_NOTIFY_ON",
                f"expected a comma-separated subset of {', '.join(NOTIFY_EVENTS)}, got {unknown[0]!r}",
            )
        notify_on = frozenset(items)
    schedule_raw = get("JOBHOOK_NOTIFY_RETRY_SCHEDULE")
    schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    if schedule_raw is not None:
        try:
            schedule = tuple(parse_duration(part) for part in schedule_raw.split(","))
        except ValueError:
            raise ConfigError(
                "JOBHOOK_NOTIFY_RETRY_SCHEDULE",
                f"expected comma-separated delays such as 0,5s,5m,2h, got {schedule_raw!r}",
            ) from None
    credits_raw = get("JOBHOOK_CREDITS_LOW")
    try:
        credits_low = float(credits_raw) if credits_raw is not None else 20.0
        if not math.isfinite(credits_low):
            raise ValueError(credits_raw)
    except ValueError:
        raise ConfigError("JOBHOOK_CREDITS_LOW", f"expected a number of credits, got {credits_raw!r}") from None
    database, database_url = database_setting(get("JOBHOOK_DATABASE"))
    limits = ConnectionLimits(
        max_connections=integer("JOBHOOK_MAX_CONNECTIONS", ConnectionLimits.max_connections, minimum=16),
        max_waiters=integer("JOBHOOK_MAX_WAITERS", ConnectionLimits.max_waiters, minimum=1),
        max_streams=integer("JOBHOOK_MAX_STREAMS", ConnectionLimits.max_streams, minimum=1),
        head_timeout=duration("JOBHOOK_HEAD_TIMEOUT", ConnectionLimits.head_timeout, minimum=0.1, maximum=300.0),
    )
    allow_raw = get("JOBHOOK_MIRROR_ALLOW_NETWORKS")
    try:
        mirror_allow_networks = addresses.parse_networks(allow_raw) if allow_raw is not None else ()
    except ValueError as exc:
        raise ConfigError(
            "JOBHOOK_MIRROR_ALLOW_NETWORKS",
            f"expected comma-separated networks such as 10.0.0.0/8,fd00::/8, got {str(exc)!r}",
        ) from None
    return Settings(
        database=database,
        database_url=database_url,
        media_dir=Path(get("JOBHOOK_MEDIA_DIR") or "./jobhook-media"),
        public_url=http_url("JOBHOOK_PUBLIC_URL", public_url).rstrip("/") if public_url else None,
        secrets=secret_list("JOBHOOK_SECRET"),
        api_tokens=secret_list("JOBHOOK_API_TOKENS"),
        providers=providers,
        callback_grace=duration("JOBHOOK_CALLBACK_GRACE", 60.0),
        poll_interval=poll_interval,
        poll_max_interval=poll_max_interval,
        poll_concurrency=integer("JOBHOOK_POLL_CONCURRENCY", 8, minimum=1),
        job_timeout=duration("JOBHOOK_JOB_TIMEOUT", 1800.0, minimum=0.1),
        timestamp_tolerance=duration("JOBHOOK_TIMESTAMP_TOLERANCE", 300.0, minimum=1.0),
        submit_timeout=duration("JOBHOOK_SUBMIT_TIMEOUT", 30.0, minimum=0.1),
        sync_timeout=duration("JOBHOOK_SYNC_TIMEOUT", 300.0, minimum=0.1),
        poll_timeout=duration("JOBHOOK_POLL_TIMEOUT", 30.0, minimum=0.1, maximum=POLL_TIMEOUT_MAX),
        mirror_images=boolean("JOBHOOK_MIRROR_IMAGES", True),
        mirror_allow_networks=mirror_allow_networks,
        sqlite_synchronous=choice("JOBHOOK_SQLITE_SYNCHRONOUS", "FULL", ("FULL", "NORMAL", "EXTRA"), upper=True),
        postgresql_fast_path=boolean("JOBHOOK_POSTGRESQL_FAST_PATH", True),
        log_format=choice("JOBHOOK_LOG_FORMAT", "text", ("text", "json")),
        simulator=SimulatorSettings(
            enabled=simulator_enabled(),
            latency=duration("JOBHOOK_SIMULATOR_LATENCY", 2.0),
            failure_rate=rate("JOBHOOK_SIMULATOR_FAILURE_RATE", 0.0),
            drop_rate=rate("JOBHOOK_SIMULATOR_DROP_RATE", 0.0),
            duplicate_rate=rate("JOBHOOK_SIMULATOR_DUPLICATE_RATE", 0.0),
            retry_delays=retry_delays,
            seed=integer("JOBHOOK_SIMULATOR_SEED", 0, minimum=0) if seed_raw is not None else None,
            base_url=http_url("JOBHOOK_SIMULATOR_BASE_URL", simulator_url).rstrip("/") if simulator_url else None,
            prices=prices("JOBHOOK_SIMULATOR_PRICES"),
        ),
        slack_webhook_url=Secret(http_url("JOBHOOK_SLACK_WEBHOOK_URL", slack, secret=True)) if slack else None,
        smtp=_smtp(get("JOBHOOK_SMTP_URL"), get("JOBHOOK_EMAIL_FROM"), get("JOBHOOK_EMAIL_TO")),
        forward=_forward(get("JOBHOOK_FORWARD_URL"), get("JOBHOOK_FORWARD_SECRET")),
        notify_on=notify_on,
        notify_retry_schedule=schedule,
        degraded_after=integer("JOBHOOK_DEGRADED_AFTER", 3, minimum=1),
        credits_low=credits_low,
        limits=limits,
        circuits=_circuits(integer, duration),
        route_order=_route_order(get("JOBHOOK_ROUTE_ORDER")),
        budget=BudgetCaps.of(cap("JOBHOOK_BUDGET_USD_PER_DAY"), caps),
    )


def _route_order(raw: str | None) -> routing.Order:
    """JOBHOOK_ROUTE_ORDER (SPEC §8): the order "auto" tries providers in; price by default."""
    if raw is None:
        return PRICE_ORDER
    try:
        return routing.Order.parse(raw, (*PROVIDER_NAMES, routing.SIMULATOR))
    except ValueError as exc:
        raise ConfigError("JOBHOOK_ROUTE_ORDER", str(exc)) from None


def _circuits(integer: Callable[..., int], duration: Callable[..., float]) -> CircuitPolicy:
    """The per-provider circuits' settings (SPEC §8)."""
    cooldown = duration("JOBHOOK_ROUTE_COOLDOWN", CircuitPolicy.cooldown, minimum=0.01)
    max_cooldown = duration("JOBHOOK_ROUTE_MAX_COOLDOWN", CircuitPolicy.max_cooldown, minimum=0.01)
    if max_cooldown < cooldown:
        raise ConfigError(
            "JOBHOOK_ROUTE_MAX_COOLDOWN",
            f"must not be below JOBHOOK_ROUTE_COOLDOWN ({cooldown:g}s), got {max_cooldown:g}s",
        )
    return CircuitPolicy(
        failures=integer("JOBHOOK_ROUTE_BREAKER_FAILURES", CircuitPolicy.failures, minimum=1),
        cooldown=cooldown,
        max_cooldown=max_cooldown,
        credits_cooldown=duration("JOBHOOK_ROUTE_CREDITS_COOLDOWN", CircuitPolicy.credits_cooldown, minimum=0.01),
    )


_EMAIL = re.compile(r"^[^@\s<>,]+@[^@\s<>,]+\.[^@\s<>,]+$")


def _smtp(url: str | None, sender: str | None, recipients: str | None) -> SmtpSettings | None:
    if url is None:
        for name, value in (("JOBHOOK_EMAIL_FROM", sender), ("JOBHOOK_EMAIL_TO", recipients)):
            if value is not None:
                raise ConfigError(name, "is set but JOBHOOK_SMTP_URL is not: set both, or neither")
        return None
    expected = "expected smtp://user:pass@host:port, smtps://… for TLS, or smtp://…?starttls=true"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError("JOBHOOK_SMTP_URL", expected) from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname or any(ch.isspace() for ch in url):
        raise ConfigError("JOBHOOK_SMTP_URL", expected)
    query = dict(pair.partition("=")[::2] for pair in parts.query.split("&") if pair)
    unknown = sorted(set(query) - {"starttls"})
    if unknown:
        raise ConfigError("JOBHOOK_SMTP_URL", f"unknown option {unknown[0]!r}; {expected}")
    starttls = query.get("starttls", "false").lower()
    if starttls not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError("JOBHOOK_SMTP_URL", f"starttls must be true or false, got {starttls!r}")
    use_tls = parts.scheme == "smtps"
    start_tls = starttls in ("true", "1", "yes")
    if use_tls and start_tls:
        raise ConfigError("JOBHOOK_SMTP_URL", "smtps:// is TLS from the start; ?starttls=true is for smtp://")
    if sender is None or not _EMAIL.match(sender):
        raise ConfigError("JOBHOOK_EMAIL_FROM", f"expected one address such as jobhook@example.com, got {sender!r}")
    addresses = tuple(part.strip() for part in (recipients or "").split(",") if part.strip())
    if not addresses or not all(_EMAIL.match(address) for address in addresses):
        raise ConfigError("JOBHOOK_EMAIL_TO", f"expected comma-separated addresses, got {recipients!r}")
    from urllib.parse import unquote

    return SmtpSettings(
        host=parts.hostname,
        port=port or (465 if use_tls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=Secret(unquote(parts.password)) if parts.password else None,
        use_tls=use_tls,
        start_tls=start_tls,
        sender=sender,
        recipients=addresses,
    )


def _forward(url: str | None, secret: str | None) -> ForwardSettings | None:
    if url is None:
        if secret is not None:
            raise ConfigError("JOBHOOK_FORWARD_SECRET", "is set but JOBHOOK_FORWARD_URL is not: set both, or neither")
        return None
    http_url("JOBHOOK_FORWARD_URL", url, secret=True)  # like Slack's, its path may hold a token
    if secret is None:
        raise ConfigError(
            "JOBHOOK_FORWARD_SECRET", "is required with JOBHOOK_FORWARD_URL: a Standard Webhooks whsec_… secret"
        )
    import base64
    import binascii

    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not secret.startswith("whsec_") or len(key) < 24:
        raise ConfigError(
            "JOBHOOK_FORWARD_SECRET", "expected a Standard Webhooks secret: whsec_ followed by base64 of 24 to 64 bytes"
        )
    return ForwardSettings(url=url, secret=Secret(secret))


_HOSTNAME = re.compile(r"^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?$")
# Everything between `scheme://` (if any) and the LAST `@`: user info, even with an unescaped `@`, `/`
# or `:` in the password (a greedy match masks too much rather than too little).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://|//)?.*@")
_QUERY_VALUE = re.compile(r"([?&][^=&#]*=)[^&#]*")


def shown_url(value: str) -> str:
    """A URL fit to show (listings, messages): user info and query values masked, as either may be a
    credential (`https://user:password@…`, `?key=…`). Works on malformed URLs too."""
    return _QUERY_VALUE.sub(r"\1***", _USERINFO.sub(r"\1***@", value))


def http_url(name: str, value: str, *, secret: bool = False) -> str:
    """`value` if it is an absolute http(s) URL with a plausible host, else a ConfigError naming `name`.

    A refusal quotes the value with its user info and query values masked (`shown_url`); a `secret`
    URL (a Slack webhook, whose path is the credential) is not quoted at all.
    """
    got = "the value is not shown: the URL is a credential" if secret else f"got {shown_url(value)!r}"
    try:
        if not value.isprintable() or any(ch.isspace() for ch in value):
            raise ValueError(value)
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
        host = parts.hostname or ""
        if ":" in host:
            ipaddress.IPv6Address(host)  # raises ValueError
        elif not _HOSTNAME.match(host):
            raise ValueError(value)
    except ValueError:
        raise ConfigError(name, f"expected an http(s) URL such as https://hooks.example.com, {got}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, f"expected an http(s) URL such as https://hooks.example.com, {got}")
    return value


def generate_secret() -> str:
    return _secrets.token_urlsafe(32)


def check_database_directory(settings: Settings) -> None:
    """A SQLite database may be a new file, but not in a new directory: a misspelt JOBHOOK_DATABASE
    would otherwise start afresh (a new signing key, no jobs) in directories made for it. Only a
    missing directory is refused here; one that cannot be used is the store's error."""
    if settings.database_url is not None:
        return
    folder = settings.database.parent
    if not folder.exists():
        raise ConfigError(
            "JOBHOOK_DATABASE",
            f"the directory {folder} does not exist: create it, or correct the path ({settings.database})",
        )


def database_setting(raw: str | None) -> tuple[Path, Secret | None]:
    """JOBHOOK_DATABASE: a file path or `sqlite:///path` (SQLite), or `postgresql://user:pass@host:port/db`."""
    if not raw:
        return Path("./jobhook.db"), None
    scheme, sep, _ = raw.partition("://")
    if not sep:
        return Path(raw), None
    if scheme == "sqlite":
        path = raw.removeprefix("sqlite://")
        if not path.startswith("/") or path == "/":
            raise ConfigError("JOBHOOK_DATABASE", f"expected sqlite:///path/to/file.db, got {shown_url(raw)!r}")
        # sqlite:///relative.db is a path relative to here, sqlite:////abs.db an absolute one (SQLAlchemy's rule).
        return Path(path[1:]), None
    if scheme in ("postgresql", "postgres"):
        try:
            parts = urlsplit(raw)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            # Not urllib's text: it quotes the "port", which is part of the password when that holds an
            # unescaped `/`, `?`, `#` or `@`.
            raise ConfigError(
                "JOBHOOK_DATABASE",
                "not a valid PostgreSQL URL (the port is not a number; in the password, percent-encode "
                "@ : / ? # as %40 %3A %2F %3F %23)",
            ) from None
        if not parts.path.strip("/") and not parts.hostname:
            raise ConfigError("JOBHOOK_DATABASE", "expected postgresql://user:password@host:5432/database")
        return Path("./jobhook.db"), Secret(raw)
    raise ConfigError(
        "JOBHOOK_DATABASE", f"expected a file path, sqlite:///path or postgresql://…, got the scheme {scheme!r}"
    )
