"""Test data for the claim flow: templates mirrored from the sandbox, links made with the real token code,
and the small steps a holder's browser takes (open the link, read the form's nonce, post it)."""

from __future__ import annotations

import re
import uuid

import requests

from links import tokens
from links.keyring import link_keys
from members.tests.factories import mirror_template as mirror  # noqa: F401 (the links tests' name for it)
from sandbox import DEMO_TEMPLATE_ID

PERCY = {"name": "Percy PassKit", "email": "percy@passkit.com", "phone": "+44 7911 123456"}
LAURA = {"name": "Laura Loopy", "email": " Laura.Loopy@Example.COM", "phone": "555 1234"}
NONCE_RE = re.compile(r'name="nonce" value="([^"]+)"')
CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def add_member_field_template(sandbox, **overrides) -> str:
    """A sandbox template whose holder must type a kennitala (18+) and a school email address: MEMBER
    fields the issuer's link cannot fill in."""
    template = sandbox.get_template(DEMO_TEMPLATE_ID)
    template.update(
        id=str(uuid.uuid4()),
        name="Nemendakort Menntaskólans",
        description="Skólakort fyrir nemendur 18 ára og eldri.",
        useEmailDomainVerification=True,
        allowedEmailDomains=[{"sortOrder": 1, "emailDomain": "skoli.is"}],
        kennitalaAgeVerification=18,
        inputFields=[
            {
                "label": "Nafn / Name",
                "identifier": "name",
                "description": None,
                "isMandatory": True,
                "isUnique": False,
                "format": "TEXT",
                "type": "ISSUER",
            },
            {
                "label": "Kennitala",
                "identifier": "kennitala",
                "description": None,
                "isMandatory": True,
                "isUnique": False,
                "format": "KENNITALA",
                "type": "MEMBER",
            },
            {
                "label": "Skólanetfang / School email",
                "identifier": "schoolEmail",
                "description": None,
                "isMandatory": True,
                "isUnique": False,
                "format": "EMAIL",
                "type": "MEMBER",
            },
        ],
        **overrides,
    )
    return sandbox.add_template(template)["id"]


def link_path(
    template_id: str = DEMO_TEMPLATE_ID,
    fields: dict | None = None,
    *,
    external_id: str | None = None,
    batch_id: int | None = None,
    row: int | None = None,
    single_use: bool = False,
    keys=None,
) -> str:
    payload = tokens.LinkPayload(
        template_id=uuid.UUID(str(template_id)),
        fields=dict(fields or {}),
        external_id=external_id,
        batch_id=batch_id,
        row=row,
        single_use=single_use,
    )
    return "/p/" + tokens.encode(payload, keys or link_keys())


def nonce_of(html: str) -> str:
    match = NONCE_RE.search(html)
    assert match, "the claim page has no nonce"
    return match.group(1)


def claim_over_http(url: str, path: str) -> list[int]:
    """A holder's browser against a served portal (gunicorn): open the link, press the button, look at the page
    it leads to. Returns the status codes."""
    session = requests.Session()
    page = session.get(url + path, timeout=30)
    if page.status_code != 200:
        return [page.status_code]
    form = {"nonce": nonce_of(page.text), "csrfmiddlewaretoken": CSRF_RE.search(page.text).group(1)}
    posted = session.post(url + path, data=form, allow_redirects=False, timeout=30, headers={"Referer": url + path})
    shown = session.get(url + posted.headers["Location"], timeout=30) if posted.status_code == 302 else posted
    return [page.status_code, posted.status_code, shown.status_code]


def open_and_claim(client, path: str, answers: dict | None = None):
    """What a holder does: open the link, press the button. Returns the POST's response."""
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    return client.post(path, {"nonce": nonce_of(page.content.decode()), **(answers or {})})
