"""The time now, in UTC: what an App token's expiry is compared with."""

from __future__ import annotations

import datetime


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
