"""Daily budgets (SPEC §9), as tables: may an attempt be sent within the caps, which scope refuses and
why, when the day resets, and what an attempt's end does to the day's figures."""

from __future__ import annotations

import pytest

from service.domain import budget
from service.domain.budget import TOTAL, Caps, Figures, Held, Move, Refusal, Why
from service.domain.pricing import PriceTable

NOON = 1_780_574_400.0  # 2026-06-04T12:00:00Z
MIDNIGHT = 1_780_617_600.0  # 2026-06-05T00:00:00Z
USD = budget.MICROS_PER_USD


def usd(amount: float) -> int:
    return budget.micros(amount)


BOTH = Caps.of(total=usd(1.00), providers={"aivideoapi": usd(0.30)})


@pytest.mark.parametrize(
    ("caps", "figures", "provider", "price", "refused"),
    [
        # No cap: anything goes, an unknown price too.
        (Caps(), {}, "aivideoapi", usd(0.14), None),
        (Caps(), {TOTAL: Figures(spent=usd(1e6))}, "segmind", None, None),
        # The total: a price that fits what is left, to the micro-dollar, goes; one micro-dollar more does not.
        (Caps.of(total=usd(1.00)), {TOTAL: Figures(usd(0.10), usd(0.76))}, "apiframe", usd(0.14), None),
        (
            Caps.of(total=usd(1.00)),
            {TOTAL: Figures(usd(0.10), usd(0.76) + 1)},
            "apiframe",
            usd(0.14),
            (TOTAL, Why.OVER_CAP),
        ),
        # Reserved counts as much as spent: what is in flight may be charged.
        (Caps.of(total=usd(1.00)), {TOTAL: Figures(reserved=usd(0.90))}, "apiframe", usd(0.14), (TOTAL, Why.OVER_CAP)),
        # A provider's own cap applies to it alone.
        (BOTH, {"aivideoapi": Figures(spent=usd(0.28))}, "aivideoapi", usd(0.14), ("aivideoapi", Why.OVER_CAP)),
        (BOTH, {"aivideoapi": Figures(spent=usd(0.28))}, "apiframe", usd(0.14), None),
        # Both refuse: the total is named (nothing else can help).
        (
            BOTH,
            {TOTAL: Figures(spent=usd(0.95)), "aivideoapi": Figures(spent=usd(0.28))},
            "aivideoapi",
            usd(0.14),
            (TOTAL, Why.OVER_CAP),
        ),
        # A cap of 0 sends nothing that costs; a free attempt still fits.
        (Caps.of(total=0), {}, "apiframe", usd(0.06), (TOTAL, Why.OVER_CAP)),
        (Caps.of(total=0), {}, "simulator", 0, None),
        (Caps.of(total=usd(1)), {TOTAL: Figures(spent=usd(3))}, "simulator", 0, None),  # a cap lowered since
        # An unknown price cannot be held under a cap: refused by the first cap that applies to it.
        (Caps.of(total=usd(5)), {}, "segmind", None, (TOTAL, Why.UNKNOWN_PRICE)),
        (Caps.of(providers={"segmind": usd(5)}), {}, "segmind", None, ("segmind", Why.UNKNOWN_PRICE)),
        (Caps.of(providers={"apiframe": usd(5)}), {}, "segmind", None, None),  # no cap applies to segmind
    ],
)
def test_check(
    caps: Caps, figures: dict[str, Figures], provider: str, price: int | None, refused: tuple[str, Why] | None
) -> None:
    refusal = budget.check(caps, figures, provider, price, NOON)
    assert (None if refusal is None else (refusal.scope, refusal.why)) == refused
    if refusal is not None:
        assert refusal.reset_at == MIDNIGHT
        assert refusal.provider == provider


@pytest.mark.parametrize(
    ("now", "day", "reset", "retry_after"),
    [
        (NOON, "2026-06-04", MIDNIGHT, 43_200),
        (MIDNIGHT - 0.2, "2026-06-04", MIDNIGHT, 1),  # a fraction of a second left: Retry-After 1
        (MIDNIGHT, "2026-06-05", MIDNIGHT + 86_400, 86_400),  # midnight itself is the new day
        (MIDNIGHT + 1, "2026-06-05", MIDNIGHT + 86_400, 86_399),
    ],
)
def test_days_are_utc_and_reset_at_midnight(now: float, day: str, reset: float, retry_after: int) -> None:
    assert budget.day_of(now) == day
    assert budget.reset_at(now) == reset
    assert budget.retry_after(now) == retry_after


@pytest.mark.parametrize(
    ("held", "state", "move"),
    [
        # Reserved when sent: kept when the provider may charge, released when it cannot have.
        (Held.RESERVED, "accepted", Move(-500, 500, Held.KEPT)),
        (Held.RESERVED, "uncertain", Move(-500, 500, Held.KEPT)),
        (Held.RESERVED, "completed", Move(-500, 500, Held.KEPT)),
        (Held.RESERVED, "not_sent", Move(-500, 0, None)),
        (Held.RESERVED, "rejected", Move(-500, 0, None)),
        (Held.RESERVED, "failed", Move(-500, 0, None)),
        # Kept, then the task failed: resellers refund failed tasks.
        (Held.KEPT, "failed", Move(0, -500, None)),
        # Kept and then completed: counted once.
        (Held.KEPT, "completed", None),
        (Held.KEPT, "accepted", None),
        # Nothing held (a free or unpriced attempt, or one already released): nothing to do.
        (None, "completed", None),
        (None, "failed", None),
    ],
)
def test_settle(held: Held | None, state: str, move: Move | None) -> None:
    assert budget.settle(held, 500, state) == move


def test_every_attempt_state_is_either_kept_or_released() -> None:
    from service.domain.attempt import AttemptState

    assert {str(state) for state in AttemptState} == budget.KEEP_STATES | budget.RELEASE_STATES
    assert not budget.KEEP_STATES & budget.RELEASE_STATES


def test_the_refusal_says_which_cap_how_much_and_when_it_resets() -> None:
    refusal = budget.check(Caps.of(total=usd(1)), {TOTAL: Figures(usd(0.25), usd(0.70))}, "apiframe", usd(0.06), NOON)
    assert refusal is not None
    assert refusal.message == (
        "the daily budget of all providers (JOBHOOK_BUDGET_USD_PER_DAY=1) cannot take this job's $0.06 at "
        "apiframe: $0.95 of $1.00 is spent or reserved today (UTC); it resets at 2026-06-05T00:00:00.000Z"
    )
    assert refusal.detail() == {
        "scope": "total",
        "cap": 1.0,
        "spent": 0.7,
        "reserved": 0.25,
        "reset_at": "2026-06-05T00:00:00.000Z",
    }
    own = budget.check(Caps.of(providers={"apiframe": usd(0.1)}), {}, "apiframe", usd(0.14), NOON)
    assert own is not None and own.message.startswith(
        "apiframe's daily budget (JOBHOOK_APIFRAME_BUDGET_USD_PER_DAY=0.1) cannot take this job's $0.14"
    )
    unknown = budget.check(Caps.of(total=usd(2)), {}, "segmind", None, NOON)
    assert unknown is not None
    assert unknown.message == (
        "segmind's price for this request is unknown, so it cannot be held under the daily budget "
        "(JOBHOOK_BUDGET_USD_PER_DAY=2): set JOBHOOK_SEGMIND_PRICES"
    )


def test_a_429_names_the_total_when_it_refused_any_candidate() -> None:
    def refusal(scope: str) -> Refusal:
        return Refusal(scope, "x", Why.OVER_CAP, 1, Figures(), 2, MIDNIGHT)

    assert budget.first_refusal([refusal("apiframe"), refusal(TOTAL)]) == refusal(TOTAL)
    assert budget.first_refusal([refusal("apiframe"), refusal("aivideoapi")]) == refusal("apiframe")
    assert budget.first_refusal([]) is None


@pytest.mark.parametrize(
    ("text", "cap"),
    [("1", USD), ("0.50", USD // 2), (" 25 ", 25 * USD), ("$3", 3 * USD), ("0", 0), ("0.000001", 1)],
)
def test_parse_cap(text: str, cap: int) -> None:
    assert budget.parse_cap(text) == cap


@pytest.mark.parametrize("text", ["", "ten", "-1", "nan", "inf", "1e9", "1,5"])
def test_a_wrong_cap_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected US dollars per UTC day"):
        budget.parse_cap(text)


@pytest.mark.parametrize(
    ("request_", "price"),
    [
        ({"prompt": "x"}, usd(0.14)),  # the default tier
        ({"prompt": "x", "rendering_speed": "TURBO"}, usd(0.08)),
        ({"prompt": "x", "rendering_speed": "TURBO", "num_images": 3}, usd(0.24)),
    ],
)
def test_an_attempt_reserves_the_price_of_the_images_it_asks_for(request_: dict[str, object], price: int) -> None:
    table = PriceTable.of({"TURBO": 0.08, "BALANCED": 0.14, "QUALITY": 0.22})
    assert budget.price_of(table, request_) == price
    assert budget.price_of(PriceTable(), request_) is None
    assert budget.price_of(None, request_) is None


def test_report() -> None:
    caps = Caps.of(total=usd(1), providers={"segmind": usd(2)})
    figures = {TOTAL: Figures(usd(0.14), usd(0.86), exhausted_at=NOON), "aivideoapi": Figures(usd(0.14), usd(0.86))}
    shown = budget.report(caps, figures, {"aivideoapi": True, "segmind": False}, NOON)
    assert shown["day"] == "2026-06-04"
    assert shown["reset_at"] == "2026-06-05T00:00:00.000Z"
    assert shown["retry_after"] == 43_200
    assert shown["total"] == {
        "scope": "total",
        "cap_usd": 1.0,
        "reserved_usd": 0.14,
        "spent_usd": 0.86,
        "remaining_usd": 0.0,
        "exhausted_at": "2026-06-04T12:00:00.000Z",
    }
    aivideoapi, segmind = shown["providers"]
    assert (aivideoapi["scope"], aivideoapi["cap_usd"], aivideoapi["spent_usd"]) == ("aivideoapi", None, 0.86)
    assert aivideoapi["remaining_usd"] is None and "note" not in aivideoapi
    assert (segmind["cap_usd"], segmind["remaining_usd"], segmind["priced"]) == (2.0, 2.0, False)
    assert segmind["note"] == "no price known: left out while a cap applies (set JOBHOOK_SEGMIND_PRICES)"
    uncapped = budget.report(Caps(), {}, {"segmind": False}, NOON)["providers"][0]
    assert uncapped["note"] == "no price known: what it is sent is not counted (set JOBHOOK_SEGMIND_PRICES)"
