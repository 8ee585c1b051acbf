"""The one check of list paging parameters, shared by every list RPC (uploads, jobs,
training jobs). Cursors are decoded by `trainyard.runtime.untrusted.decode_cursor`."""

from __future__ import annotations

from trainyard.runtime.errors import FieldViolation, InvalidArgument


def page_size_violations(
    value: int, *, maximum: int | None = None, field: str = "page_size"
) -> list[FieldViolation]:
    """The violation of a page size that is not valid (a negative one), for request validators."""
    if value >= 0:
        return []
    limit = f"between 0 and {maximum}" if maximum else "0 or more"
    return [FieldViolation(field, f"must be {limit}, got {value}")]


def checked_page_size(value: int, *, maximum: int | None = None, field: str = "page_size") -> int:
    """`value` when it is a valid page size (0 = the list's default), capped at `maximum`;
    a negative one is INVALID_ARGUMENT naming the field, never "everything"."""
    violations = page_size_violations(value, maximum=maximum, field=field)
    if violations:
        raise InvalidArgument(
            f"{field} must not be negative, got {value}",
            reason="INVALID_PAGE_SIZE",
            violations=violations,
        )
    return min(value, maximum) if maximum else value
