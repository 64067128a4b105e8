"""Prices in cents."""


def apply_discount(cents: int, percent: int) -> int:
    """The price after a discount of ``percent``, rounded half up to a whole cent."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be 0-100, not {percent}")
    return cents * (100 - percent) // 100
