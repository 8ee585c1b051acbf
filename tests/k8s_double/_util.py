"""Small helpers shared by the Kubernetes API server double."""

from __future__ import annotations

import copy
import re
import secrets
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

JSON = dict[str, Any]

# The alphabet apimachinery's utilrand uses for generated names: no vowels and
# no easily confused characters, so generated suffixes never spell words.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# generateName keeps at most this many characters of the prefix (apiserver's
# maxGeneratedNameLength = 63 - 5).
MAX_GENERATED_PREFIX = 58

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """Format like metav1.Time: second precision, 'Z' suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano(moment: datetime) -> str:
    """Format like the kubelet's log timestamps (RFC3339Nano)."""
    base = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{moment.microsecond:06d}000Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC3339 timestamp as sent by clients (sinceTime etc.)."""
    cleaned = text.strip().replace("Z", "+00:00")
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", cleaned)
    if match and match.group(2):
        # Python accepts at most microseconds.
        cleaned = match.group(1) + match.group(2)[:7] + match.group(3)
    moment = datetime.fromisoformat(cleaned)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_NAME_ALPHABET) for _ in range(length))


def generate_name(prefix: str) -> str:
    return prefix[:MAX_GENERATED_PREFIX] + random_suffix()


def new_uid() -> str:
    return str(uuid.uuid4())


def container_id() -> str:
    return "containerd://" + secrets.token_hex(32)


def deep_copy(obj: JSON) -> JSON:
    return copy.deepcopy(obj)


_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a resource.Quantity string ('512Mi', '1G', '1e9', '250m')."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"quantities must match the regular expression: {value!r}")
    number, suffix = match.groups()
    try:
        base = Decimal(number)
    except InvalidOperation as exc:
        raise ValueError(f"invalid quantity {value!r}") from exc
    if suffix in _BINARY_SUFFIXES:
        return base * _BINARY_SUFFIXES[suffix]
    if suffix and suffix[0] in "eE":
        return base * (Decimal(10) ** int(suffix[1:]))
    return base * _DECIMAL_SUFFIXES[suffix]


def normalize_image(image: str) -> str:
    """Fully qualify an image reference the way containerd reports it."""
    name, digest = [*image.split("@", 1), ""][:2]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and not digest:
        name = name + ":latest"
    first = name.split("/", 1)[0]
    if "/" not in name or ("." not in first and ":" not in first and first != "localhost"):
        if "/" not in name:
            name = "library/" + name
        name = "docker.io/" + name
    return name + ("@" + digest if digest else "")
