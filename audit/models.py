"""Append-only records: one row per authentication event and one per staff action.

Rows are written once and never changed: `save()` refuses an update, `delete()` refuses, and the admin offers
neither. Only the retention job (services.audit_records_delete_expired) removes rows, in bulk, by age.
This app imports nothing of the product, so every app can write to it.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

UNKNOWN_ACCOUNT = "(unknown)"


class AppendOnlyError(Exception):
    """An audit record was about to be changed or deleted."""


class AppendOnlyModel(models.Model):
    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only.")


class AuthEvent(AppendOnlyModel):
    """One authentication event: who (the account the typed name resolved to), from where, what happened."""

    class Kind(models.TextChoices):
        LOGIN = "login", "Password accepted"
        LOGIN_FAILED = "login_failed", "Wrong user name or password"
        LOCKED_OUT = "locked_out", "Locked out (too many failures)"
        SECOND_FACTOR = "second_factor", "Second factor accepted"
        SECOND_FACTOR_FAILED = "second_factor_failed", "Wrong second-factor code"
        LOGOUT = "logout", "Logged out"
        SESSION_ENDED = "session_ended", "Session ended"
        PASSWORD_CHANGED = "password_changed", "Password changed"
        MFA_ENROLLED = "mfa_enrolled", "Second factor set up"
        MFA_RESET = "mfa_reset", "Second factor removed"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=24, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The account's user name at the time, or "(unknown)" when the typed name names no account.
    username = models.CharField(max_length=150)
    # For "(unknown)": a keyed hash (HMAC with SECRET_KEY) of what was typed, so repeated tries of one name can
    # be told apart without storing a password someone typed into the name box.
    typed_fingerprint = models.CharField(max_length=16, blank=True)
    ip_address = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    detail = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["kind", "-at"], name="authevent_kind_idx"),
            models.Index(fields=["username", "-at"], name="authevent_username_idx"),
            models.Index(fields=["ip_address", "-at"], name="authevent_ip_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.username} from {self.ip_address}"


class StaffAction(AppendOnlyModel):
    """One change a staff member made: who, when, what, to which object, and before/after where known."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The actor's user name at the time ("" for a management command run on a shell).
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=100, help_text="e.g. staff.role_changed, or the view's name")
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip_address = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["action", "-at"], name="staffaction_action_idx"),
            models.Index(fields=["actor_name", "-at"], name="staffaction_actor_idx"),
            models.Index(fields=["object_type", "object_id"], name="staffaction_object_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or 'shell'} {self.action} {self.object_repr}"
