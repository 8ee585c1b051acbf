"""POST /connect/token: OAuth2 client credentials -> a user bearer token."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from urllib.parse import parse_qsl

from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.errors import FieldViolation, InvalidArgument, Unauthenticated


def parse_token_request(
    content_type: str, body: bytes, authorization: str | None
) -> tuple[str, str, str]:
    """(grant_type, client_id, client_secret) from a form or JSON body and optional Basic auth."""
    fields: dict[str, str]
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        if media == "application/json":
            raw = json.loads(body or b"{}")
            if not isinstance(raw, dict):
                raise ValueError("the JSON body must be an object")
            fields = {str(k): str(v) for k, v in raw.items()}
        elif media in ("application/x-www-form-urlencoded", ""):
            fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        else:
            raise InvalidArgument(
                f"unsupported content type {content_type!r}: send "
                "application/x-www-form-urlencoded",
                reason="UNSUPPORTED_MEDIA_TYPE",
            )
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"malformed token request body: {exc}") from exc
    if authorization and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthenticated("malformed HTTP Basic client credentials") from exc
        cid, _, secret = decoded.partition(":")
        fields.setdefault("client_id", cid)
        fields.setdefault("client_secret", secret)
    violations = [
        FieldViolation(name, "is required")
        for name in ("grant_type", "client_id", "client_secret")
        if not fields.get(name)
    ]
    if violations:
        raise InvalidArgument(
            "invalid token request: " + ", ".join(v.field for v in violations) + " required",
            violations=violations,
        )
    if fields["grant_type"] != "client_credentials":
        raise InvalidArgument(
            f"unsupported grant_type {fields['grant_type']!r}: only client_credentials",
            reason="UNSUPPORTED_GRANT_TYPE",
            violations=[FieldViolation("grant_type", "must be client_credentials")],
        )
    return fields["grant_type"], fields["client_id"], fields["client_secret"]


def issue_token(
    authority: TokenAuthority, clients: Mapping[str, str], client_id: str, client_secret: str
) -> tuple[str, int]:
    expected = clients.get(client_id)
    if expected is None or not hmac.compare_digest(expected, client_secret):
        raise Unauthenticated("unknown client_id or wrong client_secret", reason="INVALID_CLIENT")
    ttl = authority.default_ttl
    return authority.mint_user(client_id, ttl), ttl
