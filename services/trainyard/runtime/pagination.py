"""List paging, shared by every list RPC (uploads, models, jobs, training jobs): the one check
of page sizes and the one page token of a newest-first keyset list."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from trainyard.runtime.clock import as_utc
from trainyard.runtime.errors import FieldViolation, InvalidArgument
from trainyard.runtime.untrusted import decode_json_cursor


def encode_page_token(created_at: datetime, last_id: str) -> str:
    """The token of the page after the row (`created_at`, `last_id`) of a list ordered by
    (created_at, id) descending: unpadded base64url of {"c": ISO time (UTC), "i": id}."""
    raw = json.dumps({"c": as_utc(created_at).isoformat(), "i": last_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, *, field: str = "page_token") -> tuple[datetime, str]:
    """(created_at, last_id) of a token `encode_page_token` issued; anything else is
    INVALID_ARGUMENT naming `field`, never a crash (see runtime.untrusted)."""
    data = decode_json_cursor(token, field=field)
    try:
        created = datetime.fromisoformat(data["c"])
        return as_utc(created), str(data["i"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(
            f"invalid {field}: pass the next_page_token of a previous response unchanged",
            violations=[FieldViolation(field, "is not a token this service issued")],
        ) from exc


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


def encode_offset_token(offset: int) -> str:
    """The token of the page starting at `offset` of a list in a fixed order (a trained
    model's documents): unpadded base64url of {"o": offset}."""
    raw = json.dumps({"o": offset}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_offset_token(token: str, *, field: str = "page_token") -> int:
    """The offset of a token `encode_offset_token` issued ("" is 0); anything else is
    INVALID_ARGUMENT naming `field`."""
    if not token:
        return 0
    data = decode_json_cursor(token, field=field)
    offset = data.get("o") if isinstance(data, dict) else None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidArgument(
            f"invalid {field}: pass the next_page_token of a previous response unchanged",
            violations=[FieldViolation(field, "is not a token this service issued")],
        )
    return offset
