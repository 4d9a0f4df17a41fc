"""Writes of the portal itself: staff accounts in a role, their second factor, and their sessions."""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django_otp import devices_for_user
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AuthEvent
from audit.services import auth_event_record, staff_action_record

from .models import StaffAccount
from .roles import ADMIN, MANAGER, ROLES, sync_role_permissions

__all__ = ["ROLES", "StaffAccountSaved", "staff_account_save"]


@dataclass(frozen=True)
class StaffAccountSaved:
    user: AbstractBaseUser
    created: bool


def _role_of(user) -> str | None:
    names = {group.name for group in user.groups.all()}
    return next((role for role in reversed(ROLES) if role in names), None)


@transaction.atomic
def staff_account_save(
    *, username: str, role: str, email: str | None = None, password: str | None = None, actor=None
) -> StaffAccountSaved:
    """Make or update a staff account in exactly one role (viewer, manager or admin), never a superuser.

    A new account needs a password; an existing one keeps its own when `password` is None. The password must
    pass AUTH_PASSWORD_VALIDATORS (django.core.exceptions.ValidationError otherwise, nothing saved).
    The account is (re)activated, and managers and admins may also open the Django admin (is_staff). A changed
    role ends the account's sessions (portal.receivers) and is recorded in the staff action log.
    """
    if role not in ROLES:
        raise ValueError(f"The role must be one of: {', '.join(ROLES)}.")
    sync_role_permissions()  # the groups exist even before the first migrate signal of a fresh database
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    created = user is None
    before = None if created else {"role": _role_of(user), "active": user.is_active, "email": user.email}
    if created:
        if password is None:
            raise ValueError(f"{username} is a new account: it needs a password.")
        user = user_model(username=username)
    if email is not None:
        user.email = user_model.objects.normalize_email(email)
    if password is not None:
        password_validation.validate_password(password, user=user)
        user.set_password(password)
    user.is_active = True
    user.is_staff = role in (MANAGER, ADMIN)
    user.save()
    user.groups.set([Group.objects.get(name=role)])
    after = {"role": role, "active": True, "email": user.email}
    if before != after or password is not None:
        staff_action_record(
            actor=actor,
            action="staff.created" if created else "staff.updated",
            target=user,
            before=before,
            after={**after, **({"password": "changed"} if password is not None and not created else {})},
        )
    return StaffAccountSaved(user=user, created=created)


def staff_sessions_end(*, user) -> None:
    """End every session of `user` now: each is refused at its next request (whatever the session backend)."""
    StaffAccount.objects.update_or_create(user=user, defaults={"sessions_valid_from": timezone.now()})


# --- the second factor (django-otp) ---------------------------------------------------------------------------
def second_factor_enrolled(*, user) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def second_factor_needed(*, user) -> bool:
    """With MFA_REQUIRED every staff login needs it; without, only people who set one up are asked."""
    return settings.MFA_REQUIRED or second_factor_enrolled(user=user)


def second_factor_enrolment_start(*, user) -> TOTPDevice:
    """The unconfirmed authenticator of `user`: made once, so reloading the page shows the same secret."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    return device or TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)


@transaction.atomic
def second_factor_enrolment_confirm(*, user, token: str, request: HttpRequest | None = None) -> list[str] | None:
    """Confirm the unconfirmed authenticator with a code from it. Returns the new one-time recovery codes (to be
    shown once), or None for a wrong code. Any earlier authenticator and recovery codes are replaced."""
    device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).order_by("pk").first()
    if device is None or not device.verify_token(_digits(token)):
        return None
    TOTPDevice.objects.filter(user=user, confirmed=True).delete()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    codes = recovery_codes_issue(user=user)
    auth_event_record(kind=AuthEvent.Kind.MFA_ENROLLED, request=request, user=user, detail="authenticator app")
    return codes


def recovery_codes_issue(*, user) -> list[str]:
    """MFA_RECOVERY_CODES fresh one-time codes, replacing any earlier ones (stored as django-otp static tokens)."""
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name="Recovery codes", confirmed=True)
    codes = [StaticToken.random_token() for _ in range(settings.MFA_RECOVERY_CODES)]
    StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
    return codes


def second_factor_verify(*, user, token: str):
    """The device that accepts `token` (an authenticator code, or a recovery code, used up), or None."""
    token = token.strip().replace(" ", "").lower()
    if not token:
        return None
    with transaction.atomic():
        for device in devices_for_user(user, confirmed=True, for_verify=True):
            candidate = _digits(token) if isinstance(device, TOTPDevice) else token
            if device.verify_token(candidate):
                return device
    return None


def _digits(token: str) -> str:
    return "".join(ch for ch in token if ch.isdigit())


@transaction.atomic
def second_factor_reset(*, user, actor=None, request: HttpRequest | None = None, via: str = "") -> int:
    """Remove every second factor of `user` (they set one up again at their next login) and end their sessions."""
    devices = list(devices_for_user(user, confirmed=None))
    for device in devices:
        device.delete()
    removed = len(devices)
    staff_sessions_end(user=user)
    auth_event_record(kind=AuthEvent.Kind.MFA_RESET, request=request, user=user, detail=via)
    staff_action_record(
        actor=actor,
        action="staff.second_factor_reset",
        target=user,
        before={"devices": removed},
        after={"devices": 0},
        request=request,
    )
    return removed
