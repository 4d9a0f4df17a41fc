"""A request rate shared by every worker process on every host: at most `rate` calls per second in all.

How: one Redis key holds the next free moment (microseconds, Redis's own clock). A Lua script reserves the
next slot atomically (slot = max(now, next free); next free = slot + 1/rate) and returns how long the caller
must wait for it; the caller sleeps that long, then makes its call. Calls are spaced evenly, never in bursts,
one round trip each, and host clocks do not matter (only Redis's `TIME` is read).

Why not a counter per time slot (INCR on a key per second): it allows twice the rate across a slot boundary
and makes callers poll. Why not the `limits` library: its Redis strategies answer "allowed or not" and leave
the waiting (and its busy polling) to the caller; the reservation below is fifteen lines.

When Redis cannot be reached the limiter falls back to `fallback_rate` in this process alone (a conservative
share of the whole), logs it, and tries Redis again after a while.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

logger = logging.getLogger(__name__)

_RESERVE = """
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local slot = math.max(now_us, tonumber(redis.call('GET', KEYS[1]) or '0'))
redis.call('SET', KEYS[1], slot + interval, 'PX', math.floor((slot + interval - now_us) / 1000) + 60000)
return slot - now_us
"""
RETRY_REDIS_AFTER = 30.0  # seconds on the local fallback before trying Redis again


class SharedRateLimiter:
    def __init__(self, *, name: str, rate: float, fallback_rate: float, redis_url: str | None) -> None:
        if rate <= 0 or fallback_rate <= 0:
            raise ValueError("rates must be positive")
        self.key = f"smartpass:rate:{name}"
        self.interval_us = max(1, round(1_000_000 / rate))
        self.fallback_interval = 1.0 / fallback_rate
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2) if redis_url else None
        self._script = self._redis.register_script(_RESERVE) if self._redis else None
        self._lock = threading.Lock()
        self._local_next = 0.0
        self._redis_down_until = 0.0

    def wait(self) -> float:
        """Block until this caller may make one call; returns the seconds waited."""
        delay = self._reserve_shared()
        if delay is None:
            delay = self._reserve_local()
        if delay > 0:
            time.sleep(delay)
        return delay

    def _reserve_shared(self) -> float | None:
        if self._script is None or time.monotonic() < self._redis_down_until:
            return None
        try:
            return int(self._script(keys=[self.key], args=[self.interval_us])) / 1_000_000
        except redis.RedisError as exc:
            self._redis_down_until = time.monotonic() + RETRY_REDIS_AFTER
            logger.warning(
                "Shared rate limiter %s: Redis unreachable (%s); %.2f requests/s in this process for the next %d s",
                self.key,
                type(exc).__name__,
                1 / self.fallback_interval,
                RETRY_REDIS_AFTER,
            )
            return None

    def _reserve_local(self) -> float:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._local_next)
            self._local_next = slot + self.fallback_interval
            return slot - now


def most_in_one_second(times: list[float]) -> int:
    """The most of these sorted moments (seconds) inside any one-second window: how a rate is checked from
    the times requests arrived (the refresh benchmark and the two-worker test)."""
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most
