"""SMS: the shape of a text (encoding and segments), and Twilio's Messages REST API.

`SMS_URL` names the provider: `twilio://ACCOUNT_SID:AUTH_TOKEN@api.twilio.com?from=SENDER`, or
`twilio+http://SID:TOKEN@127.0.0.1:PORT?from=…` for a local server that speaks the same API (sandbox/twilio.py).

Why urllib3 and no SDK: urllib3 is already a runtime requirement (the SmartPages client), the Messages API is one
form POST, and a POST must never be retried by the HTTP library: a read timeout after Twilio accepted the message
would send it twice. Retries are the outbox's, recorded in the row (delivery.sending).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import urllib3

# GSM 03.38: the basic set (one septet each) and the extension table (an escape and a septet: two).
GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = set("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsShape:
    encoding: str  # "GSM-7" or "UCS-2"
    characters: int  # septets (GSM-7) or UTF-16 code units (UCS-2), as the network counts them
    segments: int


def segments(text: str) -> SmsShape:
    """How the network carries `text`: GSM-7 when every character is in GSM 03.38 (160 septets in one
    segment, 153 in each of several), else UCS-2 (70 UTF-16 units in one, 67 in each of several)."""
    if all(ch in GSM_BASIC or ch in GSM_EXTENDED for ch in text):
        units = sum(2 if ch in GSM_EXTENDED else 1 for ch in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    count = 0 if units == 0 else 1 if units <= single else -(-units // multi)
    return SmsShape(encoding=encoding, characters=units, segments=count)


@dataclass(frozen=True)
class TwilioAccount:
    account_sid: str
    auth_token: str
    base_url: str  # scheme://host[:port], no trailing slash
    sender: str

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json"


def parse_sms_url(url: str) -> TwilioAccount:
    """`twilio://SID:TOKEN@host?from=SENDER` (HTTPS) or `twilio+http://…` (plain HTTP, a local test server)."""
    parts = urlsplit(url)
    if parts.scheme not in ("twilio", "twilio+https", "twilio+http"):
        raise ValueError("SMS_URL must start with twilio:// (or twilio+http:// for a local test server)")
    if not parts.username or not parts.password or not parts.hostname:
        raise ValueError("SMS_URL needs the account SID, the auth token and a host: twilio://SID:TOKEN@host?from=…")
    sender = (parse_qs(parts.query).get("from") or [""])[0]
    if not sender:
        raise ValueError("SMS_URL needs the sender: …?from=+3545551234 (or a messaging service SID MG…)")
    scheme = "http" if parts.scheme == "twilio+http" else "https"
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return TwilioAccount(unquote(parts.username), unquote(parts.password), f"{scheme}://{host}", sender)


class SmsError(Exception):
    """The provider did not take the message. `transient`: worth trying again (429, 5xx, network);
    `retry_after`: the seconds the provider asked for; `code`: Twilio's error code, when it gave one."""

    def __init__(self, reason: str, *, transient: bool, retry_after: float | None = None, code: int | None = None):
        super().__init__(reason)
        self.reason, self.transient, self.retry_after, self.code = reason, transient, retry_after, code


# Twilio error codes that mean the number will never take a message from us.
TWILIO_UNSUBSCRIBED = 21610  # "Attempt to send to unsubscribed recipient" (the holder sent STOP)
TWILIO_INVALID_TO = {21211, 21614, 21612, 21408}


class TwilioClient:
    """One connection pool per worker process: a run of messages reuses its connections."""

    def __init__(self, account: TwilioAccount, *, timeout: float = 10.0):
        self.account = account
        self.http = urllib3.PoolManager(
            num_pools=2, maxsize=2, retries=False, timeout=urllib3.Timeout(connect=5.0, read=timeout)
        )
        token = base64.b64encode(f"{account.account_sid}:{account.auth_token}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}

    def send(self, *, to: str, body: str, status_callback: str = "") -> str:
        """POST one message; returns its SID. Raises SmsError."""
        fields = {"To": to, "From": self.account.sender, "Body": body}
        if self.account.sender.startswith("MG"):
            fields = {"To": to, "MessagingServiceSid": self.account.sender, "Body": body}
        if status_callback:
            fields["StatusCallback"] = status_callback
        try:
            response = self.http.request_encode_body(
                "POST", self.account.messages_url, fields=fields, headers=self.headers, encode_multipart=False
            )
        except urllib3.exceptions.HTTPError as exc:
            raise SmsError(f"The SMS provider could not be reached ({type(exc).__name__}).", transient=True) from exc
        return _sid_or_error(response)


def _sid_or_error(response) -> str:
    try:
        payload = json.loads(response.data or b"{}")
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    status = response.status
    if status in (200, 201) and payload.get("sid"):
        return str(payload["sid"])
    code = payload.get("code") if isinstance(payload.get("code"), int) else None
    said = str(payload.get("message") or "")[:200]
    if status == 429:
        retry_after = _seconds(response.headers.get("Retry-After"))
        raise SmsError("The SMS provider asked us to slow down (429).", transient=True, retry_after=retry_after)
    if status >= 500:
        raise SmsError(f"The SMS provider had an error ({status}).", transient=True)
    if status == 401:
        raise SmsError("The SMS provider refused the account SID or auth token in SMS_URL (401).", transient=False)
    if code == TWILIO_UNSUBSCRIBED:
        raise SmsError("The holder opted out of SMS (STOP).", transient=False, code=code)
    if code in TWILIO_INVALID_TO:
        reason = f"The SMS provider refused the number: {said or 'not a mobile number'}."
        raise SmsError(reason, transient=False, code=code)
    if status in (200, 201):
        raise SmsError("The SMS provider answered without a message id.", transient=True)
    detail = f": {said}" if said else ""
    raise SmsError(f"The SMS provider refused the message ({status}{detail}).", transient=False, code=code)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's request signature (X-Twilio-Signature): HMAC-SHA1, keyed by the auth token, of the full URL
    followed by each POST parameter's name and value, sorted by name; base64."""
    payload = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def twilio_signature_valid(auth_token: str, url: str, params: dict[str, str], signature: str) -> bool:
    return bool(signature) and hmac.compare_digest(twilio_signature(auth_token, url, params), signature)
