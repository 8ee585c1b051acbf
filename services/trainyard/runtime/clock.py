"""UTC time, the one way: aware datetimes everywhere, whatever the database gives back.

SQLite has no time zone type, so `DateTime(timezone=True)` columns come back naive there (and
aware from PostgreSQL); every value this suite stores is UTC, so a naive one is UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """`value` as an aware datetime in UTC: a naive one (SQLite's, an SDK's) is taken to be
    UTC, an aware one is converted."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
