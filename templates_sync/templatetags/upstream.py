"""Template filters for values that come from SmartPages, which the portal does not control."""

from urllib.parse import urlsplit

from django import template

register = template.Library()


@register.filter
def http_url(value) -> str:
    """`value` when it is an http(s) URL, else "": only those may become links (an upstream
    `javascript:` or `data:` URL shown as a link would run in the staff member's session)."""
    text = str(value or "").strip()
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return ""
    return text if parts.scheme.lower() in ("http", "https") and parts.netloc else ""
