"""An in-process LRU cache of rendered maps and map GeoJSON.

Keys start with the published run's id, so publishing a new run makes every older entry
unreachable (they age out of the LRU); they also hold the user's jurisdiction and the
request's parameters, so two users share an entry only when they would get the same answer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

from flask import current_app

T = TypeVar("T")

#: Entries kept per process (a rendered county map is about 1.5 MB).
MAX_ENTRIES = 64
EXTENSION_KEY = "gridwatch_map_cache"


class RenderCache:
    """A thread-safe least-recently-used cache of built values."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_build(self, key: Hashable, build: Callable[[], T]) -> T:
        """Return the value cached under ``key``, building and storing it on a miss.

        Two requests missing the same key at once may both build it; the value is the same.
        """
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                found: T = self._entries[key]  # type: ignore[assignment]
                return found
            self.misses += 1
        value = build()
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()


def map_cache() -> RenderCache:
    """Return the current app's map cache (created on first use)."""
    cache = current_app.extensions.get(EXTENSION_KEY)
    if cache is None:
        cache = current_app.extensions.setdefault(EXTENSION_KEY, RenderCache())
    assert isinstance(cache, RenderCache)
    return cache


__all__ = ["MAX_ENTRIES", "RenderCache", "map_cache"]
