"""Issue 20, goal 3: no dead end for typed identities. A holder who typed an address that already has a pass is
offered "Send my pass to j•••@skoli.is": the pass page's link goes, through a real SMTP server, to the address
on file — never to the page, never to anything in the request — rate-limited per member and per address, in
the holder's language; where it cannot be sent (SMS not set up), the page says how to reach the issuer."""

from __future__ import annotations

import re
import uuid

import pytest
from django.core.cache import cache

from delivery import services as delivery
from delivery.models import Suppression
from links import claims
from members.models import Member
from members.services import autofill
from sandbox import DEMO_TEMPLATE_ID

from .claim_factories import add_member_field_template, link_path, mirror, nonce_of

pytestmark = pytest.mark.django_db

JON = {"field_0": "010130-2989", "field_1": "Jon@skoli.is"}  # the kennitala and school email the holder types


@pytest.fixture
def smtp(smtp_server, settings):
    """The suite's SMTP server (aiosmtpd in a process of its own: conftest.smtp_server)."""
    settings.DEFAULT_FROM_EMAIL = "passar@issuer.example"
    return smtp_server


@pytest.fixture(autouse=True)
def fresh_limits(settings):
    settings.CLAIM_RATE = "100000/m"
    settings.PUBLIC_BASE_URL = "https://passar.example.is"
    cache.clear()  # the send counters live in the shared cache (this run's own Redis database)
    yield
    cache.clear()


def school(sandbox, **overrides):
    template = mirror(add_member_field_template(sandbox, **overrides))
    autofill.autofill_setting_change(template=template, source="email")  # reads the email the holder types
    return template


def typed_claim(client, path: str, answers: dict):
    page = client.get(path)
    return client.post(path, {"nonce": nonce_of(page.content.decode()), **answers})


def offer_form(html: str) -> dict:
    key = re.search(r'name="send_offer" value="([^"]+)"', html).group(1)
    return {"send_offer": key}


@pytest.fixture
def enrolled(client, sandbox):
    """Jón claimed his school card, typing his address; a second claim types the same address."""
    template = school(sandbox)
    path = link_path(template.pk, {"name": "Jón Jónsson"})
    first = typed_claim(client, path, JON)
    assert first.status_code == 302
    member = Member.objects.get(template=template)
    return template, path, member


def test_the_second_typed_claim_offers_to_send_the_pass_and_never_shows_it(client, enrolled, smtp):
    template, path, member = enrolled
    stranger = client.__class__()

    page = typed_claim(stranger, path, JON)

    html = page.content.decode()
    assert page.status_code == 200
    assert "Send my pass to j•••@skoli.is" in html
    assert str(member.pass_id) not in html and claims.pass_page_key(member=member) not in html
    assert "jon@skoli.is" not in html.lower()

    sent = stranger.post(path, {**offer_form(html), "channel": "email", "email": "attacker@evil.example"})

    shown = sent.content.decode()
    assert "We sent a link to your pass to j•••@skoli.is." in shown
    assert str(member.pass_id) not in shown and claims.pass_page_key(member=member) not in shown
    [(recipients, message)] = smtp.messages
    assert recipients == ["jon@skoli.is"]  # the address on file, never one from the request
    body = message.get_body().get_content()
    pass_url = f"https://passar.example.is/pass/{claims.pass_page_key(member=member)}"
    assert pass_url in body and template.name in message["Subject"]
    # The link leads to the holder's pass.
    assert str(member.pass_id) in client.get(pass_url.removeprefix("https://passar.example.is")).content.decode()


def test_sends_are_limited_per_member(client, enrolled, smtp, settings):
    settings.PASS_LINK_SENDS_PER_HOUR = 2
    _template, path, _member = enrolled
    html = typed_claim(client.__class__(), path, JON).content.decode()
    answers = [client.post(path, {**offer_form(html), "channel": "email"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "sent a short while ago" in answers[2].content.decode()
    assert len(smtp.messages) == 2


def test_sends_are_limited_per_address_across_members(client, sandbox, smtp, settings):
    settings.PASS_LINK_SENDS_PER_HOUR = 1
    answers = []
    for _ in range(2):  # two school cards, one address
        template = school(sandbox)
        path = link_path(template.pk, {"name": "Jón Jónsson"})
        typed_claim(client, path, JON)
        html = typed_claim(client.__class__(), path, JON).content.decode()
        answers.append(client.post(path, {**offer_form(html), "channel": "email"}).status_code)
    assert answers == [200, 429] and len(smtp.messages) == 1


def test_a_forged_or_foreign_offer_sends_nothing(client, enrolled, smtp, sandbox):
    _template, path, member = enrolled
    forged = client.post(path, {"send_offer": f"{member.template_id}:{member.pk}:forged", "channel": "email"})
    assert "This page has expired" in forged.content.decode()
    # An offer from one template's page, posted to another template's link.
    html = typed_claim(client.__class__(), path, JON).content.decode()
    other = link_path(school(sandbox).pk, {"name": "Jón Jónsson"})
    foreign = client.post(other, {**offer_form(html), "channel": "email"})
    assert "This page has expired" in foreign.content.decode()
    assert smtp.messages == []


def test_in_icelandic_the_offer_and_the_email_are_icelandic(client, enrolled, smtp):
    _template, path, _member = enrolled
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "is"
    html = typed_claim(client, path, JON).content.decode()
    assert "Senda kortið mitt á j•••@skoli.is" in html
    sent = client.post(path, {**offer_form(html), "channel": "email"}).content.decode()
    assert "Við sendum tengil á kortið þitt á j•••@skoli.is." in sent
    [(_recipients, message)] = smtp.messages
    assert "Opnaðu kortið þitt hér" in message.get_body().get_content()


def _phone_card(sandbox, *, contact_help="Hringdu í 555 1234 eða komdu í afgreiðsluna.", issuer_fields=()):
    """A punch card whose holders type their mobile number (autofill from the phone), after its name and any
    `issuer_fields` the issuer's file fills in."""
    template = sandbox.get_template(DEMO_TEMPLATE_ID)
    template.update(
        id=str(uuid.uuid4()),
        name="Klippikort",
        inputFields=[
            {"label": "Nafn", "identifier": "name", "isMandatory": True, "format": "TEXT", "type": "ISSUER"},
            *issuer_fields,
            {
                "label": "Farsími",
                "identifier": "phone",
                "isMandatory": True,
                "format": "PHONE_NUMBER",
                "type": "MEMBER",
            },
        ],
    )
    card = mirror(sandbox.add_template(template)["id"])
    autofill.autofill_setting_change(template=card, source="phone", contact_help=contact_help)
    return card


def test_a_typed_phone_without_sms_shows_how_to_reach_the_issuer(client, sandbox, smtp):
    card = _phone_card(sandbox)
    path = link_path(card.pk, {"name": "Guðrún"})
    typed_claim(client, path, {"field_0": "858 1235"})

    html = typed_claim(client.__class__(), path, {"field_0": "+354 858 1235"}).content.decode()

    assert "•••• 1235" in html and 'id="send-sms"' not in html
    assert "Hringdu í 555 1234 eða komdu í afgreiðsluna." in html
    assert str(Member.objects.get(template=card).pass_id) not in html


def test_with_sms_set_up_the_pass_link_goes_to_the_phone_on_file(client, sandbox, twilio):
    """Issue 21: "send my pass" goes through the outbox, so with SMS_URL set the holder's phone gets the link
    (here the local server speaking Twilio's Messages API)."""
    card = _phone_card(sandbox)
    path = link_path(card.pk, {"name": "Guðrún"})
    typed_claim(client, path, {"field_0": "858 1235"})
    member = Member.objects.get(template=card)

    html = typed_claim(client.__class__(), path, {"field_0": "+354 858 1235"}).content.decode()
    assert 'id="send-sms"' in html
    sent = client.post(path, {**offer_form(html), "channel": "sms"})

    assert sent.status_code == 200 and "•••• 1235" in sent.content.decode()
    [sms] = twilio.messages
    pass_url = f"https://passar.example.is/pass/{claims.pass_page_key(member=member)}"
    assert sms["to"] == "+3548581235" and pass_url in sms["body"]


def test_an_address_that_takes_no_messages_is_said_so_with_how_to_reach_the_issuer(client, enrolled, smtp):
    """Jón once pressed a campaign email's unsubscribe link: his address is on the suppression list, which every
    send keeps to. "Try again later" would never come true; the page says the address takes no messages from us
    and how to reach the issuer, and nothing is sent."""
    template, path, _member = enrolled
    autofill.autofill_setting_change(template=template, source="email", contact_help="Skrifstofa skólans: 555 1234.")
    delivery.suppression_add(channel="email", address="jon@skoli.is", reason=Suppression.OPT_OUT, detail="Unsubscribe")
    html = typed_claim(client.__class__(), path, JON).content.decode()

    shown = client.post(path, {**offer_form(html), "channel": "email"}).content.decode()

    assert "We cannot send messages to that address or number." in shown and "try again later" not in shown
    assert "Skrifstofa skólans: 555 1234." in shown
    assert smtp.messages == []


def test_an_address_that_takes_no_messages_leaves_the_other_channel_on_offer(client, sandbox, twilio):
    """Guðrún's card has her email (from the issuer's file) and the mobile number she types. Her email is on the
    suppression list: pressing "send to my email" says so and still offers her phone, which gets the link."""
    email = {"label": "Netfang", "identifier": "email", "isMandatory": True, "format": "EMAIL", "type": "ISSUER"}
    card = _phone_card(sandbox, contact_help="", issuer_fields=[email])
    path = link_path(card.pk, {"name": "Guðrún", "email": "gudrun@example.is"})
    typed_claim(client, path, {"field_0": "858 1235"})
    delivery.suppression_add(channel="email", address="gudrun@example.is", reason=Suppression.HARD_BOUNCE, detail="")
    html = typed_claim(client.__class__(), path, {"field_0": "858 1235"}).content.decode()
    assert 'id="send-email"' in html and 'id="send-sms"' in html

    refused = client.post(path, {**offer_form(html), "channel": "email"}).content.decode()

    assert "We cannot send messages to that address or number." in refused
    assert 'id="send-email"' not in refused and 'id="send-sms"' in refused and 'id="contact-help"' not in refused
    sent = client.post(path, {**offer_form(refused), "channel": "sms"})
    assert "•••• 1235" in sent.content.decode()
    [sms] = twilio.messages
    assert sms["to"] == "+3548581235"
