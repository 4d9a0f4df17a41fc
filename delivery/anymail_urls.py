"""django-anymail's webhook URLs (anymail/<esp>/tracking/), public: the staff-login middleware lets them
through, and anymail itself checks ANYMAIL_WEBHOOK_SECRET (HTTP basic auth) on every request."""

from anymail import urls as anymail_urls
from django.contrib.auth.decorators import login_not_required
from django.urls import URLPattern

app_name = "anymail"
urlpatterns = [
    URLPattern(pattern.pattern, login_not_required(pattern.callback), pattern.default_args, pattern.name)
    for pattern in anymail_urls.urlpatterns
]
