"""Sign-in events from Django's auth signals and django-axes' lock-out signal."""

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from .models import AuthEvent
from .services import auth_event_record


@receiver(user_logged_in, dispatch_uid="audit.logged_in")
def _logged_in(sender, request, user, **kwargs):
    auth_event_record(kind=AuthEvent.Kind.LOGIN, request=request, user=user)


@receiver(user_login_failed, dispatch_uid="audit.login_failed")
def _login_failed(sender, credentials, request=None, **kwargs):
    # The portal's second-factor step reports a wrong code through this same signal (so axes counts it toward
    # the same lock-out) and marks it.
    second_factor = bool(credentials.get("second_factor"))
    auth_event_record(
        kind=AuthEvent.Kind.SECOND_FACTOR_FAILED if second_factor else AuthEvent.Kind.LOGIN_FAILED,
        request=request,
        typed_username=credentials.get("username") or "",
    )


@receiver(user_logged_out, dispatch_uid="audit.logged_out")
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        auth_event_record(kind=AuthEvent.Kind.LOGOUT, request=request, user=user)


@receiver(user_locked_out, dispatch_uid="audit.locked_out")
def _locked_out(sender, request, username=None, ip_address=None, **kwargs):
    auth_event_record(kind=AuthEvent.Kind.LOCKED_OUT, request=request, typed_username=username or "")
