"""Claim tokens, short-link codes and pass-page keys never reach a log in full.

A SmartPass link (/p/<token>), its short form (/s/<code>) and a pass page (/pass/<key>) are bearer secrets:
whoever reads the full URL can claim or see the pass. Logs keep a short prefix, enough to match a holder's report to a log line.
Used by Django's logging (settings.LOGGING) and gunicorn's access log (deploy/gunicorn.conf.py).
"""

import logging
import re

from links.short_codes import STRETCH_LENGTH

KEPT_CHARACTERS = 6
# A short code's first characters name its chunk (links.short_codes): kept, they say which campaign it is from
# and leave all its random ones (~59 bits) out of the log. Six would leave only 6 random ones (~36 bits).
KEPT_SHORT_CODE_CHARACTERS = STRETCH_LENGTH
# The secret runs to the next character that cannot be part of it (/, ?, #, space, quote).
_SECRET_PATH = re.compile(rf"(/(?:p|pass)/)([^/?#\s\"']{{{KEPT_CHARACTERS}}})[^/?#\s\"']+")
_SHORT_CODE_PATH = re.compile(rf"(/s/)([^/?#\s\"']{{{KEPT_SHORT_CODE_CHARACTERS}}})[^/?#\s\"']+")


def redact_secret_paths(text: str) -> str:
    # Most texts (gunicorn passes every header of every request through here) hold none of the three paths:
    # substring tests first are a third of the regular expressions' cost.
    if "/p/" in text or "/pass/" in text:
        text = _SECRET_PATH.sub(r"\1\2...", text)
    if "/s/" in text:
        text = _SHORT_CODE_PATH.sub(r"\1\2...", text)
    return text


class SecretPathFilter(logging.Filter):
    """Rewrites each record's message (arguments merged in) with secrets cut short. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: leave it to the handler, which reports it without crashing
            return True
        redacted = redact_secret_paths(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class SecretRedactingFormatter(logging.Formatter):
    """Wraps a handler's formatter and cuts secrets short in the whole formatted record: the message and any
    traceback printed with it. For loggers whose messages this project does not write (gunicorn's error log:
    "Error handling request POST /p/<token>")."""

    def __init__(self, wrapped: logging.Formatter | None):
        super().__init__()
        self.wrapped = wrapped or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact_secret_paths(self.wrapped.format(record))
