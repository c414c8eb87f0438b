"""Prices: integer cents inside, a decimal string such as "12.34" on the wire (never a float)."""

from __future__ import annotations

import re

_PRICE = re.compile(r"(?P<units>[0-9]{1,7})(?:\.(?P<cents>[0-9]{1,2}))?")


def format_cents(cents: int) -> str:
    units, rest = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}{units}.{rest:02d}"


def parse_price(text: str) -> int | None:
    """Cents for "12", "12.3" or "12.34" (up to 9999999.99); None for anything else."""
    match = _PRICE.fullmatch(text)
    if match is None:
        return None
    return int(match["units"]) * 100 + int((match["cents"] or "0").ljust(2, "0"))
