"""The second step of a staff login: the second factor, and setting one up at the first login.

Reached with a password-checked session that has not passed a second factor (SecondFactorRequiredMiddleware
sends every staff page there). A wrong code is a failed login to django-axes (user_login_failed, marked as a
second-factor failure), so codes and passwords share one lock-out budget per account and per address.
"""

import time
from base64 import b32encode

from axes.handlers.proxy import AxesProxyHandler
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login
from django_otp.plugins.otp_static.models import StaticDevice

from audit.models import AuthEvent
from audit.services import auth_event_record
from links.qr import qr_svg

from . import services
from .login_throttle import locked_out_response
from .receivers import SESSION_LOGIN_AT


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=32,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "text", "autofocus": True}),
    )


def second_factor_exempt(view):
    view.second_factor_exempt = True
    return view


def _next_url(request: HttpRequest) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    allowed = url_has_allowed_host_and_scheme(candidate, {request.get_host()}, require_https=request.is_secure())
    return candidate if allowed and candidate.startswith("/") else reverse(settings.LOGIN_REDIRECT_URL)


def _credentials(request: HttpRequest) -> dict:
    return {"username": request.user.get_username()}


def _locked_out(request: HttpRequest) -> HttpResponse:
    """The lock-out page; the half-logged-in session is dropped, so the next try starts at the password."""
    credentials = _credentials(request)
    request.session.flush()
    request.user = AnonymousUser()
    return locked_out_response(request, None, credentials)


def _wrong_code(request: HttpRequest) -> None:
    # Counted by axes (its receiver) and recorded as a second-factor failure (audit's receiver).
    credentials = {**_credentials(request), "second_factor": True}
    user_login_failed.send(sender=__name__, credentials=credentials, request=request)


@second_factor_exempt
@require_http_methods(["GET", "POST"])
def second_factor_verify(request):
    user = request.user
    if user.is_verified() or not services.second_factor_needed(user=user):
        return redirect(_next_url(request))
    if not services.second_factor_enrolled(user=user):
        return redirect(f"{reverse('second_factor_enrol')}?{request.GET.urlencode()}")
    form = CodeForm(request.POST or None)
    if request.method == "POST":
        if AxesProxyHandler.is_locked(request, _credentials(request)):
            return _locked_out(request)
        device = services.second_factor_verify(user=user, token=form.data.get("code", ""))
        if device is not None:
            otp_login(request, device)
            request.session.cycle_key()
            used = "recovery code" if isinstance(device, StaticDevice) else "authenticator app"
            auth_event_record(kind=AuthEvent.Kind.SECOND_FACTOR, request=request, user=user, detail=used)
            return redirect(_next_url(request))
        _wrong_code(request)
        if getattr(request, "axes_locked_out", False):
            return _locked_out(request)
        form.is_valid()
        form.add_error("code", "That code is not right. Type the 6 digits your app shows now, or a recovery code.")
    context = {"form": form, "next": _next_url(request)}
    return render(request, "registration/second_factor_verify.html", context, status=400 if form.errors else 200)


@second_factor_exempt
@require_http_methods(["GET", "POST"])
def second_factor_enrol(request):
    user = request.user
    if services.second_factor_enrolled(user=user):
        return redirect(f"{reverse('second_factor_verify')}?{request.GET.urlencode()}")
    device = services.second_factor_enrolment_start(user=user)
    form = CodeForm(request.POST or None)
    if request.method == "POST":
        if AxesProxyHandler.is_locked(request, _credentials(request)):
            return _locked_out(request)
        codes = services.second_factor_enrolment_confirm(user=user, token=form.data.get("code", ""), request=request)
        if codes is not None:
            device.refresh_from_db()
            otp_login(request, device)
            request.session.cycle_key()
            context = {"codes": codes, "next": _next_url(request)}
            return render(request, "registration/recovery_codes.html", context)
        _wrong_code(request)
        if getattr(request, "axes_locked_out", False):
            return _locked_out(request)
        form.is_valid()
        form.add_error("code", "That code is not right. Type the 6 digits your app shows now.")
    secret = b32encode(device.bin_key).decode()
    context = {
        "form": form,
        "next": _next_url(request),
        "qr": qr_svg(device.config_url, scale=5, title="Set-up QR code"),
        "secret": secret,
        "secret_groups": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        "issuer": settings.OTP_TOTP_ISSUER,
        "account": user.get_username(),
        "mfa_required": settings.MFA_REQUIRED,
    }
    return render(request, "registration/second_factor_enrol.html", context, status=400 if form.errors else 200)


@login_not_required
def admin_login(request):
    """The admin's login is the portal's: one password step, one second factor, one lock-out."""
    query = request.GET.urlencode(safe="/")
    return redirect(f"{reverse('login')}{'?' + query if query else ''}")


# --- one's own account ----------------------------------------------------------------------------------------
@require_http_methods(["GET"])
def account(request):
    context = {"enrolled": services.second_factor_enrolled(user=request.user), "mfa_required": settings.MFA_REQUIRED}
    return render(request, "registration/account.html", context)


@require_http_methods(["POST"])
def recovery_codes_new(request):
    """Ten fresh recovery codes, shown once; the old ones stop working."""
    if not services.second_factor_enrolled(user=request.user):
        return redirect("account")
    codes = services.recovery_codes_issue(user=request.user)
    auth_event_record(kind=AuthEvent.Kind.MFA_ENROLLED, request=request, user=request.user, detail="new recovery codes")
    return render(request, "registration/recovery_codes.html", {"codes": codes, "next": reverse("account")})


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change. Every other session of the account ends (portal.receivers); this one goes on."""

    template_name = "registration/password_change.html"
    success_url = reverse_lazy("account")

    def form_valid(self, form):
        response = super().form_valid(form)
        # The account's sessions were ended as of now; this session counts as logged in from now on.
        self.request.session[SESSION_LOGIN_AT] = time.time() + 0.001
        messages.success(self.request, "Your password is changed. Your other sessions have ended.")
        return response
