"""The two ways a message leaves: email through Django's email framework (an SMTP relay from EMAIL_URL, or an
email service through django-anymail) and SMS through Twilio's Messages API (SMS_URL); in DEBUG without
either, both go to the local outbox (delivery.outbox). A transport lives for one worker's run of messages and
reuses its connection from one message to the next.

Every failure becomes a DeliveryFailure: a sentence for staff, whether it is worth trying again, and whether
the address should never be tried again (a refused address, an opt-out).
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import socket
from email.utils import make_msgid

from django.conf import settings
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.urls import reverse

from . import outbox, sms, unsubscribe
from .models import EMAIL, Message, Suppression

logger = logging.getLogger(__name__)


class DeliveryFailure(Exception):
    def __init__(self, reason: str, *, transient: bool, retry_after: float | None = None, suppress: str | None = None):
        super().__init__(reason)
        self.reason, self.transient, self.retry_after, self.suppress = reason, transient, retry_after, suppress


class EmailTransport:
    """Django's configured email backend (EMAIL_BACKEND), one connection for the whole run."""

    def __init__(self):
        self.connection = None

    def send(self, message: Message) -> str:
        if self.connection is None:
            self.connection = mail.get_connection(fail_silently=False)
            try:
                self.connection.open()
            except Exception as exc:
                self.close()
                raise _email_failure(exc) from exc
        email = build_email(message, connection=self.connection)
        try:
            sent = email.send()
        except Exception as exc:
            failure = _email_failure(exc)
            if failure.transient:
                self.close()  # a dropped or confused connection: a fresh one for the next message
            raise failure from exc
        if not sent:
            raise DeliveryFailure("The mail backend did not take the message.", transient=True)
        status = getattr(email, "anymail_status", None)  # django-anymail: the service's own message id
        if status is not None and status.message_id not in (None, ""):
            return str(status.message_id)
        return email.extra_headers["Message-ID"]

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too; it is gone either way
                pass
            self.connection = None


def build_email(message: Message, *, connection=None) -> EmailMultiAlternatives:
    """The email of `message`: text and (when it has one) HTML parts, a Message-ID of its own (how the SMTP
    path finds the row again), and List-Unsubscribe with RFC 8058's one-click form."""
    domain = (settings.DEFAULT_FROM_EMAIL.rpartition("@")[2] or "smartpass.local").strip(">")
    link = settings.PUBLIC_BASE_URL + reverse("delivery:unsubscribe", args=[unsubscribe.token_for(EMAIL, message.to)])
    headers = {
        "Message-ID": _message_id(message, domain),
        "List-Unsubscribe": f"<{link}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Content-Language": message.language,
    }
    email = EmailMultiAlternatives(
        message.subject, message.text, None, [message.to], headers=headers, connection=connection
    )
    if message.html:
        email.attach_alternative(message.html, "text/html")
    return email


def _message_id(message: Message, domain: str) -> str:
    """The same for every send of one message (a repeat after a dead worker shows as a copy in mail clients);
    a test send (no row) gets a fresh one. The installation's mark keeps ids of two portals apart."""
    if not message.pk:
        return make_msgid(domain=domain)
    mark = hashlib.sha256(f"message-id:{settings.SECRET_KEY}".encode()).hexdigest()[:10]
    return f"<delivery.{message.pk}.{mark}@{domain}>"


def _email_failure(exc: Exception) -> DeliveryFailure:
    try:
        from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
    except ImportError:  # pragma: no cover - django-anymail is a pinned requirement
        AnymailAPIError = AnymailRecipientsRefused = ()  # noqa: N806
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, said = next(iter(exc.recipients.values()), (550, b""))
        text = said.decode(errors="replace")[:150] if isinstance(said, bytes) else str(said)[:150]
        if 400 <= code < 500:
            return DeliveryFailure(f"The mail relay deferred the address ({code} {text}).", transient=True)
        return DeliveryFailure(f"The mail relay refused the address ({code} {text}).", transient=False)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return DeliveryFailure("The mail relay refused the user name or password in EMAIL_URL.", transient=False)
    if isinstance(exc, smtplib.SMTPResponseException):
        said = exc.smtp_error.decode(errors="replace")[:150] if isinstance(exc.smtp_error, bytes) else ""
        if 400 <= exc.smtp_code < 500 or exc.smtp_code < 0:
            return DeliveryFailure(f"The mail relay said try later ({exc.smtp_code} {said}).", transient=True)
        return DeliveryFailure(f"The mail relay refused the message ({exc.smtp_code} {said}).", transient=False)
    if isinstance(exc, smtplib.SMTPServerDisconnected) and "timed out" in str(exc):  # smtplib wraps the timeout
        return DeliveryFailure("The mail relay did not answer in time.", transient=True)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return DeliveryFailure("The mail relay closed the connection.", transient=True)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return DeliveryFailure("The mail relay did not answer in time.", transient=True)
    if isinstance(exc, AnymailRecipientsRefused):
        return DeliveryFailure("The email service refused the address.", transient=False)
    if isinstance(exc, AnymailAPIError):
        status = getattr(exc, "status_code", None) or 0
        transient = status == 429 or status >= 500 or status == 0
        return DeliveryFailure(f"The email service answered {status or 'nothing'}.", transient=transient)
    if isinstance(exc, (OSError, smtplib.SMTPException)):
        return DeliveryFailure(f"The mail relay could not be reached ({type(exc).__name__}).", transient=True)
    raise exc


class SmsTransport:
    """Twilio's Messages API (SMS_URL), or the local outbox in DEBUG without it."""

    def __init__(self):
        self.client = sms.TwilioClient(sms.parse_sms_url(settings.SMS_URL)) if settings.SMS_URL else None

    def send(self, message: Message) -> str:
        if self.client is None:
            if not settings.DEBUG:  # queued while SMS_URL was set, which it no longer is: nothing leaves
                raise DeliveryFailure("SMS is not set up (SMS_URL).", transient=False)
            return outbox.sms_write(to=message.to, body=message.text, language=message.language)
        callback = settings.PUBLIC_BASE_URL + reverse("delivery:twilio_status")
        try:
            return self.client.send(to=message.to, body=message.text, status_callback=callback)
        except sms.SmsError as exc:
            suppress = Suppression.OPT_OUT if exc.code == sms.TWILIO_UNSUBSCRIBED else None
            raise DeliveryFailure(
                exc.reason, transient=exc.transient, retry_after=exc.retry_after, suppress=suppress
            ) from exc

    def close(self) -> None:
        if self.client is not None:
            self.client.http.clear()


def transport_for(channel: str):
    return EmailTransport() if channel == EMAIL else SmsTransport()
