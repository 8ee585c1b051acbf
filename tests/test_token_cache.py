"""The verified-token cache behind the interceptor (TokenAuthority.verify_async): a hit returns
the same Identity without verifying again; an expired token is refused on time; entries are
bounded in number and age; failures are never cached."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.harness import TEST_SECRET
from trainyard.runtime.auth import TokenAuthority, VerifiedTokens
from trainyard.runtime.errors import Unauthenticated


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_hit_returns_the_same_identity_without_verifying(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth = TokenAuthority(TEST_SECRET)
    token = auth.mint_user("alice")
    first = await auth.verify_async(token)
    calls: list[str] = []
    monkeypatch.setattr(auth, "verify", lambda t: calls.append(t))
    assert await auth.verify_async(token) is first
    assert calls == []
    assert (first.subject, first.kind) == ("alice", "user")


async def test_an_expired_token_is_refused_once_its_exp_has_passed() -> None:
    auth = TokenAuthority(TEST_SECRET)
    token = auth.mint_user("alice", ttl=1)
    ident = await auth.verify_async(token)
    exp = float(ident.claims["exp"])
    deadline = time.time() + 5
    refusal = ""
    while not refusal:  # poll: accepted strictly before exp, refused from exp on
        before = time.time()
        try:
            await auth.verify_async(token)
        except Unauthenticated as exc:
            refusal = exc.message
            assert time.time() >= exp
            continue
        assert before < exp, "a cached token was accepted after its exp"
        assert time.time() < deadline, "the token was never refused"
        await asyncio.sleep(0.01)
    assert "expired" in refusal
    with pytest.raises(Unauthenticated, match="expired"):
        await auth.verify_async(token)  # and stays refused


async def test_failures_are_not_cached() -> None:
    auth = TokenAuthority(TEST_SECRET)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await auth.verify_async("not-a-token")
        with pytest.raises(Unauthenticated, match="expired"):
            await auth.verify_async(auth.mint_user("alice", ttl=-10))
    assert len(auth.verified) == 0


async def test_entries_expire_at_exp_and_after_max_age() -> None:
    clock = Clock()
    cache = VerifiedTokens(max_entries=10, max_age=60, clock=clock)
    auth = TokenAuthority(TEST_SECRET)
    long_lived = auth.verify(auth.mint_user("alice", ttl=3600))
    short = auth.verify(auth.mint_user("bob", ttl=10))
    cache.put("long", long_lived)
    cache.put("short", short)
    assert cache.get("long") is long_lived and cache.get("short") is short
    clock.now = float(short.claims["exp"])
    assert cache.get("short") is None, "kept past exp"
    assert cache.get("long") is long_lived
    clock.now += 60
    assert cache.get("long") is None, "kept past max_age"


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    auth = TokenAuthority(TEST_SECRET)
    cache = VerifiedTokens(max_entries=2)
    idents = {name: auth.verify(auth.mint_user(name)) for name in ("a", "b", "c")}
    cache.put("a", idents["a"])
    cache.put("b", idents["b"])
    assert cache.get("a") is idents["a"]  # a is now the most recently used
    cache.put("c", idents["c"])
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") is idents["a"] and cache.get("c") is idents["c"]
