"""Values kept in this process and, when Redis is configured, in Redis for every process.

What takes seconds to build and stays the same until the data changes — rendered maps and
map layers (:mod:`gridwatch.web.mapcache`), the county's survey results
(:mod:`gridwatch.targeting.survey_results`) — is built once and read by every web process and
worker. Keys hold whatever the value depends on (the published run, the jurisdiction, the
parameters …), so nothing is ever invalidated by hand: a new run makes new keys, and the old
entries age out (least recently used here, an expiry time in Redis).

A value goes to Redis encoded by the cache's codec and signed (HMAC-SHA256 with
``GRIDWATCH_SECRET_KEY``, the same in every process of an installation): an entry without
this installation's signature is treated as missing, so whoever can write to Redis can
neither run code in the web processes (pickled values) nor put a page of their own in front
of a user (rendered maps). Redis is only a cache here: when it is slow or down the value is
built and kept in this process, and Redis is left alone for :data:`REDIS_RETRY_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Seconds an entry stays in Redis (a newer run makes it unreachable long before).
REDIS_TTL_S = 24 * 3600
#: A slow or absent Redis must not hold a page up: its timeout, and the pause after a failure.
REDIS_TIMEOUT_S = 2.0
REDIS_RETRY_S = 30.0
#: Length of the HMAC-SHA256 signature in front of each value in Redis.
SIGNATURE_BYTES = 32

Encode = Callable[[Any], "bytes | None"]
Decode = Callable[[bytes], Any]


def pickle_encode(value: Any) -> bytes:
    """Encode any value (the default codec; only signed entries are ever decoded)."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class SharedCache:
    """A least-recently-used cache in this process, backed by Redis when configured.

    Parameters
    ----------
    name : str
        Part of every Redis key (``gridwatch:<name>:<digest of the key>``).
    redis_url : str
        Empty keeps values in this process only.
    secret : str
        Key of the signatures (``GRIDWATCH_SECRET_KEY``).
    local_entries : int
        Values kept in this process.
    encode, decode : callable
        How a value becomes bytes in Redis and back; ``encode`` may return ``None`` for a
        value that stays in this process only.
    """

    def __init__(
        self,
        name: str,
        redis_url: str = "",
        secret: str = "",
        local_entries: int = 128,
        encode: Encode = pickle_encode,
        decode: Decode = pickle.loads,
    ) -> None:
        self.name = name
        self.redis_url = redis_url
        self.local_entries = local_entries
        self._encode = encode
        self._decode = decode
        self._secret = hashlib.sha256(f"gridwatch {name}\0{secret}".encode()).digest()
        self._local: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()
        self._client: Any = None
        self._redis_down_until = 0.0
        #: Values found (here or in Redis) and values built.
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._local)

    def redis_key(self, key: Hashable) -> str:
        """Return the Redis key of ``key`` (a digest of its text)."""
        return f"gridwatch:{self.name}:" + hashlib.sha256(repr(key).encode()).hexdigest()

    def get(self, key: Hashable) -> tuple[bool, Any]:
        """Return ``(True, value)`` when ``key`` is kept here or in Redis, else ``(False, None)``.

        A value read from Redis is kept here too.
        """
        with self._lock:
            if key in self._local:
                self._local.move_to_end(key)
                return True, self._local[key]
        client = self._redis()
        if client is None:
            return False, None
        try:
            raw = client.get(self.redis_key(key))
        except Exception as exc:  # a cache: an unreachable Redis means building it here
            self._redis_failed("read", exc)
            return False, None
        if raw is None:
            return False, None
        signature, payload = raw[:SIGNATURE_BYTES], raw[SIGNATURE_BYTES:]
        if not hmac.compare_digest(signature, self._sign(payload)):
            log.warning(
                "%s cache: an entry in Redis is not signed by this installation", self.name
            )
            return False, None
        value = self._decode(payload)
        self._keep(key, value)
        return True, value

    def put(self, key: Hashable, value: Any) -> None:
        """Keep ``value`` under ``key`` here and, when configured (and encodable), in Redis."""
        self._keep(key, value)
        client = self._redis()
        if client is None:
            return
        payload = self._encode(value)
        if payload is None:
            return
        try:
            client.set(self.redis_key(key), self._sign(payload) + payload, ex=REDIS_TTL_S)
        except Exception as exc:
            self._redis_failed("write", exc)

    def get_or_build(self, key: Hashable, build: Callable[[], T]) -> T:
        """Return the value kept under ``key``, building and keeping it when there is none.

        Two processes missing the same key at once may both build it; the value is the same.
        """
        found, value = self.get(key)
        if found:
            self.hits += 1
            kept: T = value
            return kept
        self.misses += 1
        built = build()
        self.put(key, built)
        return built

    def clear(self) -> None:
        """Forget the values kept in this process (Redis keeps its own)."""
        with self._lock:
            self._local.clear()

    def _keep(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._local[key] = value
            self._local.move_to_end(key)
            while len(self._local) > self.local_entries:
                self._local.popitem(last=False)

    def _redis(self) -> Any:
        if not self.redis_url or time.monotonic() < self._redis_down_until:
            return None
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(
                self.redis_url,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
        return self._client

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def _redis_failed(self, action: str, exc: Exception) -> None:
        log.warning(
            "%s cache: cannot %s Redis (%s); retrying in %gs",
            self.name,
            action,
            exc,
            REDIS_RETRY_S,
        )
        self._redis_down_until = time.monotonic() + REDIS_RETRY_S


__all__ = ["REDIS_TTL_S", "SharedCache", "pickle_encode"]
