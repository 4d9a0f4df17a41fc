"""What django-axes needs from the portal to throttle logins (settings.py wires these in by name).

Axes sits in the authentication layer, so the portal's login and the admin's are counted alike, and only
failed attempts count: staff who log in correctly ten times are never locked out.
"""

import unicodedata

from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def throttled_username(request: HttpRequest, credentials: dict | None) -> str | None:
    """The name a failure is counted against: " view", "VIEW" and full-width "ｖｉｅｗ" share one budget."""
    name = (credentials or {}).get("username") or request.POST.get("username")
    if name is None:
        return None
    return unicodedata.normalize("NFKC", name.strip()).casefold()


def locked_out_response(request: HttpRequest, original_response, credentials: dict | None) -> HttpResponse:
    """The login page again, saying why, with 429, even when the locked-out form was the admin's."""
    form = AuthenticationForm(request, initial={"username": (credentials or {}).get("username", "")})
    context = {"form": form, "throttled": True, "next": request.POST.get("next") or request.GET.get("next", "")}
    return render(request, "registration/login.html", context, status=429)


def client_str(username: str | None, ip_address: str, user_agent: str, path_info, request: HttpRequest) -> str:
    """How axes names a client in its log lines: the account and the address, as the sign-in records keep them
    (axes' default is asterisks). A name that names no account is "(unknown)" with the records' fingerprint."""
    from audit.models import UNKNOWN_ACCOUNT
    from audit.services import account_for_typed_name, typed_name_fingerprint

    typed = (request.POST.get("username") if request is not None else None) or username or ""
    account = account_for_typed_name(typed)
    name = account.get_username() if account is not None else f"{UNKNOWN_ACCOUNT} {typed_name_fingerprint(typed)}"
    path = path_info[0] if isinstance(path_info, (list, tuple)) else path_info
    return f'{{account: "{name}", ip_address: "{ip_address}", path: "{path}"}}'
