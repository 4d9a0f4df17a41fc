"""Sessions end when what they were granted on changes: the password, the account's being active, its role.

Connected in PortalConfig.ready. Password changes are also sign-in events (audit.AuthEvent).
"""

import time

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import m2m_changed, post_save, pre_save

from audit.models import AuthEvent
from audit.services import auth_event_record

from .services import staff_sessions_end

SESSION_LOGIN_AT = "portal_login_at"
SESSION_SEEN_AT = "portal_seen_at"


def stamp_session_on_login(sender, request, user, **kwargs) -> None:
    now = time.time()
    request.session[SESSION_LOGIN_AT] = now
    request.session[SESSION_SEEN_AT] = now


def note_account_changes(sender, instance, update_fields=None, **kwargs) -> None:
    """Before a user row is saved: remember whether its password (set_password, not a hasher upgrade on login,
    which clears `_password` before saving) or its active flag changed, for end_sessions_after_change."""
    instance._portal_password_changed = instance.pk is not None and getattr(instance, "_password", None) is not None
    instance._portal_disabled = False
    if instance.pk is not None and not instance.is_active and (update_fields is None or "is_active" in update_fields):
        was_active = sender._default_manager.filter(pk=instance.pk, is_active=True).exists()
        instance._portal_disabled = was_active


def end_sessions_after_change(sender, instance, created, **kwargs) -> None:
    if created:
        return
    if getattr(instance, "_portal_password_changed", False):
        staff_sessions_end(user=instance)
        auth_event_record(kind=AuthEvent.Kind.PASSWORD_CHANGED, user=instance)
    elif getattr(instance, "_portal_disabled", False):
        staff_sessions_end(user=instance)


def end_sessions_after_role_change(sender, instance, action, pk_set=None, reverse=False, **kwargs) -> None:
    """A role is a group: adding or removing one (user.groups.set/add/remove/clear) ends the user's sessions."""
    if action in ("post_add", "post_remove", "post_clear") and not reverse and (pk_set or action == "post_clear"):
        staff_sessions_end(user=instance)


def connect() -> None:
    user_model = get_user_model()
    user_logged_in.connect(stamp_session_on_login, dispatch_uid="portal.stamp_session_on_login")
    pre_save.connect(note_account_changes, sender=user_model, dispatch_uid="portal.note_account_changes")
    post_save.connect(end_sessions_after_change, sender=user_model, dispatch_uid="portal.end_sessions_after_change")
    m2m_changed.connect(
        end_sessions_after_role_change, sender=user_model.groups.through, dispatch_uid="portal.end_sessions_role"
    )
