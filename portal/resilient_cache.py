"""The cache behind the login and claim rate limits: Redis, or this process's memory while Redis is away.

django-ratelimit lets a Redis error through (it only expects memcached's), so without this a Redis outage
turned every claim and every login into a 500. While Redis cannot be reached each process counts in its own
memory instead: the limits still hold per process (a little looser across processes), and nobody is refused
because the cache is down. After a failure Redis is left alone for `RETRY_AFTER` seconds, so an outage costs
one short timeout per process every few seconds, not one per request. `reachable()` asks Redis itself (for
/healthz), never the fallback.

django-redis's DJANGO_REDIS_IGNORE_EXCEPTIONS was the library alternative: it would swap Django's own Redis
backend for another just to answer None on errors, and with django-ratelimit's RATELIMIT_FAIL_OPEN that
means no limit at all during an outage, where this keeps counting.
"""

from __future__ import annotations

import logging
import threading
import time

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


def _with_fallback(name: str):
    """A cache method that asks Redis, or this process's memory while Redis is away."""

    def method(self, *args, **kwargs):
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    return method


class _OneClientPerPool(RedisCacheClient):
    """Django's client makes a new redis.Redis for every cache call, copying its ~170 response callbacks each
    time (~0.3 ms: a claim's two rate-limit counts made four of them). One per connection pool is enough: a
    redis.Redis is thread-safe, each command takes a connection from the pool."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(pool)
        if client is None:
            client = self._clients.setdefault(pool, self._client(connection_pool=pool))
        return client


class FallbackRedisCache(RedisCache):
    RETRY_AFTER = 5.0

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _OneClientPerPool
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

    add = _with_fallback("add")
    get = _with_fallback("get")
    set = _with_fallback("set")
    touch = _with_fallback("touch")
    delete = _with_fallback("delete")
    get_many = _with_fallback("get_many")
    has_key = _with_fallback("has_key")
    incr = _with_fallback("incr")
    set_many = _with_fallback("set_many")
    delete_many = _with_fallback("delete_many")
    clear = _with_fallback("clear")
