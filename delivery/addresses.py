"""Whether an address can take a message on a channel, in the one form the outbox stores: a lower-cased email
address, or a mobile number in E.164 (PHONE_DEFAULT_REGION for numbers written without a country code)."""

from __future__ import annotations

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from .models import EMAIL

NOT_EMAIL = "Not an email address."
NOT_MOBILE = "Not a mobile phone number."


def normalise(channel: str, address: str) -> tuple[str, str]:
    """(normalised address, "") or ("", why it cannot take a message)."""
    address = (address or "").strip()
    if channel == EMAIL:
        try:
            validate_email(address)
        except ValidationError:
            return "", NOT_EMAIL
        local, _at, domain = address.rpartition("@")
        return f"{local}@{domain.lower()}".lower(), ""
    try:
        number = phonenumbers.parse(address, settings.PHONE_DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return "", NOT_MOBILE
    kind = phonenumbers.number_type(number)
    mobile = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
    if not phonenumbers.is_valid_number(number) or kind not in mobile:
        return "", NOT_MOBILE
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), ""
