"""A local HTTP server that speaks Twilio's Messages REST API, for tests and demos (never in production):

    python -m sandbox.twilio --port 8002        # then SMS_URL=twilio+http://ACtest:secret@127.0.0.1:8002?from=+3545550000

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (form fields To, From or MessagingServiceSid, Body,
StatusCallback; HTTP basic auth with the account SID and auth token) answers 201 with the message's JSON, as
Twilio does, and keeps it in `messages`. Switches: `faults` (the next N answers 429 with Retry-After, 5xx, 400
or 401), numbers that are not E.164 get Twilio's 400 code 21211, numbers that sent STOP get 400 code 21610.
`post_status` and `post_inbound` call the portal's webhooks signed as Twilio signs them (X-Twilio-Signature).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    status: int
    retry_after: float | None = None
    code: int | None = None
    message: str = ""


@dataclass
class TwilioSandbox:
    account_sid: str = "ACsandbox0000000000000000000000000"
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    sender: str = "+3545550000"
    messages: list[dict] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of every accepted message
    opted_out: set[str] = field(default_factory=set)

    def __post_init__(self):
        self.faults: deque[Fault] = deque()
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.requests = 0

    # --- switches ---------------------------------------------------------------------------------------------
    def fail_next(self, count: int, status: int, *, retry_after: float | None = None, code: int | None = None):
        """The next `count` sends answer `status` (429 with Retry-After, 500/503, 400 with a code, 401)."""
        with self.lock:
            for _ in range(count):
                self.faults.append(Fault(status, retry_after, code))

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def sms_url(self, *, token: str | None = None) -> str:
        quoted = urllib.parse.quote(self.sender)
        return f"twilio+http://{self.account_sid}:{token or self.auth_token}@127.0.0.1:{self.server.server_address[1]}?from={quoted}"

    # --- Twilio calling the portal ----------------------------------------------------------------------------
    def signature(self, url: str, params: dict[str, str], *, token: str | None = None) -> str:
        payload = url + "".join(f"{name}{params[name]}" for name in sorted(params))
        key = (token or self.auth_token).encode()
        return base64.b64encode(hmac.new(key, payload.encode(), hashlib.sha1).digest()).decode()

    def post(self, url: str, params: dict[str, str], *, signed_url: str | None = None, token: str | None = None):
        """POST `params` to `url` signed for `signed_url` (the public URL Twilio knows; `url` unless given).
        Returns (status, body)."""
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(url, data=data, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        request.add_header("X-Twilio-Signature", self.signature(signed_url or url, params, token=token))
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def status_params(self, sid: str, status: str, *, error_code: str = "") -> dict[str, str]:
        message = next((m for m in self.messages if m["sid"] == sid), {"to": "", "from": self.sender})
        params = {
            "AccountSid": self.account_sid,
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "To": message["to"],
            "From": message["from"],
            "ApiVersion": "2010-04-01",
        }
        if error_code:
            params["ErrorCode"] = error_code
        return params

    def inbound_params(self, sender: str, body: str) -> dict[str, str]:
        return {
            "AccountSid": self.account_sid,
            "MessageSid": "SM" + secrets.token_hex(16),
            "From": sender,
            "To": self.sender,
            "Body": body,
            "NumMedia": "0",
            "ApiVersion": "2010-04-01",
        }

    def opt_out(self, number: str) -> None:
        """The holder sent STOP: Twilio refuses further messages to the number (error 21610)."""
        with self.lock:
            self.opted_out.add(number)

    # --- the server -------------------------------------------------------------------------------------------
    def start(self, port: int = 0) -> TwilioSandbox:
        sandbox = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                status, payload, headers = sandbox._answer(self.path, self.headers.get("Authorization", ""), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="twilio-sandbox").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _answer(self, path: str, authorization: str, body: str) -> tuple[int, dict, dict]:
        expected_path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        expected_auth = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        with self.lock:
            self.requests += 1
            fault = self.faults.popleft() if self.faults else None
        if not hmac.compare_digest(authorization, expected_auth):
            return 401, _error(20003, "Authenticate", 401), {}
        if path.split("?")[0] != expected_path:
            return 404, _error(20404, "The requested resource was not found", 404), {}
        if fault is not None:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            text = fault.message or {429: "Too Many Requests", 401: "Authenticate"}.get(fault.status, "Error")
            return fault.status, _error(fault.code or fault.status * 100, text, fault.status), headers
        form = {key: values[0] for key, values in urllib.parse.parse_qs(body, keep_blank_values=True).items()}
        to, text = form.get("To", ""), form.get("Body", "")
        sender = form.get("From") or form.get("MessagingServiceSid", "")
        if not to.startswith("+") or not to[1:].isdigit() or len(to) < 8:
            return 400, _error(21211, f"The 'To' number {to} is not a valid phone number.", 400), {}
        if not text:
            return 400, _error(21602, "Message body is required.", 400), {}
        if to in self.opted_out:
            return 400, _error(21610, "Attempt to send to unsubscribed recipient", 400), {}
        sid = "SM" + secrets.token_hex(16)
        message = {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": to,
            "from": sender,
            "body": text,
            "status": "queued",
            "num_segments": "1",
            "status_callback": form.get("StatusCallback", ""),
            "api_version": "2010-04-01",
            "uri": f"{expected_path[:-5]}/{sid}.json",
        }
        with self.lock:
            self.messages.append(message)
            self.arrivals.append(time.monotonic())
        return 201, message, {}


def _error(code: int, message: str, status: int) -> dict:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--sid", default="ACsandbox0000000000000000000000000")
    parser.add_argument("--token", default="sandbox-token")
    args = parser.parse_args()
    server = TwilioSandbox(account_sid=args.sid, auth_token=args.token).start(args.port)
    print(f"Twilio Messages API stand-in on {server.url}; SMS_URL={server.sms_url()}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
