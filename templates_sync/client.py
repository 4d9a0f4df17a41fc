"""The SmartPages REST API client: one connection pool, timeouts, a total deadline per call, retries, a byte cap
on replies, and errors that say what to do.

Transient failures (connection errors, 429, 5xx) are retried with backoff and `Retry-After` (urllib3's `Retry`
decides and counts; the loop here runs them, so that it can keep the deadline); what is still failing after
that raises `TransientError`. Other 4xx answers are permanent (`PermanentError`) and are never retried.
Credentials are sent, never logged.

Three bounds keep a hostile or broken upstream from holding a caller (issue 22):
- a total deadline per call, retries and `Retry-After` waits included (`SMARTPAGES_REQUEST_DEADLINE` while a
  person waits, `SMARTPAGES_DEADLINE` in workers). urllib3's read timeout is per socket read, so an upstream
  that drips a byte every few seconds never trips it: a watchdog timer shuts the call's socket down when the
  deadline passes, whatever the call is waiting on (the status line, a header, the body);
- replies are read in pieces and counted after decompression (`SMARTPAGES_MAX_REPLY_BYTES`): a gzip bomb is
  refused once it has inflated past the cap, never inflated whole (urllib3 ≥ 2.6 decompresses a streamed
  read only as far as asked);
- redirects are not followed: a 3xx is an error naming its target, so nothing is ever stored from a host
  other than SMARTPAGES_API_URL.

urllib3 is used directly, not through requests: requests' own work per call (merging settings, hooks,
reading the body in 10 kB pieces) was two thirds of the CPU a template page's fetch took, and a full sync
makes one call per page (bench/sync.py).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import urllib3
from django.conf import settings
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError, MaxRetryError
from urllib3.util.retry import Retry

logger = logging.getLogger(__name__)

TRANSIENT_STATUSES = (429, 500, 502, 503, 504)
READ_PIECE_BYTES = 64 * 1024
DEFAULT_DEADLINE = 120.0
DEFAULT_MAX_REPLY_BYTES = 20_000_000


class SmartPagesError(Exception):
    """Base of every client error; `str(error)` is a sentence a person can act on."""

    transient = False

    def __init__(self, message: str, *, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class TransientError(SmartPagesError):
    """Worth trying again later: the network, a timeout, 429 or 5xx after the retries ran out."""

    transient = True


class DeadlineExceeded(TransientError):
    """The call's total deadline passed (a slow or dripping upstream, or retries that took too long)."""


class PermanentError(SmartPagesError):
    """A 4xx answer (or a reply no retry will mend): trying again with the same request will not help."""


class NotFound(PermanentError):
    pass


class Conflict(PermanentError):
    """409: e.g. an externalIdentifier already used on this pass template."""


class ReplyTooLarge(PermanentError):
    """The reply grew past SMARTPAGES_MAX_REPLY_BYTES once decompressed."""


class Redirected(PermanentError):
    """A 3xx: SmartPages' API does not redirect, so the answer came from something else (a proxy, a moved host)."""


@dataclass(frozen=True)
class TemplatePage:
    page: int
    page_size: int
    total_pages: int
    total_items: int
    data: list[dict]


def default_retry() -> Retry:
    return Retry(
        total=6,
        connect=6,
        read=6,
        status=6,
        redirect=False,
        backoff_factor=0.2,
        backoff_max=10,
        status_forcelist=TRANSIENT_STATUSES,
        # POST is not idempotent: a read error after sending could create a pass twice, so only the
        # connection phase of a POST is retried (urllib3 retries connect errors for every method).
        allowed_methods=frozenset({"GET", "PUT"}),
        respect_retry_after_header=True,
        # Capped, so that no single wait swallows the deadline (SMARTPAGES_RETRY_AFTER_MAX).
        retry_after_max=settings.SMARTPAGES_RETRY_AFTER_MAX,
        raise_on_status=False,
    )


def request_retry() -> Retry:
    """Retries for a call made while a person waits (a holder's claim, staff adding a member): one quick
    second try, and no waiting out a Retry-After; the call also keeps SMARTPAGES_REQUEST_DEADLINE, and what
    still fails is left to the retry task."""
    return default_retry().new(total=1, connect=1, read=1, status=1, backoff_max=1, respect_retry_after_header=False)


# --- the deadline watchdog ---------------------------------------------------------------------------------
# The connection a thread's call is using right now, so that the call's watchdog can shut its socket down.
_current_call = threading.local()


class _Watch:
    """One call's deadline: `expire()` (from a timer thread) shuts down the socket the call is waiting on."""

    def __init__(self, seconds: float):
        self.ends_at = time.monotonic() + seconds
        self.expired = False
        self._connection: HTTPConnection | None = None
        self._lock = threading.Lock()
        self._active = True

    def remaining(self) -> float:
        return self.ends_at - time.monotonic()

    def using(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connection = connection
            if self.expired:  # it expired between two attempts: this connection must not wait either
                _shut_down(connection)

    def expire(self) -> None:
        with self._lock:
            if not self._active:
                return  # the call is over and its connection may already serve another call
            self.expired = True
            if self._connection is not None:
                _shut_down(self._connection)

    def released(self, connection: HTTPConnection) -> None:
        """The call gave `connection` back to its pool, where another call may take it: never shut it down."""
        with self._lock:
            if self._connection is connection:
                self._connection = None

    def finish(self) -> None:
        with self._lock:
            self._active = False


def _shut_down(connection: HTTPConnection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _WatchedConnectionMixin:
    def request(self, *args, **kwargs):
        watch = getattr(_current_call, "watch", None)
        if watch is not None:
            watch.using(self)
        return super().request(*args, **kwargs)


class _WatchedHTTPConnection(_WatchedConnectionMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnectionMixin, HTTPSConnection):
    pass


# A kept-alive connection idle this long is opened again rather than reused: a NAT or load balancer on the way
# may have forgotten it without telling either end, and a POST sent on it would be lost (POSTs are not retried).
KEEPALIVE_IDLE_SECONDS = 30


class _WatchedPoolMixin:
    """The pool's side of the watch, for a pool many calls share (the request client): a connection going back
    to the pool leaves its call's watch, so that the watch's expiry cannot shut it down under the next call; and
    a connection idle for over KEEPALIVE_IDLE_SECONDS is closed before reuse (it connects again on its request)."""

    def _put_conn(self, conn):
        if conn is not None:
            watch = getattr(_current_call, "watch", None)
            if watch is not None:
                watch.released(conn)
            conn.idle_since = time.monotonic()
        super()._put_conn(conn)

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        idle_since = getattr(conn, "idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > KEEPALIVE_IDLE_SECONDS:
            conn.close()
        return conn


class _WatchedHTTPConnectionPool(_WatchedPoolMixin, HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(_WatchedPoolMixin, HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


# Connections kept per SmartPages host by a client (a worker's calls are one at a time; see the request client).
DEFAULT_POOL_SIZE = 16


class SmartPagesClient:
    def __init__(
        self,
        *,
        base_url: str,
        key_id: str,
        key_token: str,
        timeout: tuple[float, float] = (5.0, 30.0),
        retry: Retry | None = None,
        deadline: float = DEFAULT_DEADLINE,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        pool_size: int = DEFAULT_POOL_SIZE,
    ):
        self.base_url = base_url.rstrip("/")
        self.deadline = float(deadline)
        self.max_reply_bytes = int(max_reply_bytes)
        self._connect_timeout, self._read_timeout = timeout
        self._retry = retry or default_retry()
        credentials = base64.b64encode(f"{key_id}:{key_token}".encode()).decode()
        self._pool = urllib3.PoolManager(
            maxsize=pool_size,
            retries=False,
            headers={
                "Authorization": f"Bearer {credentials}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Accept-Encoding": "gzip, deflate",  # as requests asked: ~19 MB of JSON per full sync; urllib3 decodes
                "User-Agent": "smartpass-portal",
            },
        )
        self._pool.pool_classes_by_scheme = {"http": _WatchedHTTPConnectionPool, "https": _WatchedHTTPSConnectionPool}

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> SmartPagesClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- endpoints ------------------------------------------------------------------------------------
    def list_templates(self, *, page: int, page_size: int) -> TemplatePage:
        """GET /api/v1/pass-template?page=&page_size= — one page of the issuer's templates."""
        body = self._request("GET", "/api/v1/pass-template", fields={"page": page, "page_size": page_size})
        try:
            return TemplatePage(
                page=int(body["page"]),
                page_size=int(body["pageSize"]),
                total_pages=int(body["totalPages"]),
                total_items=int(body["totalItems"]),
                data=list(body["data"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TransientError(f"SmartPages sent a template page without the paging fields ({exc!r}).") from exc

    def get_template(self, template_id: str) -> dict:
        """GET /api/v1/pass-template/{id} — one template."""
        return self._request("GET", f"/api/v1/pass-template/{template_id}")

    def create_pass(self, body: dict) -> dict:
        """POST /api/v1/pass — create a pass (body: passTemplateId, inputFields, externalIdentifier …)."""
        return self._request("POST", "/api/v1/pass", json=body)

    def get_pass(self, pass_id: str) -> dict:
        """GET /api/v1/pass/{id} — read a pass."""
        return self._request("GET", f"/api/v1/pass/{pass_id}")

    def update_pass(self, pass_id: str, body: dict) -> dict:
        """PUT /api/v1/pass/{id} — update a pass (voiding is {"isVoided": true})."""
        return self._request("PUT", f"/api/v1/pass/{pass_id}", json=body)

    # --- plumbing -------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs) -> Any:
        """One call: attempts with retries until an answer, a permanent error, or the deadline."""
        url = self.base_url + path
        watch = _Watch(self.deadline)
        timer = threading.Timer(self.deadline, watch.expire)
        timer.daemon = True
        timer.start()
        _current_call.watch = watch
        try:
            status, data = self._attempts(method, path, url, watch, kwargs)
        finally:
            _current_call.watch = None
            watch.finish()
            timer.cancel()
        try:
            return orjson.loads(data)  # a template page is ~200 kB: three times faster than json
        except ValueError as exc:
            raise TransientError(
                f"SmartPages sent a reply that is not valid JSON for {method} {path}.", status=status
            ) from exc

    def _attempts(self, method: str, path: str, url: str, watch: _Watch, kwargs: dict) -> tuple[int, bytes]:
        retry = self._retry
        while True:
            remaining = watch.remaining()
            if remaining <= 0 or watch.expired:
                raise self._deadline_error(method, path)
            timeout = urllib3.Timeout(
                connect=min(self._connect_timeout, remaining), read=min(self._read_timeout, remaining)
            )
            try:
                response = self._pool.request(
                    method, url, retries=False, redirect=False, preload_content=False, timeout=timeout, **kwargs
                )
                status = response.status
                if status in TRANSIENT_STATUSES and retry.is_retry(method, status, "Retry-After" in response.headers):
                    wait_response = response
                    response.drain_conn()
                    response.release_conn()
                else:
                    return status, self._finish(method, path, response)
            except HTTPError as exc:
                if watch.expired:
                    raise self._deadline_error(method, path) from exc
                try:
                    retry = retry.increment(method, url, error=exc)
                except (MaxRetryError, HTTPError):
                    # The exception's name says what failed; its text could name the request, never shown.
                    raise TransientError(
                        f"SmartPages could not be reached for {method} {path}: {type(exc).__name__}."
                    ) from exc
                wait = retry.get_backoff_time()
            else:
                try:
                    retry = retry.increment(method, url, response=wait_response)
                except MaxRetryError:
                    raise TransientError(
                        f"SmartPages answered {status} to {method} {path} after retrying.", status=status
                    ) from None
                wait = None
                if retry.respect_retry_after_header:
                    with contextlib.suppress(HTTPError):
                        wait = retry.get_retry_after(wait_response)
                if wait is None:
                    wait = retry.get_backoff_time()
            if wait >= watch.remaining():
                raise self._deadline_error(method, path)
            time.sleep(wait)

    def _finish(self, method: str, path: str, response: urllib3.BaseHTTPResponse) -> bytes:
        """The reply's body, decompressed and counted piece by piece; errors for what is not a success."""
        status = response.status
        if 300 <= status < 400:
            target = response.headers.get("Location") or "(no Location given)"
            response.drain_conn()
            response.release_conn()
            raise Redirected(
                f"SmartPages answered {method} {path} with a redirect ({status}) to {target[:300]}; redirects are "
                "not followed: check SMARTPAGES_API_URL.",
                status=status,
            )
        if status in TRANSIENT_STATUSES:
            response.drain_conn()
            response.release_conn()
            raise TransientError(f"SmartPages answered {status} to {method} {path}.", status=status)
        pieces, size = [], 0
        try:
            for piece in response.stream(READ_PIECE_BYTES, decode_content=True):
                size += len(piece)
                if size > self.max_reply_bytes:
                    raise ReplyTooLarge(
                        f"SmartPages' reply to {method} {path} is larger than SMARTPAGES_MAX_REPLY_BYTES "
                        f"({self.max_reply_bytes:,} bytes once decompressed); it was not read further.",
                        status=status,
                    )
                pieces.append(piece)
        except BaseException:
            response.close()  # half read: the connection cannot serve another request
            raise
        response.release_conn()
        data = b"".join(pieces)
        if status >= 400:
            raise _permanent_error(method, path, status, data)
        return data

    def _deadline_error(self, method: str, path: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"SmartPages did not answer {method} {path} within its deadline of {self.deadline:g} s "
            "(SMARTPAGES_DEADLINE, or SMARTPAGES_REQUEST_DEADLINE while a person waits)."
        )


def _permanent_error(method: str, path: str, status: int, data: bytes) -> PermanentError:
    try:
        body = orjson.loads(data)
    except ValueError:
        body = None
    detail = ""
    if isinstance(body, dict):
        detail = str(body.get("error") or body.get("message") or "")[:300]
    if status == 401:
        message = "SmartPages refused the API credentials (401): check SMARTPAGES_KEY_ID and SMARTPAGES_KEY_TOKEN."
        return PermanentError(message, status=status, body=body)
    if status == 403:
        return PermanentError(
            "SmartPages says these API credentials may not do this (403): check the key's permissions.",
            status=status,
            body=body,
        )
    if status == 404:
        return NotFound(f"SmartPages has no such resource ({method} {path}: 404).", status=status, body=body)
    if status == 409:
        return Conflict(
            f"SmartPages refused {method} {path} as a conflict: {detail or '409'}.", status=status, body=body
        )
    return PermanentError(
        f"SmartPages refused {method} {path} ({status}){': ' + detail if detail else ''}.", status=status, body=body
    )


@contextlib.contextmanager
def smartpages_client(given: SmartPagesClient | None = None, *, in_request: bool = False) -> Iterator[SmartPagesClient]:
    """The caller's client as it is; while a person waits (`in_request`: shorter timeouts, retries and
    deadline), the process's shared request client; else one made from settings and closed afterwards."""
    if given is not None:
        yield given
    elif in_request:
        yield request_client()
    else:
        with client_from_settings() as made:
            yield made


# One client per process for the calls a person waits on, so that its connections to SmartPages are kept alive
# between calls: a claim reuses an open (TLS) connection instead of opening one and a pool around it each time.
# urllib3's PoolManager is thread-safe; a web process's threads share it, each holding at most one of its
# connections at a time (pool_size: above gunicorn's default of 16 threads). A connection SmartPages closed
# while idle is seen before reuse and replaced, and one idle for long is not reused (KEEPALIVE_IDLE_SECONDS);
# one closed just as a POST goes out fails that POST like any other lost connection, and the member waits as
# pending for its retry.
REQUEST_CLIENT_POOL_SIZE = 32
# Clients kept per process: one per SmartPages configuration (one in production; tests change it often).
REQUEST_CLIENTS_KEPT = 4
_request_clients: dict[tuple, SmartPagesClient] = {}
_request_clients_lock = threading.Lock()


def _forget_request_clients_in_child() -> None:
    # A forked child (a preloaded gunicorn worker, a links process pool) must not share its parent's sockets:
    # it opens its own on first use.
    global _request_clients_lock
    _request_clients.clear()
    _request_clients_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_request_clients_in_child)


def request_client() -> SmartPagesClient:
    """The process's client for calls a person waits on, for the current settings (a test that changes them
    gets a client of its own)."""
    key = (
        settings.SMARTPAGES_API_URL,
        settings.SMARTPAGES_KEY_ID,
        settings.SMARTPAGES_KEY_TOKEN,
        settings.SMARTPAGES_REQUEST_TIMEOUT,
        settings.SMARTPAGES_REQUEST_DEADLINE,
        settings.SMARTPAGES_MAX_REPLY_BYTES,
    )
    client = _request_clients.get(key)
    if client is None:
        with _request_clients_lock:
            client = _request_clients.get(key)
            if client is None:
                if len(_request_clients) >= REQUEST_CLIENTS_KEPT:
                    for old in _request_clients.values():
                        old.close()  # idle connections only: a call still using one finishes on it
                    _request_clients.clear()
                client = _request_clients[key] = client_from_settings(in_request=True)
    return client


def client_from_settings(*, in_request: bool = False) -> SmartPagesClient:
    if not settings.SMARTPAGES_KEY_ID or not settings.SMARTPAGES_KEY_TOKEN:
        raise PermanentError("SmartPages credentials are not set: set SMARTPAGES_KEY_ID and SMARTPAGES_KEY_TOKEN.")
    return SmartPagesClient(
        base_url=settings.SMARTPAGES_API_URL,
        key_id=settings.SMARTPAGES_KEY_ID,
        key_token=settings.SMARTPAGES_KEY_TOKEN,
        timeout=settings.SMARTPAGES_REQUEST_TIMEOUT if in_request else settings.SMARTPAGES_TIMEOUT,
        retry=request_retry() if in_request else None,
        deadline=settings.SMARTPAGES_REQUEST_DEADLINE if in_request else settings.SMARTPAGES_DEADLINE,
        max_reply_bytes=settings.SMARTPAGES_MAX_REPLY_BYTES,
        pool_size=REQUEST_CLIENT_POOL_SIZE if in_request else DEFAULT_POOL_SIZE,
    )
