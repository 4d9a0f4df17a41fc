"""The client's address, for the login and claim rate limits.

Behind the TLS proxy production needs, REMOTE_ADDR is the proxy's own address, and every holder and every
staff member would share one rate-limit bucket. CLIENT_IP_HEADER names the header the proxy sets (for
example `X-Real-IP`, or `X-Forwarded-For`, of which the last address is the one our proxy appended and so
the only one a client cannot forge). Unset, or the header absent: REMOTE_ADDR.
"""

from django.conf import settings


def client_ip(request) -> str:
    header = settings.CLIENT_IP_HEADER
    if header:
        value = request.META.get("HTTP_" + header.upper().replace("-", "_"), "")
        last = value.split(",")[-1].strip()
        if last:
            return last
    return request.META.get("REMOTE_ADDR") or "unknown"
