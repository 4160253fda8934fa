"""Values shared through Redis (gridwatch.sharedcache): a map is rendered once for all."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace

import pytest
from web_support import login

from gridwatch.sharedcache import SharedCache
from gridwatch.web import create_app
from gridwatch.web.mapcache import RenderCache, map_cache

PERIOD = "2026Q3"


def _forget(cache: SharedCache) -> None:
    client = cache._redis()
    for key in client.scan_iter(f"gridwatch:{cache.name}:*"):
        client.delete(key)


@pytest.fixture
def shared_app(web_settings, redis_url):
    """Two web apps (two processes' worth) on one database and one Redis server."""
    settings = replace(web_settings, redis_url=redis_url)
    apps = [create_app({"GRIDWATCH_SETTINGS": settings, "TESTING": True}) for _ in range(2)]
    yield apps
    with apps[0].app_context():
        _forget(map_cache())
    for app in apps:
        app.extensions["gridwatch"].engine.dispose()


def test_a_map_rendered_by_one_process_is_served_by_another(shared_app):
    first, second = shared_app
    strip = lambda r: re.sub(r'nonce="[^"]+"', "", r.get_data(as_text=True))  # noqa: E731
    query = {"period": PERIOD}
    one, two = first.test_client(), second.test_client()
    login(one, "town_a")
    login(two, "town_a")
    drawn = one.get("/map/frame", query_string=query)
    assert drawn.status_code == 200
    with first.app_context():
        assert map_cache().misses == 1
    served = two.get("/map/frame", query_string=query)
    assert served.status_code == 200 and strip(served) == strip(drawn)
    with second.app_context():
        cache = map_cache()
        assert (cache.misses, cache.hits) == (0, 1)  # read from Redis, not rendered again
    # Each response still gets a nonce of its own.
    assert drawn.headers["Content-Security-Policy"] != served.headers["Content-Security-Policy"]
    # Another township's map is its own entry, never town_a's.
    other = second.test_client()
    login(other, "town_b")
    assert other.get("/map/frame", query_string=query).status_code == 200
    with second.app_context():
        assert map_cache().misses == 1


def test_values_without_this_installations_signature_are_not_served(redis_url):
    key = ("frame", uuid.uuid4().hex)
    ours = RenderCache(redis_url=redis_url, secret="a" * 32, database="sqlite:///x.db")
    theirs = RenderCache(redis_url=redis_url, secret="b" * 32, database="sqlite:///x.db")
    try:
        theirs.put(key, "<script>alert('not ours')</script>")
        ours._redis().set(ours.redis_key(key), b"\0" * 32 + b"s<p>forged</p>")
        built = ours.get_or_build(key, lambda: "<p>ours</p>")
        assert built == "<p>ours</p>" and ours.misses == 1
        fresh = RenderCache(redis_url=redis_url, secret="a" * 32, database="sqlite:///x.db")
        assert fresh.get(key) == (True, "<p>ours</p>")
    finally:
        _forget(ours)


def test_keys_belong_to_one_database_and_only_text_and_bytes_go_to_redis(redis_url):
    key = ("layer", uuid.uuid4().hex)
    a = RenderCache(redis_url=redis_url, secret="s" * 32, database="sqlite:///a.db")
    b = RenderCache(redis_url=redis_url, secret="s" * 32, database="sqlite:///b.db")
    assert a.redis_key(key) != b.redis_key(key)
    try:
        a.put(key, b"\x1f\x8bgzipped")
        a.put(("figures", key), {"not": "text"})
        assert b.get(key) == (False, None)
        again = RenderCache(redis_url=redis_url, secret="s" * 32, database="sqlite:///a.db")
        assert again.get(key) == (True, b"\x1f\x8bgzipped")
        assert again.get(("figures", key)) == (False, None)  # kept only where it was built
        assert a.get(("figures", key)) == (True, {"not": "text"})
    finally:
        _forget(a)


def test_an_unreachable_redis_means_building_here():
    cache = SharedCache("test", redis_url="redis://127.0.0.1:1/0")
    built: list[int] = []
    for _ in range(2):
        assert cache.get_or_build("k", lambda: built.append(1) or len(built)) == 1
    assert built == [1] and (cache.misses, cache.hits) == (1, 1)
    assert cache._redis() is None  # the next requests do not wait for the absent server
