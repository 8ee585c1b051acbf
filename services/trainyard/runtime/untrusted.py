"""Decoding of untrusted input: JSON bodies, base64url cursors, bearer-token segments, Structs.

Every decoder here has a bound on size and nesting, and turns every way the input can be broken
(bad syntax, bad encoding, too deep, too big, RecursionError) into one DomainError naming the
field, never a crash: a caller can't get a 5xx or an exception class name out of these. The
limits are stated once here and rendered into the Envoy Lua filter, so the edge and the services
agree.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, NoReturn
from urllib.parse import parse_qsl

from google.protobuf import json_format, struct_pb2

from trainyard.runtime.errors import DomainError, FieldViolation, InvalidArgument, Unauthenticated

#: Deepest JSON nesting accepted in any free-form body or value (an object or array at the top
#: is level 1). Protobuf's decoder stops at 100 message levels and a JSON level inside a
#: google.protobuf.Struct costs up to three of them, so anything deeper than 32 could not reach a
#: service anyway; Envoy's Lua filter refuses it first with the same message.
MAX_JSON_DEPTH = 32
#: Largest JSON document `decode_json` parses unless the caller says otherwise.
MAX_JSON_BYTES = 64 * 1024
#: Longest page token (cursor) accepted; the services issue tokens of well under 200 characters.
MAX_CURSOR_CHARS = 1024

_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]', re.DOTALL)

ErrorType = type[DomainError]


def too_deep_message(field: str, max_depth: int = MAX_JSON_DEPTH) -> str:
    return f"{field}: JSON nested deeper than {max_depth} levels; flatten the document"


def json_depth(data: bytes) -> int:
    """How deeply the JSON text `data` nests objects and arrays (strings are skipped). Works on
    text that is not valid JSON too: it only counts brackets outside strings."""
    depth = deepest = 0
    for match in _STRUCTURE.finditer(data):
        token = match.group()
        if token in (b"{", b"["):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"}", b"]"):
            depth -= 1
    return deepest


def decode_json(
    data: bytes | str,
    *,
    field: str,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    error: ErrorType = InvalidArgument,
) -> Any:
    """The value of the JSON text `data`; any problem raises `error` naming `field`."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        _fail(
            error,
            field,
            f"is larger than {max_bytes} bytes",
            f"{field}: larger than {max_bytes} bytes",
        )
    if json_depth(raw) > max_depth:
        _fail(
            error,
            field,
            f"nests deeper than {max_depth} levels",
            too_deep_message(field, max_depth),
        )
    try:
        return json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        _fail(
            error,
            field,
            "is not valid JSON",
            f"{field}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
        )
    except UnicodeError:
        _fail(error, field, "is not UTF-8", f"{field}: not valid UTF-8 text")
    except (ValueError, RecursionError):
        _fail(error, field, "is not valid JSON", f"{field}: not valid JSON")


def decode_base64url(
    text: str,
    *,
    field: str,
    max_chars: int = MAX_CURSOR_CHARS,
    error: ErrorType = InvalidArgument,
    message: str | None = None,
    urlsafe: bool = True,
) -> bytes:
    """The bytes of unpadded or padded base64url `text` (standard base64 with `urlsafe=False`);
    anything else raises `error`."""
    if len(text) > max_chars:
        _fail(error, field, f"is longer than {max_chars} characters", message)
    try:
        padded = text.encode("ascii") + b"=" * (-len(text) % 4)
        if urlsafe:
            padded = padded.replace(b"-", b"+").replace(b"_", b"/")
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError, UnicodeError):
        _fail(error, field, "is not base64url" if urlsafe else "is not base64", message)


def decode_cursor(token: str, *, field: str = "page_token") -> bytes:
    """The raw bytes of a page token this suite issued; a token that is not one (garbage, too
    long, not base64url) is INVALID_ARGUMENT naming the field."""
    return decode_base64url(token, field=field, message=_cursor_message(field))


def decode_json_cursor(token: str, *, field: str = "page_token") -> Any:
    """A page token that carries JSON (base64url of a small JSON document)."""
    raw = decode_cursor(token, field=field)
    try:
        return decode_json(raw, field=field, max_bytes=MAX_CURSOR_CHARS, max_depth=2)
    except InvalidArgument as exc:
        raise InvalidArgument(
            _cursor_message(field),
            violations=[FieldViolation(field, "is not a token this service issued")],
        ) from exc


def _cursor_message(field: str) -> str:
    return f"invalid {field}: pass the next_page_token of a previous response unchanged"


def check_jwt_shape(token: str, *, max_chars: int = 16 * 1024) -> None:
    """Check that a bearer token is three base64url segments whose header and claims are JSON
    objects nested at most MAX_JSON_DEPTH deep, so the JWT library never meets input that makes
    it crash; anything else is UNAUTHENTICATED."""
    message = "malformed bearer token: expected a JWT (header.claims.signature)"
    if len(token) > max_chars:
        raise Unauthenticated(f"malformed bearer token: longer than {max_chars} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthenticated(message)
    for name, part in zip(("header", "claims"), parts[:2], strict=True):
        raw = decode_base64url(
            part, field=name, max_chars=max_chars, error=Unauthenticated, message=message
        )
        value = decode_json(
            raw, field=f"bearer token {name}", max_bytes=max_chars, error=Unauthenticated
        )
        if not isinstance(value, dict):
            raise Unauthenticated(f"malformed bearer token: the {name} is not a JSON object")


def struct_to_dict(
    value: struct_pb2.Struct, *, field: str, max_depth: int = MAX_JSON_DEPTH, base_depth: int = 0
) -> dict[str, Any]:
    """A Struct as a plain dict, refused (INVALID_ARGUMENT naming `field`) when it nests deeper
    than `max_depth` JSON levels counted from the request body (`base_depth` levels above it)."""
    deepest = _struct_depth(value)
    if base_depth + deepest > max_depth:
        raise InvalidArgument(
            too_deep_message(field, max_depth),
            reason="JSON_TOO_DEEP",
            violations=[FieldViolation(field, f"nests deeper than {max_depth} levels")],
        )
    out: dict[str, Any] = json_format.MessageToDict(value)
    return out


def _struct_depth(root: struct_pb2.Struct) -> int:
    """JSON nesting of a Struct (a flat object is 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, struct_pb2.Struct):
            stack.extend((v, depth) for v in node.fields.values())
        elif isinstance(node, struct_pb2.ListValue):
            stack.extend((v, depth) for v in node.values)
        else:  # a Value
            kind = node.WhichOneof("kind")
            if kind == "struct_value":
                stack.append((node.struct_value, depth + 1))
            elif kind == "list_value":
                stack.append((node.list_value, depth + 1))
    return deepest


def _fail(error: ErrorType, field: str, description: str, message: str | None) -> NoReturn:
    text = message or f"{field} {description}"
    raise error(text, violations=[FieldViolation(field, description)])


def decode_form(
    data: bytes, *, field: str, max_bytes: int = MAX_JSON_BYTES, max_fields: int = 100
) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as a dict (the first value of each name)."""
    if len(data) > max_bytes:
        _fail(InvalidArgument, field, f"is larger than {max_bytes} bytes", None)
    try:
        pairs = parse_qsl(data.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields)
    except UnicodeError:
        _fail(InvalidArgument, field, "is not UTF-8", f"{field}: not valid UTF-8 text")
    except ValueError:
        _fail(InvalidArgument, field, f"has more than {max_fields} fields", None)
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name, value)
    return out


def decode_json_object(
    data: bytes | str, *, field: str, max_bytes: int = MAX_JSON_BYTES
) -> dict[str, Any]:
    """A JSON object (never an array or scalar) from `data`, as `decode_json` decodes it."""
    value = decode_json(data, field=field, max_bytes=max_bytes)
    if not isinstance(value, dict):
        _fail(InvalidArgument, field, "must be a JSON object", f"{field}: must be a JSON object")
    return value
