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


# --- staff management by admins -------------------------------------------------------------------------------
class StaffChangeRefused(Exception):
    """A staff change the rules forbid; the message is for the admin who asked."""


def _active_admins():
    return get_user_model().objects.filter(is_active=True, groups__name=ADMIN)


def _guard(*, actor, user, removes_admin: bool, what: str) -> None:
    """Nobody changes their own role or account here, and the last active admin stays one."""
    if actor is not None and actor.pk == user.pk:
        raise StaffChangeRefused(f"You cannot {what} your own account; ask another admin.")
    if removes_admin:
        # Lock the admin group's row: two admins demoting each other at once cannot both pass this count.
        Group.objects.select_for_update().get(name=ADMIN)
        if user.is_active and _active_admins().filter(pk=user.pk).exists() and _active_admins().count() <= 1:
            raise StaffChangeRefused(f"{user.get_username()} is the last active admin: make another admin first.")


def _staff_state(user) -> dict:
    return {"role": _role_of(user), "active": user.is_active, "email": user.email}


@transaction.atomic
def staff_role_change(*, user, role: str, actor, request: HttpRequest | None = None) -> None:
    """Put `user` in `role` (their sessions end: portal.receivers), recorded with before and after."""
    if role not in ROLES:
        raise StaffChangeRefused(f"The role must be one of: {', '.join(ROLES)}.")
    before = _staff_state(user)
    if before["role"] == role:
        return
    _guard(actor=actor, user=user, removes_admin=before["role"] == ADMIN, what="change the role of")
    user.groups.set([Group.objects.get(name=role)])
    user.is_staff = role in (MANAGER, ADMIN)
    user.save(update_fields=["is_staff"])
    staff_action_record(
        actor=actor, action="staff.role_changed", target=user, before=before, after=_staff_state(user), request=request
    )


@transaction.atomic
def staff_active_set(*, user, active: bool, actor, request: HttpRequest | None = None) -> None:
    """Disable (every open session is refused at its next request) or enable an account, recorded."""
    before = _staff_state(user)
    if user.is_active == active:
        return
    if not active:
        _guard(actor=actor, user=user, removes_admin=True, what="disable")
    user.is_active = active
    user.save(update_fields=["is_active"])
    staff_sessions_end(user=user)
    staff_action_record(
        actor=actor,
        action="staff.enabled" if active else "staff.disabled",
        target=user,
        before=before,
        after=_staff_state(user),
        request=request,
    )


@transaction.atomic
def staff_invite(*, username: str, email: str, role: str, actor, request: HttpRequest | None = None):
    """A new account in `role` with no usable password, and an email to `email` with a one-time link to set one.

    The link is Django's password-reset token: it stops working once a password is set (the token covers the
    password hash) and after PASSWORD_RESET_TIMEOUT seconds. It is never logged or recorded.
    """
    from django.contrib.auth.tokens import default_token_generator
    from django.core.mail import send_mail
    from django.urls import reverse
    from django.utils.encoding import force_bytes
    from django.utils.http import urlsafe_base64_encode

    user_model = get_user_model()
    username = username.strip()
    if role not in ROLES:
        raise StaffChangeRefused(f"The role must be one of: {', '.join(ROLES)}.")
    if user_model.objects.filter(username__iexact=username).exists():
        raise StaffChangeRefused(f"There is already an account named {username}.")
    sync_role_permissions()
    user = user_model(username=username, email=user_model.objects.normalize_email(email))
    user.set_unusable_password()
    user.is_staff = role in (MANAGER, ADMIN)
    user.save()
    user.groups.set([Group.objects.get(name=role)])
    link = settings.PUBLIC_BASE_URL + reverse(
        "staff_set_password",
        kwargs={
            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": default_token_generator.make_token(user),
        },
    )
    hours = settings.PASSWORD_RESET_TIMEOUT // 3600
    inviter = actor.get_username() if actor is not None else "An administrator"
    body = (
        f"{inviter} invited you to SmartPass Portal as {role} (user name: {username}).\n\n"
        f"Choose your password here (the link works once, for {hours} hours):\n{link}\n\n"
        + (
            "At your first login you will set up a second factor with an authenticator app.\n"
            if settings.MFA_REQUIRED
            else ""
        )
    )
    send_mail("Your SmartPass Portal account", body, None, [user.email])
    staff_action_record(
        actor=actor, action="staff.invited", target=user, before=None, after=_staff_state(user), request=request
    )
    return user
