"""The signed one-click unsubscribe link every email carries (List-Unsubscribe, RFC 8058): it names the address
without a database lookup and cannot be forged for another address."""

from __future__ import annotations

from django.core import signing

_SALT = "delivery.unsubscribe"


def token_for(channel: str, address: str) -> str:
    return signing.dumps([channel, address.lower()], salt=_SALT, compress=True)


def address_from(token: str) -> tuple[str, str] | None:
    try:
        channel, address = signing.loads(token, salt=_SALT)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    return str(channel), str(address)
