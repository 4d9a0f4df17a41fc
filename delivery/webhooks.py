"""The providers' webhooks (public, no login, no CSRF token: each proves itself by its signature).

Twilio signs every request with X-Twilio-Signature: HMAC-SHA1, keyed by the account's auth token, of the URL it
called followed by the POST parameters sorted by name (delivery.sms.twilio_signature). The URL is the portal's
PUBLIC_BASE_URL and the path, as the status callback we send names it and as docs/operations.md tells operators
to configure the inbound one. django-anymail's own webhook views (anymail/…) check ANYMAIL_WEBHOOK_SECRET
and send the tracking signal delivery.receivers records.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseNotFound
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import services, sms
from .models import SMS, Message, Suppression

logger = logging.getLogger(__name__)

# Twilio's default opt-out and opt-in keywords (it answers them itself; the portal keeps the list in step).
STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
START_WORDS = {"START", "UNSTOP", "YES"}
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _twilio_verified(request: HttpRequest) -> bool:
    if not settings.SMS_URL:
        return False
    account = sms.parse_sms_url(settings.SMS_URL)
    url = settings.PUBLIC_BASE_URL + request.get_full_path()
    params = {key: request.POST.get(key, "") for key in request.POST}
    return sms.twilio_signature_valid(account.auth_token, url, params, request.headers.get("X-Twilio-Signature", ""))


def _refused(request: HttpRequest) -> HttpResponse:
    if not settings.SMS_URL:
        return HttpResponseNotFound("SMS is not set up.")
    logger.warning("Twilio webhook %s: the signature does not match; refused", request.path)
    return HttpResponseForbidden("Signature does not match.")


@csrf_exempt
@login_not_required
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    """Twilio's status callback: delivered, or undelivered/failed with its error code."""
    if not _twilio_verified(request):
        return _refused(request)
    state, code = request.POST.get("MessageStatus", ""), request.POST.get("ErrorCode", "")
    if state == "delivered":
        services.provider_status_record(
            provider_id=request.POST.get("MessageSid", ""), status=Message.DELIVERED, channel=SMS
        )
    elif state in ("undelivered", "failed"):
        reason = f"The mobile network could not deliver it (Twilio error {code or 'without a code'})."
        services.provider_status_record(
            provider_id=request.POST.get("MessageSid", ""), status=Message.FAILED, reason=reason, channel=SMS
        )
    return HttpResponse(status=204)


@csrf_exempt
@login_not_required
@require_POST
def twilio_inbound(request: HttpRequest) -> HttpResponse:
    """A holder's reply: STOP (and Twilio's other opt-out words) puts the number on the suppression list;
    START takes an opt-out off again. Anything else is ignored (the portal reads no replies)."""
    if not _twilio_verified(request):
        return _refused(request)
    word = request.POST.get("Body", "").strip().upper().rstrip(".!")
    sender = request.POST.get("From", "")
    if word in STOP_WORDS and sender:
        services.suppression_add(channel=SMS, address=sender, reason=Suppression.OPT_OUT, detail=f"Replied {word}")
        logger.info("An SMS holder opted out")
    elif word in START_WORDS and sender:
        services.suppression_opt_in(channel=SMS, address=sender)
    return HttpResponse(EMPTY_TWIML, content_type="text/xml")
