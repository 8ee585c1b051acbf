"""An in-memory, etcd-like object store with one global resourceVersion.

Every mutation bumps the cluster-wide resourceVersion (like etcd's revision),
stamps it into the object's metadata.resourceVersion and appends a watch event
to a bounded history, so watches can resume from any recent resourceVersion
and get 410 Expired for older ones.
"""

from __future__ import annotations

import bisect
import builtins
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from ._util import JSON, deep_copy

EventType = Literal["ADDED", "MODIFIED", "DELETED"]

# kube-apiserver resourceVersions are opaque strings; start well above zero so
# clients that wrongly treat "0" or small numbers specially get caught.
_INITIAL_RESOURCE_VERSION = 1000


@dataclass(frozen=True)
class WatchEvent:
    resource_version: int
    resource: str
    type: EventType
    object: JSON
    # The object before this change (None for ADDED), so watches with a
    # selector can turn "stopped matching" into DELETED like the watch cache.
    previous: JSON | None = None


class ExpiredError(Exception):
    """Raised when a watch asks for history older than what is retained."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class Store:
    def __init__(self, history_limit: int = 10_000) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._revision = _INITIAL_RESOURCE_VERSION
        self._objects: dict[str, dict[tuple[str, str], JSON]] = {}
        self._events: list[WatchEvent] = []
        self._event_revisions: list[int] = []
        self._history_limit = history_limit
        # The oldest resourceVersion a watch may still resume from.
        self._compacted = _INITIAL_RESOURCE_VERSION
        self.closed = False

    # -- revision bookkeeping ------------------------------------------------

    @property
    def revision(self) -> int:
        with self.lock:
            return self._revision

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self.lock:
            yield

    def _record(
        self, resource: str, type_: EventType, obj: JSON, previous: JSON | None = None
    ) -> None:
        event = WatchEvent(self._revision, resource, type_, deep_copy(obj), previous)
        self._events.append(event)
        self._event_revisions.append(self._revision)
        if len(self._events) > self._history_limit:
            drop = len(self._events) - self._history_limit
            self._compacted = self._events[drop - 1].resource_version
            del self._events[:drop]
            del self._event_revisions[:drop]
        self.changed.notify_all()

    def _bump(self, obj: JSON) -> None:
        self._revision += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._revision)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.changed.notify_all()

    def compact(self) -> None:
        """Forget the whole event history, as etcd compaction does: every watch at an older
        resourceVersion (open ones included, at their next wake-up) gets 410 Gone; a list
        returns a resourceVersion a new watch can start from."""
        with self.lock:
            self._revision += 1
            self._compacted = self._revision
            self._events.clear()
            self._event_revisions.clear()
            self.changed.notify_all()

    def poke(self) -> None:
        """Wake every waiter (used for time-based conditions)."""
        with self.lock:
            self.changed.notify_all()

    # -- CRUD ------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> JSON | None:
        with self.lock:
            obj = self._objects.get(resource, {}).get((namespace, name))
            return deep_copy(obj) if obj is not None else None

    def exists(self, resource: str, namespace: str, name: str) -> bool:
        with self.lock:
            return (namespace, name) in self._objects.get(resource, {})

    def create(self, resource: str, obj: JSON) -> JSON:
        """Insert a new object (the caller checked for name conflicts)."""
        with self.lock:
            meta = obj["metadata"]
            key = (meta["namespace"], meta["name"])
            stored = deep_copy(obj)
            self._bump(stored)
            self._objects.setdefault(resource, {})[key] = stored
            self._record(resource, "ADDED", stored)
            return deep_copy(stored)

    def update(
        self, resource: str, namespace: str, name: str, mutate: Callable[[JSON], None]
    ) -> JSON | None:
        """Apply mutate to a copy; store it (new resourceVersion) only if it changed."""
        with self.lock:
            current = self._objects.get(resource, {}).get((namespace, name))
            if current is None:
                return None
            candidate = deep_copy(current)
            mutate(candidate)
            if candidate == current:
                return deep_copy(current)
            self._bump(candidate)
            self._objects[resource][(namespace, name)] = candidate
            self._record(resource, "MODIFIED", candidate, current)
            return deep_copy(candidate)

    def delete(self, resource: str, namespace: str, name: str) -> JSON | None:
        with self.lock:
            current = self._objects.get(resource, {}).pop((namespace, name), None)
            if current is None:
                return None
            previous = deep_copy(current)
            self._bump(current)
            self._record(resource, "DELETED", current, previous)
            return deep_copy(current)

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        predicate: Callable[[JSON], bool] | None = None,
    ) -> tuple[builtins.list[JSON], int]:
        """Matching objects sorted by (namespace, name), and the list's resourceVersion."""
        with self.lock:
            items = [
                deep_copy(obj)
                for (ns, _name), obj in sorted(self._objects.get(resource, {}).items())
                if (namespace is None or ns == namespace) and (predicate is None or predicate(obj))
            ]
            return items, self._revision

    def live(self, resource: str) -> builtins.list[JSON]:
        """The stored objects themselves, sorted like `list`, for the double's own controllers:
        the caller holds `lock` while it uses them and never changes one except through
        `update`. A real API server's controllers read an informer cache, not a deep copy of
        every object on every change; copying all of them per pass made each pass O(N) in
        copies and a run of N jobs quadratic."""
        with self.lock:
            return [obj for _key, obj in sorted(self._objects.get(resource, {}).items())]

    # -- watch -----------------------------------------------------------------

    def events_after(self, resource: str, revision: int) -> builtins.list[WatchEvent]:
        """Events of resource newer than revision; ExpiredError if compacted away."""
        with self.lock:
            if revision < self._compacted:
                raise ExpiredError(revision, self._compacted)
            start = bisect.bisect_right(self._event_revisions, revision)
            return [event for event in self._events[start:] if event.resource == resource]
