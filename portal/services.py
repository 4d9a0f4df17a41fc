"""Writes of the portal itself: staff accounts in a role."""

from dataclasses import dataclass

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import transaction

from .roles import MANAGER, VIEWER, sync_role_permissions

ROLES = (VIEWER, MANAGER)


@dataclass(frozen=True)
class StaffAccountSaved:
    user: AbstractBaseUser
    created: bool


@transaction.atomic
def staff_account_save(
    *, username: str, role: str, email: str | None = None, password: str | None = None
) -> StaffAccountSaved:
    """Make or update a staff account in exactly one role (viewer or manager), never a superuser.

    A new account needs a password; an existing one keeps its own when `password` is None. The password must
    pass AUTH_PASSWORD_VALIDATORS (django.core.exceptions.ValidationError otherwise, nothing saved).
    The account is (re)activated, and managers may also open the Django admin (is_staff).
    """
    if role not in ROLES:
        raise ValueError(f"The role must be one of: {', '.join(ROLES)}.")
    sync_role_permissions()  # the groups exist even before the first migrate signal of a fresh database
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    created = user is None
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
    user.is_staff = role == MANAGER
    user.save()
    user.groups.set([Group.objects.get(name=role)])
    return StaffAccountSaved(user=user, created=created)
