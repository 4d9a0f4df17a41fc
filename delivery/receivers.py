"""django-anymail's tracking signal: an email service's webhook (authenticated by anymail with
ANYMAIL_WEBHOOK_SECRET) reports delivered, bounced or complained for a message it knows by its id."""

from __future__ import annotations

from anymail.signals import tracking
from django.dispatch import receiver

from . import services
from .models import EMAIL, Message, Suppression

# anymail's normalised event types → (the message's status, the suppression it causes)
_EVENTS = {
    "delivered": (Message.DELIVERED, None),
    "bounced": (Message.BOUNCED, Suppression.HARD_BOUNCE),
    "rejected": (Message.BOUNCED, Suppression.HARD_BOUNCE),
    "complained": (Message.COMPLAINED, Suppression.COMPLAINT),
    "failed": (Message.FAILED, None),
}


@receiver(tracking, dispatch_uid="delivery.anymail_tracking")
def anymail_tracking_record(sender, event, esp_name, **kwargs) -> None:
    if event.event_type == "unsubscribed" and event.recipient:  # the service's own unsubscribe link
        services.suppression_add(channel=EMAIL, address=event.recipient, reason=Suppression.OPT_OUT, detail=esp_name)
        return
    status, suppress = _EVENTS.get(event.event_type, (None, None))
    if status is None:
        return
    esp_event = event.esp_event if isinstance(event.esp_event, dict) else {}
    if status == Message.BOUNCED and "soft" in str(esp_event.get("Type", "")).lower():
        suppress = None  # a full mailbox: the message bounced, the address may take the next one
    reason = {
        Message.DELIVERED: "",
        Message.BOUNCED: f"Bounced ({esp_name}): {event.description or event.reject_reason or 'refused'}",
        Message.COMPLAINED: f"The holder reported it as spam ({esp_name}).",
        Message.FAILED: f"{esp_name} could not send it: {event.description or ''}",
    }[status]
    services.provider_status_record(
        provider_id=str(event.message_id or ""), status=status, reason=reason[:500], suppress=suppress, channel=EMAIL
    )
