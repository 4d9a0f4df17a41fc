"""Sending a holder the link to their pass, to the address the member has on file, through the outbox
(delivery): email, or SMS where SMS_URL is set up; each send a message record under the member's subject key
(`member:<pk>:<n>`), shown on the member page. Where a channel is off, a holder who has only that address is
told how to reach the issuer instead (`contact_help`).

Three ways in: the holder's "send my pass" (`pass_link_send`, rate-limited per member and per address, sent in
the request so the page can say it went), and staff's "Send pass link again" on a member page or for ticked
members (`pass_links_queue`, queued for the workers at the channel's rate).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.utils import translation
from django.utils.translation import gettext as _

from delivery import services as delivery
from delivery.models import Message
from templates_sync.models import PassTemplate

from .. import selectors
from ..models import Member
from . import MemberError

logger = logging.getLogger(__name__)

EMAIL, SMS = "email", "sms"
VOIDED_NOT_SENT = "The pass is voided: its link would open a cancelled pass."
_WINDOW_SECONDS = 3600


class PassLinkNotSent(MemberError):
    """The link was not sent; `reason`: "rate_limited", "no_address", "unavailable", "undeliverable" (the address
    takes no messages from us: it bounced, complained or opted out, which only the issuer can sort out) or
    "failed" (this time)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def pass_link_channels() -> dict[str, bool]:
    """Which channels can send a pass link now (SMS only where SMS_URL is set up, or the DEBUG outbox)."""
    return {EMAIL: delivery.channel_available(EMAIL), SMS: delivery.channel_available(SMS)}


def member_subject_prefix(member_id: int) -> str:
    """The subject keys of a member's messages start with this (`member:42:`); the delivery app counts and
    lists them by it."""
    return f"member:{member_id}:"


def batch_row_subject_key(batch_id: int, row: int) -> str:
    """The subject key of the message that sent a batch row's link (`batch:7:row:15`): the links app sends it,
    and a member made from that row lists it among the messages to its holder."""
    return f"batch:{batch_id}:row:{row}"


def _subject_key(member_id: int) -> str:
    return f"{member_subject_prefix(member_id)}{uuid.uuid4().hex[:12]}"


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


def contact_help_for(*, template: PassTemplate) -> str:
    """How a holder reaches the template's issuer: the template's text, else the site's (HOLDER_CONTACT_HELP)."""
    setting = selectors.autofill_setting_for(template=template)
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
    spec = pass_link_message(member=member, channel=channel, address=address, url=pass_url, language=language)
    message = delivery.send_one_now(spec)
    if message.status in (Message.FAILED, Message.SKIPPED):
        logger.warning("Pass link of member %s not sent by %s: %s", member.pk, channel, message.reason)
        # Skipped: the address is suppressed (a hard bounce, a complaint, an SMS STOP, which the law says we keep
        # to) or not one we can send to. Trying again will not help; the holder is shown how to reach the issuer.
        raise PassLinkNotSent("undeliverable" if message.status == Message.SKIPPED else "failed")
    # Sent, or queued again after a transient failure (the workers try again in a moment).
    logger.info("Pass link of member %s sent by %s (%s)", member.pk, channel, message.status)
    return addresses.email_masked if channel == EMAIL else addresses.phone_masked


def pass_link_message(
    *, member: Member, channel: str, address: str, url: str, language: str, subject_key: str = ""
) -> delivery.MessageSpec:
    """The message that carries a member's pass link, worded in `language`: asked for by someone on the
    template's sign-up page (the holder's "send my pass", no `subject_key`), or sent by the issuer's staff."""
    with translation.override(language):
        name = member.template.name
        if channel == SMS:
            subject = ""
            text = _("Your pass %(name)s: %(url)s") % {"name": name, "url": url}
        elif subject_key:
            subject = _("Your pass: %(name)s") % {"name": name}
            text = _("Open your pass here:\n%(url)s\n\nThe issuer of %(name)s sent you this link.") % {
                "url": url,
                "name": name,
            }
        else:
            subject = _("Your pass: %(name)s") % {"name": name}
            text = _(
                "Open your pass here:\n%(url)s\n\n"
                "Someone asked for this link on the sign-up page of %(name)s. If it was not you, you can ignore "
                "this message: the pass was not shown to them."
            ) % {"url": url, "name": name}
    return delivery.MessageSpec(
        subject_key=subject_key or _subject_key(member.pk),
        channel=channel,
        to=address,
        subject=subject,
        text=text,
        language=language,
    )


def pass_links_queue(*, members: Iterable[Member], channels: tuple[str, ...], language: str) -> delivery.QueueResult:
    """Staff's "Send pass link again": each member's wallet link (from SmartPages) to the address on file, by
    the first of `channels` it has an address for; queued for the workers. Members without a link or an
    address, and voided ones, are listed in the result's `skipped` with the reason."""
    specs, result_skipped = [], []
    for member in members:
        key = _subject_key(member.pk)
        if member.status == Member.Status.VOIDED:
            result_skipped.append((key, VOIDED_NOT_SENT))
            continue
        if not member.distribution_url:
            result_skipped.append((key, "No pass link from SmartPages yet."))
            continue
        addresses = pass_link_addresses(member=member)
        channel = next((c for c in channels if (addresses.email if c == EMAIL else addresses.phone)), "")
        if not channel:
            result_skipped.append((key, "No address on file for " + " or ".join(channels) + "."))
            continue
        address = addresses.email if channel == EMAIL else addresses.phone
        specs.append(
            pass_link_message(
                member=member,
                channel=channel,
                address=address,
                url=member.distribution_url,
                language=language,
                subject_key=key,
            )
        )
    result = delivery.queue_messages(specs)
    result.skipped = result_skipped + result.skipped
    return result


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
