"""What serving a claim costs before the claim does anything: the floor under `bench/claims.py --surge`.

Two WSGI applications answering the three requests of a claim as the surge's holders make them (open the link:
a page with the form's CSRF token and nonce and the CSRF cookie; press: POST, 302 to a pass page; the pass
page: 200 HTML), doing nothing else — no database, no upstream call, no template, no QR code:

- `django_floor`: the portal's own Django stack (production settings, every middleware: CSRF checked on the
  press, sessions, locale, security headers, WhiteNoise) with three views that only answer;
- `wsgi_floor`: plain WSGI, no Django: gunicorn and the holders' client alone.

Run by `bench/claims.py --surge --floor` (gunicorn `--pythonpath bench/floor claims_floor:django_floor`). If a
floor itself serves fewer claims per second than a goal asks for, no work inside the claim view can meet it
on that machine.
"""

import os
import secrets

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.decorators import login_not_required  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse, HttpResponseRedirect  # noqa: E402
from django.middleware.csrf import get_token  # noqa: E402
from django.urls import path  # noqa: E402

PAGE = '<!doctype html><html><body><form method="post">{}</form></body></html>'


@login_not_required
def claim(request, token):
    if request.method == "POST":  # CsrfViewMiddleware has checked the token and cookie by now
        return HttpResponseRedirect(f"/pass/{secrets.token_urlsafe(16)}/")
    fields = (
        f'<input type="hidden" name="csrfmiddlewaretoken" value="{get_token(request)}">'
        f'<input type="hidden" name="nonce" value="{secrets.token_urlsafe(16)}"><button>Get my pass</button>'
    )
    return HttpResponse(PAGE.format(fields))


@login_not_required
def pass_page(request, key):
    return HttpResponse("<!doctype html><html><body><p>Pass ID</p></body></html>")


@login_not_required
def healthz(request):
    return HttpResponse("ok")


urlpatterns = [
    path("p/<str:token>", claim),
    path("pass/<str:key>/", pass_page),
    path("healthz", healthz),
]
settings.ROOT_URLCONF = __name__
django_floor = get_wsgi_application()


def wsgi_floor(environ, start_response):
    method, route = environ["REQUEST_METHOD"], environ["PATH_INFO"]
    if route.startswith("/p/") and method == "POST":
        start_response("302 Found", [("Location", f"/pass/{secrets.token_urlsafe(16)}/"), ("Content-Length", "0")])
        return [b""]
    if route.startswith("/p/"):
        token = secrets.token_urlsafe(24)
        body = PAGE.format(
            f'<input type="hidden" name="csrfmiddlewaretoken" value="{token}">'
            f'<input type="hidden" name="nonce" value="{secrets.token_urlsafe(16)}">'
        ).encode()
        headers = [("Content-Type", "text/html"), ("Set-Cookie", f"csrftoken={token}; Path=/; Secure")]
    else:
        body = b"<!doctype html><html><body><p>Pass ID</p></body></html>" if route.startswith("/pass/") else b"ok"
        headers = [("Content-Type", "text/html")]
    start_response("200 OK", headers + [("Content-Length", str(len(body)))])
    return [body]
