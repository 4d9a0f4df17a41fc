"""Sending a holder the link to their pass page, to the address the member has on file.

One small function (`pass_link_send`) on purpose: the delivery app (email and SMS with message records,
suppression lists and rates) is being built beside this one; at merge this function is the one place to
route through it. Until then email goes out with Django's `send_mail` and SMS is not available, so a holder
who has only a phone number on file is told how to reach the issuer instead (`contact_help`).
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.core.mail import send_mail
from django.utils import translation
from django.utils.translation import gettext as _

from .. import selectors
from ..models import Member
from . import MemberError

logger = logging.getLogger(__name__)

EMAIL, SMS = "email", "sms"
_WINDOW_SECONDS = 3600


class PassLinkNotSent(MemberError):
    """The link was not sent; `reason`: "rate_limited", "no_address", "unavailable" or "failed"."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def pass_link_channels() -> dict[str, bool]:
    """Which channels can send a pass link now. SMS arrives with the delivery app."""
    return {EMAIL: True, SMS: False}


@dataclass(frozen=True)
class PassLinkAddresses:
    """Where a member's pass link could go, as stored (never as a holder typed it), and masked for a page."""

    email: str
    phone: str

    @property
    def email_masked(self) -> str:
        return mask_email(self.email)

    @property
    def phone_masked(self) -> str:
        return mask_phone(self.phone)


def pass_link_addresses(*, member: Member) -> PassLinkAddresses:
    """The member's email address and phone number on file: the normalised copies the member keeps, else its
    External ID when that is one (a member adopted or backfilled by autofill)."""
    email, phone = member.email, member.phone
    external_id = member.external_id or ""
    if not email and "@" in external_id:
        email = external_id
    if not phone and external_id.startswith("+") and external_id[1:].isdigit():
        phone = external_id
    return PassLinkAddresses(email=email, phone=phone)


def mask_email(address: str) -> str:
    """`jon@example.is` → `j•••@example.is`: enough to recognise one's own address, not to learn someone's."""
    local, _at, domain = address.rpartition("@")
    return f"{local[:1]}•••@{domain}" if local else ""


def mask_phone(number: str) -> str:
    """`+3548581235` → `•••• 1235`."""
    digits = [ch for ch in number if ch.isdigit()]
    return f"•••• {''.join(digits[-4:])}" if len(digits) >= 4 else ""


def contact_help_for(*, member: Member) -> str:
    """How the holder reaches the issuer: the template's text, else the site's (HOLDER_CONTACT_HELP)."""
    setting = selectors.autofill_setting_for(template=member.template)
    return setting.contact_help or settings.HOLDER_CONTACT_HELP


def pass_link_send(*, member: Member, channel: str, pass_url: str, language: str) -> str:
    """Send `pass_url` (the member's pass page) to the member's address on file for `channel`, worded in
    `language`; returns the masked address it went to. At most PASS_LINK_SENDS_PER_HOUR sends an hour per
    member and, separately, per address (one person with passes on several templates). Raises PassLinkNotSent.
    """
    addresses = pass_link_addresses(member=member)
    address = addresses.email if channel == EMAIL else addresses.phone if channel == SMS else ""
    if not address:
        raise PassLinkNotSent("no_address")
    if not pass_link_channels().get(channel):
        raise PassLinkNotSent("unavailable")
    limit = settings.PASS_LINK_SENDS_PER_HOUR
    if not (_allowed(f"member:{member.pk}", limit) and _allowed(f"{channel}:{address}", limit)):
        raise PassLinkNotSent("rate_limited")
    with translation.override(language):
        subject = _("Your pass: %(name)s") % {"name": member.template.name}
        body = _(
            "Open your pass here:\n%(url)s\n\n"
            "Someone asked for this link on the sign-up page of %(name)s. If it was not you, you can ignore this "
            "message: the pass was not shown to them."
        ) % {"url": pass_url, "name": member.template.name}
    try:
        send_mail(subject, body, None, [address], fail_silently=False)
    except (OSError, smtplib.SMTPException) as exc:
        logger.warning("Pass link of member %s not sent by %s: %s", member.pk, channel, exc)
        raise PassLinkNotSent("failed") from exc
    logger.info("Pass link of member %s sent by %s", member.pk, channel)
    return addresses.email_masked if channel == EMAIL else addresses.phone_masked


def _allowed(key: str, limit: int) -> bool:
    """One more send under `key` in this hour's window, if fewer than `limit` were made (the shared cache)."""
    # Hashed: the cache holds no address.
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    window_key = f"pass-link-send:{digest}:{int(time.time() // _WINDOW_SECONDS)}"
    cache.add(window_key, 0, _WINDOW_SECONDS + 60)
    try:
        count = cache.incr(window_key)
    except ValueError:  # expired between add and incr
        cache.set(window_key, 1, _WINDOW_SECONDS + 60)
        count = 1
    return count <= limit
