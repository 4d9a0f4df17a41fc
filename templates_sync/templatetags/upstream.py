"""Template filters for values that come from SmartPages, which the portal does not control."""

import json
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


@register.filter
def as_json(value) -> str:
    """An upstream object as indented JSON, as SmartPages wrote it (not Python's repr: null, not None). The
    template escapes it like any other text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
