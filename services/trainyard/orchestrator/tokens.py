"""POST /connect/token: OAuth2 client credentials -> a user bearer token."""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping

from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.errors import FieldViolation, InvalidArgument, Unauthenticated
from trainyard.runtime.untrusted import decode_base64url, decode_form, decode_json_object

#: Largest POST /connect/token body the service reads (Envoy refuses larger ones first).
MAX_TOKEN_REQUEST_BYTES = 16 * 1024


def parse_token_request(
    content_type: str, body: bytes, authorization: str | None
) -> tuple[str, str, str]:
    """(grant_type, client_id, client_secret) from a form or JSON body and optional Basic auth."""
    fields: dict[str, str]
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json":
        raw = decode_json_object(body or b"{}", field="body", max_bytes=MAX_TOKEN_REQUEST_BYTES)
        fields = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    elif media in ("application/x-www-form-urlencoded", ""):
        fields = decode_form(body, field="body", max_bytes=MAX_TOKEN_REQUEST_BYTES)
    else:
        raise InvalidArgument(
            f"unsupported content type {content_type[:100]!r}: send "
            "application/x-www-form-urlencoded",
            reason="UNSUPPORTED_MEDIA_TYPE",
        )
    if authorization and authorization.lower().startswith("basic "):
        message = "malformed HTTP Basic client credentials"
        raw_basic = decode_base64url(
            authorization[6:].strip(),
            field="authorization",
            max_chars=4096,
            error=Unauthenticated,
            message=message,
            urlsafe=False,
        )
        try:
            decoded = raw_basic.decode()
        except UnicodeDecodeError as exc:
            raise Unauthenticated(message) from exc
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
            f"unsupported grant_type {fields['grant_type'][:100]!r}: only client_credentials",
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
