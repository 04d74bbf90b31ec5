"""Daily budgets (SPEC §9): may an attempt be sent within the caps, and what an attempt's end does to
the day's figures. Pure.

A cap is per UTC day: `JOBHOOK_BUDGET_USD_PER_DAY` for every provider together (the `total` scope),
`JOBHOOK_<P>_BUDGET_USD_PER_DAY` for one (the provider's own scope). An attempt's price is reserved in
the transaction that marks it sending, kept when it ends accepted, uncertain or completed (the
provider may charge), and released when it ends not_sent, rejected or failed (nothing was charged,
or the reseller refunds a failed task). The store holds each day's figures and writes what this
module decides; routing leaves out a candidate `check` refuses.

Amounts are whole micro-dollars (`int`): the sums and the comparison with a cap are exact, whatever
order the reservations come in (prices are given to 1/100 of a cent, `pricing.DIGITS`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from service.domain import pricing
from service.domain.job import rfc3339
from service.domain.pricing import PriceTable
from service.domain.status import images_asked
from service.errors import JobhookError

TOTAL = "total"  # the scope of JOBHOOK_BUDGET_USD_PER_DAY: every provider together
MICROS_PER_USD = 1_000_000
SECONDS_PER_DAY = 86_400  # Unix time has no leap seconds: every UTC day is this long
# No daily cap is larger than this: a larger number is a typo, not a budget.
MAX_CAP_USD = 1_000_000.0
TOTAL_SETTING = "JOBHOOK_BUDGET_USD_PER_DAY"


def setting(scope: str) -> str:
    """The variable that sets a scope's cap."""
    return TOTAL_SETTING if scope == TOTAL else f"JOBHOOK_{scope.upper()}_BUDGET_USD_PER_DAY"


def micros(usd: float) -> int:
    return round(usd * MICROS_PER_USD)


def usd(amount: int) -> float:
    return round(amount / MICROS_PER_USD, 6)


def shown(amount: int) -> str:
    """$1.00, $0.14; a fraction of a cent shows itself ($0.035) rather than being rounded away."""
    value = usd(amount)
    return f"${value:.2f}" if round(value, 2) == value else f"${value:g}"


# -- days ---------------------------------------------------------------------------------------------


def day_of(now: float) -> str:
    """The UTC day `now` falls in, `2026-12-04`: the key of the day's figures."""
    return dt.datetime.fromtimestamp(now, tz=dt.UTC).date().isoformat()


def reset_at(now: float) -> float:
    """The next UTC midnight: when today's figures give way to tomorrow's."""
    return (math.floor(now / SECONDS_PER_DAY) + 1) * SECONDS_PER_DAY


def retry_after(now: float) -> int:
    """Whole seconds to the next UTC midnight (a `Retry-After`), at least 1."""
    return max(1, math.ceil(reset_at(now) - now))


# -- caps and figures -----------------------------------------------------------------------------------


def parse_cap(text: str) -> int:
    """A daily cap in US dollars (`25`, `0.50`; `0` sends nothing) → micro-dollars. Raises ValueError
    with a message saying what is expected."""
    raw = text.strip()
    try:
        value = float(raw.removeprefix("$"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_CAP_USD:
        raise ValueError(
            f"expected US dollars per UTC day from 0 to {MAX_CAP_USD:,.0f} such as 25 or 0.50, got {raw!r}"
        )
    return micros(value)


@dataclasses.dataclass(frozen=True)
class Caps:
    """The caps in force, micro-dollars per UTC day; a scope not named has none."""

    total: int | None = None
    providers: Mapping[str, int] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, total: int | None = None, providers: Mapping[str, int] | None = None) -> Caps:
        return cls(total, MappingProxyType(dict(providers or {})))

    def __bool__(self) -> bool:
        return self.total is not None or bool(self.providers)

    def cap(self, scope: str) -> int | None:
        return self.total if scope == TOTAL else self.providers.get(scope)

    def scopes(self, provider: str) -> tuple[tuple[str, int], ...]:
        """The capped scopes an attempt at `provider` counts in, the total first (the order the store
        locks them in, the same in every transaction)."""
        found: list[tuple[str, int]] = []
        if self.total is not None:
            found.append((TOTAL, self.total))
        own = self.providers.get(provider)
        if own is not None:
            found.append((provider, own))
        return tuple(found)


@dataclasses.dataclass(frozen=True)
class Figures:
    """One scope's day: what is reserved (sent, outcome not yet known) and spent (kept)."""

    reserved: int = 0
    spent: int = 0
    exhausted_at: float | None = None  # when a cap of this scope first refused something today

    @property
    def used(self) -> int:
        return self.reserved + self.spent


NOTHING = Figures()


@dataclasses.dataclass(frozen=True)
class Policy:
    """What the store needs to reserve an attempt's price: the caps, and every provider's prices."""

    caps: Caps = dataclasses.field(default_factory=Caps)
    prices: Mapping[str, PriceTable] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    def price(self, provider: str, request: Mapping[str, Any]) -> int | None:
        return price_of(self.prices.get(provider), request)


def price_of(table: PriceTable | None, request: Mapping[str, Any]) -> int | None:
    """What an attempt of `request` at a provider priced by `table` reserves, or None when unknown:
    the price of the images the request asks for (`Engine.cost`'s rule)."""
    if table is None:
        return None
    price = pricing.price_usd(table, request, images_asked(request))
    return None if price is None else micros(price)


# -- may it be sent? --------------------------------------------------------------------------------------


class Why(enum.StrEnum):
    OVER_CAP = "over_cap"  # the price does not fit in what is left of the cap today
    UNKNOWN_PRICE = "unknown_price"  # the provider's price for it is unknown: no cap can hold it


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A cap refuses an attempt: which scope, and what it says to whoever asked."""

    scope: str  # "total" or the provider
    provider: str  # the provider the attempt was for
    why: Why
    cap: int
    figures: Figures
    price: int | None
    reset_at: float

    @property
    def message(self) -> str:
        name = setting(self.scope)
        reset = rfc3339(self.reset_at)
        if self.why is Why.UNKNOWN_PRICE:
            return (
                f"{self.provider}'s price for this request is unknown, so it cannot be held under the daily budget "
                f"({name}={usd(self.cap):g}): set JOBHOOK_{self.provider.upper()}_PRICES"
            )
        assert self.price is not None
        whose = "the daily budget of all providers" if self.scope == TOTAL else f"{self.provider}'s daily budget"
        return (
            f"{whose} ({name}={usd(self.cap):g}) cannot take this job's {shown(self.price)} at {self.provider}: "
            f"{shown(self.figures.used)} of {shown(self.cap)} is spent or reserved today (UTC); it resets at {reset}"
        )

    def detail(self) -> dict[str, Any]:
        """`budget.exhausted`'s data (SPEC §9), and the job's `budget` event."""
        return {
            "scope": self.scope,
            "cap": usd(self.cap),
            "spent": usd(self.figures.spent),
            "reserved": usd(self.figures.reserved),
            "reset_at": rfc3339(self.reset_at),
        }


def check(caps: Caps, figures: Mapping[str, Figures], provider: str, price: int | None, now: float) -> Refusal | None:
    """May an attempt at `provider` costing `price` be sent now, given today's `figures` by scope?

    None: yes. Otherwise the first scope that refuses (the total before the provider's own): its cap
    is over once what is spent or reserved today, plus this price, would pass it. A price that is
    unknown cannot be held under any cap: refused by the first cap that applies. No cap: always yes.
    """
    scopes = caps.scopes(provider)
    if not scopes:
        return None
    reset = reset_at(now)
    if price is None:
        scope, cap = scopes[0]
        return Refusal(scope, provider, Why.UNKNOWN_PRICE, cap, figures.get(scope, NOTHING), None, reset)
    if price == 0:
        return None  # costs nothing: no cap is passed by it, even one already passed (lowered since)
    for scope, cap in scopes:
        seen = figures.get(scope, NOTHING)
        if seen.used + price > cap:
            return Refusal(scope, provider, Why.OVER_CAP, cap, seen, price, reset)
    return None


class OverBudget(JobhookError):
    """The store refused the reservation (a cap filled between routing and the transaction): no job
    was made, nothing was sent."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class BudgetExceeded(JobhookError):
    """No candidate can take the submission within today's caps (429 budget_exceeded, SPEC §9)."""

    def __init__(self, refusal: Refusal, left_out: Iterable[Any] = ()) -> None:
        super().__init__(f"no provider can take this job within today's budget: {refusal.message}")
        self.message = str(self)
        self.refusal = refusal
        self.left_out = tuple(left_out)


def first_refusal(refusals: Iterable[Refusal]) -> Refusal | None:
    """The refusal a 429 names: the total's if it refused any candidate (nothing else helps), else
    the first candidate's."""
    found = list(refusals)
    for refusal in found:
        if refusal.scope == TOTAL:
            return refusal
    return found[0] if found else None


# -- what an attempt's end does ---------------------------------------------------------------------------


class Held(enum.StrEnum):
    """What an attempt holds of the day's figures."""

    RESERVED = "reserved"
    KEPT = "kept"


KEEP_STATES = frozenset({"accepted", "uncertain", "completed"})
RELEASE_STATES = frozenset({"not_sent", "rejected", "failed"})


@dataclasses.dataclass(frozen=True)
class Move:
    """Add `reserved` and `spent` (either may be negative) to the day's figures of each scope the
    attempt counts in; the attempt then holds `held` (None: nothing)."""

    reserved: int
    spent: int
    held: Held | None


def settle(held: Held | None, amount: int, state: str) -> Move | None:
    """What an attempt that holds `amount` as `held` does to the figures on entering `state`; None:
    nothing changes (it holds nothing, or it already holds what this state means)."""
    if held is Held.RESERVED and state in KEEP_STATES:
        return Move(-amount, amount, Held.KEPT)
    if held is Held.RESERVED and state in RELEASE_STATES:
        return Move(-amount, 0, None)
    if held is Held.KEPT and state in RELEASE_STATES:
        return Move(0, -amount, None)  # taken, then failed: the reseller refunds a failed task
    return None


# -- what operators see -----------------------------------------------------------------------------------


def scope_json(scope: str, cap: int | None, figures: Figures) -> dict[str, Any]:
    return {
        "scope": scope,
        "cap_usd": None if cap is None else usd(cap),
        "reserved_usd": usd(figures.reserved),
        "spent_usd": usd(figures.spent),
        "remaining_usd": None if cap is None else usd(max(0, cap - figures.used)),
        "exhausted_at": rfc3339(figures.exhausted_at),
    }


def report(caps: Caps, figures: Mapping[str, Figures], providers: Mapping[str, bool], now: float) -> dict[str, Any]:
    """`GET /v1/budget`, `jobhook budget` and the dashboard: each cap, today's reserved and spent
    amounts, what is left, and the reset. `providers`: each provider shown, and whether it has a
    price at all (one without cannot be sent under a cap)."""
    names = list(providers) + sorted(set(figures) - set(providers) - {TOTAL})
    rows = []
    for name in names:
        row = scope_json(name, caps.providers.get(name), figures.get(name, NOTHING))
        priced = providers.get(name, True)
        row["priced"] = priced
        if not priced:
            why = "left out while a cap applies" if caps.scopes(name) else "what it is sent is not counted"
            row["note"] = f"no price known: {why} (set JOBHOOK_{name.upper()}_PRICES)"
        rows.append(row)
    return {
        "day": day_of(now),
        "reset_at": rfc3339(reset_at(now)),
        "retry_after": retry_after(now),
        "total": scope_json(TOTAL, caps.total, figures.get(TOTAL, NOTHING)),
        "providers": rows,
    }
