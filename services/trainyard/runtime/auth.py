"""Bearer-token identity: HS256 tokens from a shared key, optionally OIDC tokens via JWKS.

Three kinds of principal: users (`typ=user`), workloads (`typ=job`, naming the model or job they
may report on) and Trainyard services calling each other (`typ=service`).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt

from trainyard.runtime.errors import PermissionDenied, Unauthenticated
from trainyard.runtime.untrusted import check_jwt_shape

Kind = Literal["user", "job", "service"]


@dataclass(frozen=True)
class Identity:
    """Who is calling: a user, a workload (job token) or a Trainyard service."""

    subject: str
    kind: Kind
    model_id: str | None = None
    job: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


_current: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "trainyard_identity", default=None
)


def current_identity() -> Identity:
    """The caller of the RPC being served; raises UNAUTHENTICATED outside an authenticated RPC."""
    ident = _current.get()
    if ident is None:
        raise Unauthenticated("this request needs `Authorization: Bearer <token>`")
    return ident


def current_user() -> str:
    """The calling user's name; job and service tokens are refused."""
    ident = current_identity()
    if ident.kind != "user":
        raise PermissionDenied("this route needs a user token")
    return ident.subject


def bind_identity(ident: Identity | None) -> contextvars.Token[Identity | None]:
    return _current.set(ident)


def reset_identity(token: contextvars.Token[Identity | None]) -> None:
    _current.reset(token)


class VerifiedTokens:
    """A bounded LRU of tokens that passed verification, keyed by the token string: a client
    polling with the same bearer token pays for the signature check once per `max_age`, not per
    request. An entry is dropped at the token's `exp` (so an expired token is refused exactly
    when it would be without the cache) and after `max_age` seconds at the latest (so a change
    of keys or of the verification rules reaches cached tokens within that time). Only successes
    are kept: a bad token is verified, and refused, every time."""

    def __init__(
        self,
        max_entries: int = 4096,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Identity]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> Identity | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if self._clock() >= entry[0]:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry[1]

    def put(self, token: str, ident: Identity) -> None:
        now = self._clock()
        expires = now + self.max_age
        exp = ident.claims.get("exp")
        if isinstance(exp, (int, float)):
            expires = min(expires, float(exp))
        if expires <= now or self.max_entries <= 0:
            return
        with self._lock:
            self._entries[token] = (expires, ident)
            self._entries.move_to_end(token)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class TokenAuthority:
    """Mints and verifies Trainyard tokens."""

    def __init__(
        self,
        secret: str,
        *,
        issuer: str = "trainyard",
        audience: str | None = None,
        jwks_url: str | None = None,
        default_ttl: int = 3600,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the auth secret must be at least 16 characters")
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._default_ttl = default_ttl
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None
        #: Tokens verified recently (see VerifiedTokens); used by `verify_async`.
        self.verified = VerifiedTokens()

    @property
    def default_ttl(self) -> int:
        return self._default_ttl

    def _mint(self, claims: dict[str, Any], ttl: int | None) -> str:
        now = int(time.time())
        body = {
            "iss": self._issuer,
            "iat": now,
            "nbf": now,
            "exp": now + (ttl or self._default_ttl),
            "jti": uuid.uuid4().hex,
            **claims,
        }
        if self._audience:
            body["aud"] = self._audience
        return jwt.encode(body, self._secret, algorithm="HS256")

    def mint_user(self, subject: str, ttl: int | None = None) -> str:
        if not subject:
            raise ValueError("a user token needs a subject")
        return self._mint({"sub": subject, "typ": "user"}, ttl)

    def mint_job(
        self, owner: str, *, model_id: str | None = None, job: str | None = None, ttl: int = 86400
    ) -> str:
        return self._mint({"sub": owner, "typ": "job", "mid": model_id, "job": job}, ttl)

    def mint_service(self, service: str, ttl: int | None = None) -> str:
        return self._mint({"sub": f"service:{service}", "typ": "service"}, ttl)

    def verify(self, token: str) -> Identity:
        """Verify a token; any problem is UNAUTHENTICATED with a message saying what is wrong."""
        check_jwt_shape(token)  # bounded size and depth before the JWT library sees it
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, RecursionError) as exc:
            raise Unauthenticated("malformed bearer token: its header cannot be read") from exc
        alg = header.get("alg")
        options: Any = {"require": ["exp", "sub"]}
        try:
            if alg == "HS256":
                claims = jwt.decode(
                    token,
                    self._secret,
                    algorithms=["HS256"],
                    issuer=self._issuer,
                    audience=self._audience,
                    options=options,
                )
            elif self._jwks is not None and alg in ("RS256", "ES256", "PS256", "EdDSA"):
                key = self._jwks.get_signing_key_from_jwt(token)
                claims = jwt.decode(
                    token, key.key, algorithms=[alg], audience=self._audience, options=options
                )
                claims.setdefault("typ", "user")
                if claims["typ"] != "user":
                    raise Unauthenticated("OIDC tokens can only identify users")
            else:
                raise Unauthenticated(f"unsupported token algorithm {alg!r}")
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the bearer token has expired; get a new one") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid bearer token: {_plain(exc)}") from exc
        except (ValueError, RecursionError, TypeError) as exc:
            raise Unauthenticated("invalid bearer token: its claims cannot be read") from exc
        kind = claims.get("typ")
        if kind not in ("user", "job", "service"):
            raise Unauthenticated("invalid bearer token: unknown token type")
        return Identity(
            subject=str(claims["sub"]),
            kind=kind,
            model_id=claims.get("mid"),
            job=claims.get("job"),
            claims=claims,
        )

    async def verify_async(self, token: str) -> Identity:
        """`verify`, remembered: the interceptor's entry point. A token verified in the last
        minute (and not yet expired) is not verified again; the same Identity comes back."""
        ident = self.verified.get(token)
        if ident is not None:
            return ident
        if self._jwks is not None:
            ident = await asyncio.to_thread(self.verify, token)
        else:
            ident = self.verify(token)
        self.verified.put(token, ident)
        return ident


def _plain(exc: Exception) -> str:
    """PyJWT's message for a rejected token ("Signature verification failed", ...), without
    the library's exception names or decoder internals."""
    text = str(exc).split(":", 1)[0].strip() or "it was rejected"
    return text[:200]


def bearer_from_metadata(metadata: Mapping[str, str | bytes]) -> str | None:
    value = metadata.get("authorization")
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be `Bearer <token>`")
    return token.strip()
