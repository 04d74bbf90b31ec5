"""Which providers a job may be sent to, and in what order (SPEC §8). Pure.

The engine gathers each candidate's facts (configured? can it honour the request? what would it
cost? how fast has it been?) and asks `choose`, which answers the candidates that remain, in the order
to try them, and every one left out with its reason. The reasons are codes a backend can act on; they
become the `candidates` of a `422 no_provider`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from service.domain import budget, pricing, request
from service.domain.pricing import PriceTable
from service.domain.request import Capabilities, GenerationRequest, RequestError
from service.errors import JobhookError

AUTO = "auto"
SIMULATOR = "simulator"
# Prices are rounded to 1/100 of a cent (pricing.DIGITS): a price equal to the cap is within it, even
# when float arithmetic lands a hair above.
PRICE_TOLERANCE = 1e-9


class Reason(enum.StrEnum):
    """Why a candidate is left out; the order of the members is the order they are checked in."""

    NOT_CONFIGURED = "not_configured"  # no API key
    UNSUPPORTED = "unsupported"  # cannot honour a field or value of the request (request.check)
    CIRCUIT_OPEN = "circuit_open"  # refused or unreachable too often lately (the circuits' slice)
    OVER_BUDGET = "over_budget"  # today's budget (its own, or the total) cannot take this request (SPEC §9)
    OVER_MAX_PRICE = "over_max_price"  # this request costs more there than max_price_usd
    UNKNOWN_PRICE = "unknown_price"  # under max_price_usd or a budget, a price jobhook cannot tell is left out


class OrderBy(enum.StrEnum):
    GIVEN = "given"  # as the request lists them (its order of preference)
    PRICE = "price"  # cheapest for this request first, unknown prices last
    LATENCY = "latency"  # fastest measured p50 first, unmeasured last
    FIXED = "fixed"  # JOBHOOK_ROUTE_ORDER's list; providers it does not name come after, as given


@dataclasses.dataclass(frozen=True)
class Order:
    by: OrderBy = OrderBy.GIVEN
    fixed: tuple[str, ...] = ()  # OrderBy.FIXED only

    @classmethod
    def parse(cls, text: str, known: Sequence[str]) -> Order:
        """JOBHOOK_ROUTE_ORDER: `price`, `latency`, or a comma-separated list of provider names.

        Raises ValueError with a message saying what is accepted.
        """
        word = text.strip().lower()
        if word in (OrderBy.PRICE, OrderBy.LATENCY):
            return cls(OrderBy(word))
        names = tuple(part.strip().lower() for part in word.split(","))
        unknown = [name for name in names if name not in known]
        if not word or unknown or len(set(names)) != len(names):
            raise ValueError(
                f"expected price, latency, or a comma-separated list of distinct providers among "
                f"{', '.join(known)}, got {text!r}"
            )
        return cls(OrderBy.FIXED, names)


@dataclasses.dataclass(frozen=True)
class Facts:
    """What routing knows of one candidate for one request."""

    provider: str
    configured: bool
    unsupported: RequestError | None = None  # the 422 request.check would answer, if any
    price_usd: float | None = None  # for this request; None: unknown
    latency_p50: float | None = None  # seconds, submission to final; None: not measured yet
    circuit_open: bool = False
    over_budget: budget.Refusal | None = None  # a daily cap refuses it (SPEC §9): which, and why


@dataclasses.dataclass(frozen=True)
class LeftOut:
    provider: str
    reason: Reason
    message: str
    field: str | None = None  # UNSUPPORTED: the request's field the provider cannot honour
    refusal: budget.Refusal | None = None  # left out by a daily cap: which scope, and its reset (a 429)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"provider": self.provider, "reason": str(self.reason), "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclasses.dataclass(frozen=True)
class Route:
    candidates: tuple[str, ...]  # in the order to try them; empty: no provider can take the job
    left_out: tuple[LeftOut, ...]  # in the order the candidates were given


class NoProvider(JobhookError):
    """No candidate can take the job (422 no_provider); `left_out` says why, one per candidate."""

    def __init__(self, left_out: Sequence[LeftOut]) -> None:
        names = ", ".join(f"{item.provider} ({item.reason})" for item in left_out)
        super().__init__(f"no provider can take this job: {names}")
        self.message = str(self)
        self.left_out = tuple(left_out)


def facts(
    provider: str,
    *,
    configured: bool,
    capabilities: Capabilities,
    prices: PriceTable,
    generation: GenerationRequest,
    latency_p50: float | None = None,
) -> Facts:
    """One candidate's facts for `generation`, from its adapter's capabilities and price table."""
    try:
        request.check(generation, capabilities, provider)
    except RequestError as exc:
        unsupported: RequestError | None = exc
    else:
        unsupported = None
    price = pricing.price_usd(prices, generation.to_json())
    return Facts(provider, configured, unsupported, price, latency_p50)


def auto_candidates(known: Sequence[Facts]) -> tuple[str, ...]:
    """`"provider": "auto"`: every configured provider, the simulator only when no other is."""
    real = tuple(item.provider for item in known if item.configured and item.provider != SIMULATOR)
    if real:
        return real
    return tuple(item.provider for item in known if item.configured and item.provider == SIMULATOR)


def choose(
    candidates: Sequence[str],
    known: Mapping[str, Facts],
    *,
    max_price_usd: float | None = None,
    order: Order = Order(),
) -> Route:
    """The candidates that can take this request, in the order to try them, and those left out and why.

    Each candidate is left out for the first reason that applies (Reason's order); ties in the
    ordering keep the given order (sorting is stable).
    """
    kept: list[Facts] = []
    left_out: list[LeftOut] = []
    for name in candidates:
        item = known[name]
        out = _left_out(item, max_price_usd)
        if out is None:
            kept.append(item)
        else:
            left_out.append(out)
    return Route(tuple(item.provider for item in _ordered(kept, order)), tuple(left_out))


def _left_out(item: Facts, max_price_usd: float | None) -> LeftOut | None:
    name = item.provider
    if not item.configured:
        why = "is off" if name == SIMULATOR else f"has no API key: set JOBHOOK_{name.upper()}_API_KEY"
        return LeftOut(name, Reason.NOT_CONFIGURED, f"{name} {why}")
    if item.unsupported is not None:
        return LeftOut(name, Reason.UNSUPPORTED, item.unsupported.message, item.unsupported.field)
    if item.circuit_open:
        return LeftOut(name, Reason.CIRCUIT_OPEN, f"{name} failed too often lately; its circuit is open")
    refusal = item.over_budget
    if refusal is not None:
        # A price jobhook cannot tell cannot be held under a cap: left out for that, not for a spent cap.
        why = Reason.UNKNOWN_PRICE if refusal.why is budget.Why.UNKNOWN_PRICE else Reason.OVER_BUDGET
        return LeftOut(name, why, refusal.message, refusal=refusal)
    if max_price_usd is None:
        return None
    if item.price_usd is None:
        return LeftOut(
            name,
            Reason.UNKNOWN_PRICE,
            f"{name}'s price for this request is unknown, so it cannot be held under max_price_usd "
            f"{max_price_usd:g}: set JOBHOOK_{name.upper()}_PRICES",
        )
    if item.price_usd > max_price_usd + PRICE_TOLERANCE:
        return LeftOut(
            name,
            Reason.OVER_MAX_PRICE,
            f"{name} charges ${item.price_usd:g} for this request, over max_price_usd {max_price_usd:g}",
        )
    return None


def _ordered(kept: list[Facts], order: Order) -> list[Facts]:
    if order.by is OrderBy.PRICE:
        return sorted(kept, key=lambda item: (item.price_usd is None, item.price_usd or 0.0))
    if order.by is OrderBy.LATENCY:
        return sorted(kept, key=lambda item: (item.latency_p50 is None, item.latency_p50 or 0.0))
    if order.by is OrderBy.FIXED:
        rank = {name: index for index, name in enumerate(order.fixed)}
        return sorted(kept, key=lambda item: rank.get(item.provider, len(rank)))
    return list(kept)
