"""The messages that carry a batch's links to its holders: per language, with {name} and {link} placeholders,
rendered exactly as they are sent (email subject, text and HTML; SMS text). Pure: no database, no sending.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from django.utils.html import escape

LANGUAGES = {"is": "Icelandic", "en": "English"}
PLACEHOLDERS = {"name": "the holder's name", "link": "the holder's SmartPass link"}
DEFAULT_MAX_SEGMENTS = 2

# What a language column may say for each language (lower-cased, before any "-" or "_" region).
_LANGUAGE_WORDS = {
    "is": {"is", "isl", "ice", "icelandic", "íslenska", "islenska"},
    "en": {"en", "eng", "english", "enska"},
}


class MessageError(ValueError):
    """A message a manager wrote that cannot be sent; the text is a sentence for them."""


@dataclass(frozen=True)
class LanguageMessage:
    """What one language's holders get: an email (subject and text; the HTML part is made from the text) and
    an SMS text."""

    subject: str
    body: str
    sms: str


DEFAULT_MESSAGES = {
    "is": LanguageMessage(
        subject="Kortið þitt er tilbúið",
        body="Hæ {name},\n\nHér er kortið þitt í símann: {link}\n\nOpnaðu hlekkinn í símanum og bættu kortinu í veskið.",
        # No name in the default SMS: an Icelandic SMS is UCS-2 (70 characters a segment), and with a short link
        # (≤ 40 characters) this stays one segment whatever the name.
        sms="Kortið þitt í símann: {link}",
    ),
    "en": LanguageMessage(
        subject="Your pass is ready",
        body="Hi {name},\n\nHere is your pass for your phone: {link}\n\nOpen the link on your phone and add the pass "
        "to your wallet.",
        sms="Your pass for your phone: {link}",
    ),
}


def check_message(text: str, *, what: str, needs_link: bool = True) -> None:
    """Refuse a text with a placeholder that does not exist, a stray brace, or (for a body) no {link}."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError:
        raise MessageError(
            f"{what} has a “{{” or “}}” without its pair; write {{{{ or }}}} for a brace itself."
        ) from None
    used = set()
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            known = " and ".join("{" + name + "}" for name in PLACEHOLDERS)
            raise MessageError(f"{what} uses {shown}, which is not a placeholder: use {known}.")
        used.add(field)
    if needs_link and "link" not in used:
        raise MessageError(f"{what} has no {{link}}: without it the holder gets no pass.")


def check_language_message(message: LanguageMessage, *, language: str) -> None:
    name = LANGUAGES[language]
    check_message(message.subject, what=f"The email subject ({name})", needs_link=False)
    if not message.subject.strip():
        raise MessageError(f"The email subject ({name}) is empty.")
    check_message(message.body, what=f"The email text ({name})")
    check_message(message.sms, what=f"The SMS text ({name})")


def render(text: str, *, name: str, link: str) -> str:
    return text.format(name=name, link=link)


def render_html(text: str, *, name: str, link: str) -> str:
    """The HTML part of an email from its text: every character escaped, paragraphs and line breaks kept, the
    link a link."""
    pieces = []
    for literal, field, _, _ in string.Formatter().parse(text):
        pieces.append(escape(literal))
        if field == "name":
            pieces.append(escape(name))
        elif field == "link":
            pieces.append(f'<a href="{escape(link)}">{escape(link)}</a>')
    body = "".join(pieces)
    paragraphs = [part.replace("\n", "<br>\n") for part in body.replace("\r\n", "\n").split("\n\n") if part.strip()]
    inner = "\n".join(f"<p>{paragraph}</p>" for paragraph in paragraphs)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>'
        f'<body style="font-family: sans-serif; line-height: 1.5">\n{inner}\n</body></html>\n'
    )


def row_language(value: str, *, default: str) -> str:
    """The language a row's language cell names (is / en, also "íslenska", "en-GB" …); else the default."""
    word = value.strip().lower().replace("_", "-").split("-", 1)[0]
    for language, words in _LANGUAGE_WORDS.items():
        if word in words:
            return language
    return default
