"""Writes of the audit records. Every app may call these; they never raise for a missing request."""

import hashlib
import hmac
import json
import logging
import unicodedata
from datetime import timedelta
from functools import cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.http import HttpRequest
from django.utils import timezone
from django.utils.module_loading import import_string

from .models import UNKNOWN_ACCOUNT, AuthEvent, StaffAction

log = logging.getLogger("audit")


@cache
def _client_ip_callable():
    # Named in settings (AUDIT_CLIENT_IP_CALLABLE), so this app imports nothing of the product.
    return import_string(settings.AUDIT_CLIENT_IP_CALLABLE)


def request_client_ip(request: HttpRequest | None) -> str:
    return _client_ip_callable()(request)[:64] if request is not None else ""


def typed_name_fingerprint(typed: str) -> str:
    """A keyed hash of a typed user name: equal for equal names, useless to anyone without SECRET_KEY."""
    normalised = unicodedata.normalize("NFKC", typed.strip()).casefold()
    return hmac.new(settings.SECRET_KEY.encode(), b"audit-name:" + normalised.encode(), hashlib.sha256).hexdigest()[:16]


def account_for_typed_name(typed: str | None):
    """The account a typed user name logs in to (exactly as Django's ModelBackend looks it up), or None."""
    if not typed:
        return None
    user_model = get_user_model()
    return user_model._default_manager.filter(**{user_model.USERNAME_FIELD: typed}).first()


def auth_event_record(
    *,
    kind: str,
    request: HttpRequest | None = None,
    user=None,
    typed_username: str | None = None,
    detail: str = "",
) -> AuthEvent:
    """Record one authentication event, and log the same facts (account or "(unknown)" + fingerprint, address)."""
    if user is None and typed_username is not None:
        user = account_for_typed_name(typed_username)
    fingerprint = "" if user is not None or not typed_username else typed_name_fingerprint(typed_username)
    event = AuthEvent.objects.create(
        kind=kind,
        user=user,
        username=user.get_username() if user is not None else UNKNOWN_ACCOUNT,
        typed_fingerprint=fingerprint,
        ip_address=request_client_ip(request),
        user_agent=(request.META.get("HTTP_USER_AGENT", "") if request is not None else "")[:300],
        detail=detail[:200],
    )
    log.info(
        "auth event %s: account=%s%s ip=%s%s",
        kind,
        event.username,
        f" typed={fingerprint}" if fingerprint else "",
        event.ip_address or "-",
        f" ({detail})" if detail else "",
    )
    return event


def _jsonable(value):
    return json.loads(json.dumps(value, default=str)) if value is not None else None


def staff_action_record(
    *,
    actor,
    action: str,
    target: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    before: dict | None = None,
    after: dict | None = None,
    request: HttpRequest | None = None,
) -> StaffAction:
    """Record one staff action. `actor` None is a management command run on a shell."""
    if target is not None:
        object_type = object_type or target._meta.label_lower
        object_id = object_id or str(target.pk)
        object_repr = object_repr or str(target)
    return StaffAction.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_name=actor.get_username() if actor is not None and actor.is_authenticated else "",
        action=action[:100],
        object_type=object_type[:100],
        object_id=str(object_id)[:64],
        object_repr=object_repr[:200],
        before=_jsonable(before),
        after=_jsonable(after),
        ip_address=request_client_ip(request),
    )


def audit_records_delete_expired(*, auth_events_days: int, audit_days: int) -> dict[str, int]:
    """Delete sign-in records older than `auth_events_days` and staff actions older than `audit_days` (0: keep
    them). A bulk delete by age: the one way rows leave these tables."""
    now = timezone.now()
    deleted = {"auth_events": 0, "staff_actions": 0}
    if auth_events_days > 0:
        deleted["auth_events"], _ = AuthEvent.objects.filter(at__lt=now - timedelta(days=auth_events_days)).delete()
    if audit_days > 0:
        deleted["staff_actions"], _ = StaffAction.objects.filter(at__lt=now - timedelta(days=audit_days)).delete()
    return deleted
