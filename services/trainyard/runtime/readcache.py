"""A small cache of read results for a service that is the only writer of its tables."""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class ReadCache:
    """Results of recent list reads, so that many clients polling the same list cost one query
    per change rather than one per request.

    It relies on its owner being the only writer of what it caches (a service owns its tables
    and runs as one replica) and on every write of the owner calling `invalidate` once its
    transaction has ended (committed or not): a read after a write then always sees it. A read
    stores its result with the generation it started at, and nothing is stored if a write
    ended meanwhile. An entry also expires after `max_age` seconds, which bounds how stale a
    result can be after a write the owner did not make (an old pod still draining during a
    rolling update). Values are shared between callers: treat them as read-only."""

    def __init__(
        self,
        max_entries: int = 1024,
        max_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._clock = clock
        self.generation = 0
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, generation: int, value: Any) -> None:
        """Keep `value`, read while the cache was at `generation`, unless a write has ended
        since (then it may be stale)."""
        if generation != self.generation or self.max_entries <= 0:
            return
        self._entries[key] = (self._clock() + self.max_age, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self) -> None:
        self.generation += 1
        self._entries.clear()

    @contextlib.asynccontextmanager
    async def writing(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> AsyncIterator[AsyncSession]:
        """A transaction of the owner that changes what is cached: once it has ended
        (committed or not), cached reads are stale and are dropped."""
        try:
            async with sessions.begin() as session:
                yield session
        finally:
            self.invalidate()
