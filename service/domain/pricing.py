"""What one request costs at one provider (SPEC §8): a provider's price table, and the one rule.

Pure. A provider's table gives a price per image for each tier (`rendering_speed`); the request's tier
is its own `rendering_speed` or, when it sets none, the provider's default tier; the price is that
tier's, times the images asked. A tier the table does not price makes the whole price unknown (None):
jobhook never guesses what it will be charged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from service.domain.request import RENDERING_SPEEDS

# No image costs more than this: a larger number is a typo (cents for dollars), not a price.
MAX_PRICE_PER_IMAGE_USD = 100.0
# Prices are shown and summed in US dollars to 1/100 of a cent.
DIGITS = 4


@dataclasses.dataclass(frozen=True)
class PriceTable:
    """One provider's prices per image in USD, by tier. Empty: the provider publishes none."""

    per_image: Mapping[str, float] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    default_tier: str = "BALANCED"  # the tier the provider applies when the request names none
    overridden: bool = False  # set by JOBHOOK_<P>_PRICES rather than PROVIDERS.md

    @classmethod
    def of(
        cls, per_image: Mapping[str, float], default_tier: str = "BALANCED", *, overridden: bool = False
    ) -> PriceTable:
        return cls(MappingProxyType(dict(per_image)), default_tier, overridden)

    @classmethod
    def flat(cls, price: float, default_tier: str = "BALANCED") -> PriceTable:
        """One price for every tier (apiinone's 12 credits; the simulator's nothing)."""
        return cls.of(dict.fromkeys(RENDERING_SPEEDS, price), default_tier)

    def with_override(self, override: Mapping[str, float] | None) -> PriceTable:
        """This table with the tiers `override` names replaced (JOBHOOK_<P>_PRICES); None: as it is."""
        if override is None:
            return self
        return PriceTable.of({**self.per_image, **override}, self.default_tier, overridden=True)

    def to_json(self) -> dict[str, float]:
        """The prices in tier order, as shown by `jobhook providers` and GET /v1/providers."""
        return {tier: self.per_image[tier] for tier in RENDERING_SPEEDS if tier in self.per_image}


def price_usd(table: PriceTable, request: Mapping[str, Any], images: int | None = None) -> float | None:
    """What `request` (a job's stored request, or GenerationRequest.to_json()) costs, or None when unknown.

    `images`: how many images are paid for; by default the request's `num_images` (1 when unset).
    """
    tier = request.get("rendering_speed") or table.default_tier
    per_image = table.per_image.get(str(tier))
    if per_image is None:
        return None
    if images is None:
        asked = request.get("num_images")
        images = asked if isinstance(asked, int) and not isinstance(asked, bool) and asked >= 1 else 1
    return round(per_image * images, DIGITS)


class PriceSyntaxError(ValueError):
    """A JOBHOOK_<P>_PRICES value that is not a price list; the message says what is expected."""


def parse_prices(text: str) -> dict[str, float]:
    """`TURBO=0.03,BALANCED=0.06,QUALITY=0.10` (any of the tiers, any case) or `0.12` (every tier).

    Raises PriceSyntaxError naming what is wrong.
    """
    text = text.strip()
    expected = (
        f"expected TIER=USD pairs such as TURBO=0.03,BALANCED=0.06,QUALITY=0.10 (tiers: "
        f"{', '.join(RENDERING_SPEEDS)}), or one price for every tier such as 0.12"
    )
    if "=" not in text:
        if not _is_number(text):
            raise PriceSyntaxError(f"{expected}, got {text!r}")
        return dict.fromkeys(RENDERING_SPEEDS, _price(text, "the price"))
    prices: dict[str, float] = {}
    for part in text.split(","):
        tier, sep, raw = part.partition("=")
        tier = tier.strip().upper()
        if not sep or tier not in RENDERING_SPEEDS:
            raise PriceSyntaxError(f"{expected}, got {part.strip()!r}")
        if tier in prices:
            raise PriceSyntaxError(f"{tier} is priced twice")
        prices[tier] = _price(raw, tier)
    return prices


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _price(raw: str, what: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise PriceSyntaxError(
            f"{what} must be a number of US dollars per image such as 0.06, got {raw.strip()!r}"
        ) from None
    if not math.isfinite(value) or not 0 <= value <= MAX_PRICE_PER_IMAGE_USD:
        raise PriceSyntaxError(
            f"{what} must be from 0 to {MAX_PRICE_PER_IMAGE_USD:g} US dollars per image, got {raw.strip()!r}"
        )
    return value
