"""Staff pages are never stored by a browser or a proxy; staff sessions end on time; the second factor is asked.

Member pages, member exports and link downloads carry holders' personal data and bearer links; a shared
computer's cache or back button must not keep them after the staff member logs out. Every page a logged-in
user gets is private and no-store unless its view chose its own caching (the public claim page does: it
must be re-posted from the back button with the same nonce).
"""

import time

from django.contrib import messages
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.views import redirect_to_login
from django.urls import reverse
from django.utils.cache import patch_cache_control

from audit.models import AuthEvent
from audit.services import auth_event_record

from . import services
from .models import StaffAccount


class StaffPagesNotStoredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.user.is_authenticated and not response.has_header("Cache-Control"):
            patch_cache_control(response, private=True, no_store=True)
        return response


class StaffSessionLifetimeMiddleware:
    """Ends a staff session that has been idle for SESSION_IDLE_SECONDS, is older than SESSION_MAX_SECONDS, or
    began before its account's sessions were ended (password, role or account change; second factor reset).

    The ended session is flushed and the request goes on as anonymous, so the login wall sends the person to
    the login page, which says why. The last-seen time is written at most every minute (or a tenth of the idle
    limit), not on every request.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            self._check(request)
        elif SESSION_KEY in request.session:
            # Django refuses the login of a disabled account but keeps its session: end it here.
            self._end(request, user=None, reason="the account is disabled")
        return self.get_response(request)

    def _end(self, request, *, user, reason: str) -> None:
        if user is None:
            user = get_user_model()._default_manager.filter(pk=request.session.get(SESSION_KEY)).first()
        auth_event_record(kind=AuthEvent.Kind.SESSION_ENDED, request=request, user=user, detail=reason)
        request.session.flush()
        request.user = AnonymousUser()
        messages.info(request, "Your session has ended. Please log in again.")

    def _check(self, request) -> None:
        from django.conf import settings

        from .receivers import SESSION_LOGIN_AT, SESSION_SEEN_AT

        now = time.time()
        session = request.session
        login_at = session.setdefault(SESSION_LOGIN_AT, now)
        seen_at = session.get(SESSION_SEEN_AT, login_at)
        reason = ""
        if now - seen_at > settings.SESSION_IDLE_SECONDS:
            reason = f"idle for more than {settings.SESSION_IDLE_SECONDS} seconds"
        elif now - login_at > settings.SESSION_MAX_SECONDS:
            reason = f"older than {settings.SESSION_MAX_SECONDS} seconds"
        else:
            ended = StaffAccount.objects.filter(user_id=request.user.pk).values_list("sessions_valid_from", flat=True)
            cutoff = next(iter(ended), None)
            if cutoff is not None and cutoff.timestamp() > login_at:
                reason = "ended by a change to the account"
        if reason:
            self._end(request, user=request.user, reason=reason)
        elif now - seen_at > min(60, settings.SESSION_IDLE_SECONDS / 10):
            session[SESSION_SEEN_AT] = now


class SecondFactorRequiredMiddleware:
    """A login is not enough where a second factor is needed (MFA_REQUIRED, or the person set one up): until the
    session passes it, every page that needs a login — the admin's included — sends the person to the
    second-factor page (or, with none set up yet, to enrolment). Public pages and the sign-in pages
    (marked `second_factor_exempt`) stay open."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not request.user.is_authenticated or request.user.is_verified():
            return None
        if not getattr(view_func, "login_required", True) or getattr(view_func, "second_factor_exempt", False):
            return None
        if not services.second_factor_needed(user=request.user):
            return None
        step = "second_factor_verify" if services.second_factor_enrolled(user=request.user) else "second_factor_enrol"
        return redirect_to_login(request.get_full_path(), login_url=reverse(step))
