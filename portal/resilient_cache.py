"""The cache behind the login and claim rate limits: Redis, or this process's memory while Redis is away.

django-ratelimit lets a Redis error through (it only expects memcached's), so without this a Redis outage
turned every claim and every login into a 500. While Redis cannot be reached each process counts in its own
memory instead: the limits still hold per process (a little looser across processes), and nobody is refused
because the cache is down. After a failure Redis is left alone for `RETRY_AFTER` seconds, so an outage costs
one short timeout per process every few seconds, not one per request. `reachable()` asks Redis itself (for
/healthz), never the fallback.
"""

from __future__ import annotations

import logging
import threading
import time

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class FallbackRedisCache(RedisCache):
    RETRY_AFTER = 5.0

    def __init__(self, server, params):
        super().__init__(server, params)
        self._local = LocMemCache(f"fallback-{id(self)}", {"TIMEOUT": params.get("TIMEOUT", 300)})
        self._down_until = 0.0
        self._state_lock = threading.Lock()

    def reachable(self) -> bool:
        """Whether Redis answers now (a PING on the cache's own connection pool and timeouts)."""
        try:
            return bool(self._cache.get_client(write=True).ping())
        except RedisError:
            return False

    def _call(self, name: str, *args, **kwargs):
        if time.monotonic() >= self._down_until:
            try:
                result = getattr(super(), name)(*args, **kwargs)
            except RedisError as exc:
                with self._state_lock:
                    was_up, self._down_until = self._down_until == 0.0, time.monotonic() + self.RETRY_AFTER
                if was_up:
                    logger.warning(
                        "Cache: Redis unreachable (%s); rate limits count in this process's memory until it is back",
                        type(exc).__name__,
                    )
            else:
                if self._down_until:
                    with self._state_lock:
                        self._down_until = 0.0
                    logger.info("Cache: Redis reachable again")
                return result
        return getattr(self._local, name)(*args, **kwargs)

    def add(self, *args, **kwargs):
        return self._call("add", *args, **kwargs)

    def get(self, *args, **kwargs):
        return self._call("get", *args, **kwargs)

    def set(self, *args, **kwargs):
        return self._call("set", *args, **kwargs)

    def touch(self, *args, **kwargs):
        return self._call("touch", *args, **kwargs)

    def delete(self, *args, **kwargs):
        return self._call("delete", *args, **kwargs)

    def get_many(self, *args, **kwargs):
        return self._call("get_many", *args, **kwargs)

    def has_key(self, *args, **kwargs):
        return self._call("has_key", *args, **kwargs)

    def incr(self, *args, **kwargs):
        return self._call("incr", *args, **kwargs)

    def set_many(self, *args, **kwargs):
        return self._call("set_many", *args, **kwargs)

    def delete_many(self, *args, **kwargs):
        return self._call("delete_many", *args, **kwargs)

    def clear(self):
        return self._call("clear")
