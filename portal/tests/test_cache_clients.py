"""The rate limits' cache (portal.resilient_cache) on the suite's Redis: one redis client per connection pool,
shared by threads, and no count lost between them."""

from __future__ import annotations

import threading
import uuid

from django.core.cache import caches

from portal.resilient_cache import FallbackRedisCache


def test_threads_share_one_client_and_every_count_lands():
    cache = caches["default"]
    assert isinstance(cache, FallbackRedisCache)  # the suite runs on Redis, as production does
    key = f"count-{uuid.uuid4().hex}"
    assert cache.add(key, 0, 60)
    clients = set()

    def count() -> None:
        clients.add(id(cache._cache.get_client(key, write=True)))
        for _ in range(200):
            cache.incr(key)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get(key) == 1600
    assert len(clients) == 1
    cache.delete(key)
