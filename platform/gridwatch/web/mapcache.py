"""Rendered maps and map GeoJSON, kept per process and, with Redis, for every process.

Keys start with the published run (its id and the moment it was published, so a database
built again from scratch never meets the maps of its predecessor), so publishing a new run
makes every older entry unreachable (they age out); they also hold the user's jurisdiction
and the request's parameters, so two users share an entry only when they would get the same
answer. With ``GRIDWATCH_REDIS_URL`` the rendered documents and layers (text and bytes) are
kept in Redis too, signed (:class:`gridwatch.sharedcache.SharedCache`), so a map rendered by
one web process is not rendered again by the others; other values (figures as Python
objects) stay in their process.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import current_app

from gridwatch.sharedcache import SharedCache
from gridwatch.web.extensions import state

#: Entries kept per process (a rendered county map is about 1.5 MB).
MAX_ENTRIES = 64
EXTENSION_KEY = "gridwatch_map_cache"


def _encode(value: Any) -> bytes | None:
    if isinstance(value, str):
        return b"s" + value.encode("utf-8")
    if isinstance(value, bytes):
        return b"b" + value
    return None  # kept in this process only


def _decode(payload: bytes) -> str | bytes:
    return payload[1:].decode("utf-8") if payload[:1] == b"s" else payload[1:]


class RenderCache(SharedCache):
    """A thread-safe least-recently-used cache of built maps, shared through Redis.

    Parameters
    ----------
    max_entries : int
        Values kept in this process.
    redis_url : str
        Empty keeps values in this process only.
    secret : str
        Key of the signatures of values in Redis (``GRIDWATCH_SECRET_KEY``).
    database : str
        Which database the maps show (part of the Redis keys: installations may share one
        Redis server).
    """

    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        redis_url: str = "",
        secret: str = "",
        database: str = "",
    ) -> None:
        digest = hashlib.sha256(database.encode("utf-8")).hexdigest()[:16]
        super().__init__(f"map:{digest}", redis_url, secret, max_entries, _encode, _decode)


def map_cache() -> RenderCache:
    """Return the current app's map cache (created on first use)."""
    cache = current_app.extensions.get(EXTENSION_KEY)
    if cache is None:
        app_state = state()
        created = RenderCache(
            redis_url=app_state.settings.redis_url,
            secret=app_state.settings.secret_key,
            database=app_state.engine.url.render_as_string(hide_password=True),
        )
        cache = current_app.extensions.setdefault(EXTENSION_KEY, created)
    assert isinstance(cache, RenderCache)
    return cache


__all__ = ["MAX_ENTRIES", "RenderCache", "map_cache"]
