"""The SmartPages REST API client: one connection pool, timeouts, retries, and errors that say what to do.

Transient failures (connection errors, 429, 5xx) are retried by urllib3's `Retry` with backoff and
`Retry-After`; what is still failing after that raises `TransientError`. Other 4xx answers are
permanent (`PermanentError`) and are never retried. Credentials are sent, never logged.

urllib3 is used directly, not through requests: requests' own work per call (merging settings, hooks,
reading the body in 10 kB pieces) was two thirds of the CPU a template page's fetch took, and a full sync
makes one call per page (bench/sync.py).
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import urllib3
from django.conf import settings
from urllib3.exceptions import HTTPError
from urllib3.util.retry import Retry

logger = logging.getLogger(__name__)

TRANSIENT_STATUSES = (429, 500, 502, 503, 504)


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


class PermanentError(SmartPagesError):
    """A 4xx answer: trying again with the same request will not help."""


class NotFound(PermanentError):
    pass


class Conflict(PermanentError):
    """409: e.g. an externalIdentifier already used on this pass template."""


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
        backoff_factor=0.2,
        backoff_max=10,
        status_forcelist=TRANSIENT_STATUSES,
        # POST is not idempotent: a read error after sending could create a pass twice, so only the
        # connection phase of a POST is retried (urllib3 retries connect errors for every method).
        allowed_methods=frozenset({"GET", "PUT"}),
        respect_retry_after_header=True,
        # Capped, so that one call has a known longest time (SMARTPAGES_RETRY_AFTER_MAX).
        retry_after_max=settings.SMARTPAGES_RETRY_AFTER_MAX,
        raise_on_status=False,
    )


def request_retry() -> Retry:
    """Retries for a call made while a person waits (a holder's claim, staff adding a member): one quick
    second try, and no waiting out a Retry-After, so the call stays inside SMARTPAGES_REQUEST_TIMEOUT's
    budget; what still fails is left to the retry task."""
    return default_retry().new(total=1, connect=1, read=1, status=1, backoff_max=1, respect_retry_after_header=False)


class SmartPagesClient:
    def __init__(
        self,
        *,
        base_url: str,
        key_id: str,
        key_token: str,
        timeout: tuple[float, float] = (5.0, 30.0),
        retry: Retry | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        credentials = base64.b64encode(f"{key_id}:{key_token}".encode()).decode()
        self._pool = urllib3.PoolManager(
            maxsize=16,
            retries=retry or default_retry(),
            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
            headers={
                "Authorization": f"Bearer {credentials}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Accept-Encoding": "gzip, deflate",  # as requests asked: ~19 MB of JSON per full sync; urllib3 decodes
                "User-Agent": "smartpass-portal",
            },
        )

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
        url = self.base_url + path
        try:
            response = self._pool.request(method, url, **kwargs)
        except HTTPError as exc:
            # The exception's name says what failed; its text could name the request, never shown.
            raise TransientError(f"SmartPages could not be reached for {method} {path}: {type(exc).__name__}.") from exc
        status = response.status
        if status in TRANSIENT_STATUSES:
            raise TransientError(f"SmartPages answered {status} to {method} {path} after retrying.", status=status)
        if status >= 400:
            raise _permanent_error(method, path, response)
        try:
            return orjson.loads(response.data)  # a template page is ~200 kB: three times faster than json
        except ValueError as exc:
            raise TransientError(
                f"SmartPages sent a reply that is not valid JSON for {method} {path}.", status=status
            ) from exc


def _permanent_error(method: str, path: str, response: urllib3.BaseHTTPResponse) -> PermanentError:
    status = response.status
    try:
        body = orjson.loads(response.data)
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
    """The caller's client as it is, or one made from settings and closed afterwards (with the shorter
    timeouts and retries of a web request when `in_request`)."""
    if given is not None:
        yield given
        return
    with client_from_settings(in_request=in_request) as made:
        yield made


def client_from_settings(*, in_request: bool = False) -> SmartPagesClient:
    if not settings.SMARTPAGES_KEY_ID or not settings.SMARTPAGES_KEY_TOKEN:
        raise PermanentError("SmartPages credentials are not set: set SMARTPAGES_KEY_ID and SMARTPAGES_KEY_TOKEN.")
    return SmartPagesClient(
        base_url=settings.SMARTPAGES_API_URL,
        key_id=settings.SMARTPAGES_KEY_ID,
        key_token=settings.SMARTPAGES_KEY_TOKEN,
        timeout=settings.SMARTPAGES_REQUEST_TIMEOUT if in_request else settings.SMARTPAGES_TIMEOUT,
        retry=request_retry() if in_request else None,
    )
