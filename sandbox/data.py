"""The sandbox's sample data: plausible Icelandic pass templates of every type and input-field format.

Deterministic: the same seed and index give the same template on every machine.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

# The first template of every sandbox: the "club card" of the seed scenario. Fixed so the demo, the docs
# and the tests can name it without asking the server first.
DEMO_TEMPLATE_ID = "5a3d0c1e-7b2f-4e8a-9c61-2f0b6d4e8a10"

TEMPLATE_TYPES = ("ID", "COUPON", "MEMBER", "TICKET", "PUNCH", "GIFT", "MULTI_TICKET", "STORAGE", "APPOINTMENT_PASS")
FIELD_FORMATS = ("TEXT", "NUMBER", "DATE", "EMAIL", "URL", "KENNITALA", "PHONE_NUMBER")
FIELD_TYPES = ("ISSUER", "MEMBER")

# Keys the docs mark optional ("may be null or absent"); generated templates leave some of them out.
OPTIONAL_TEMPLATE_KEYS = (
    "name",
    "description",
    "stamps",
    "passPrice",
    "whenLastUpdateSent",
    "dynamicBarcodeExpirationTimeSeconds",
    "kennitalaAgeVerification",
    "exchangedForTemplateId",
)

# uuid5 namespace for generated template ids: same seed and index, same id, on every machine.
TEMPLATE_ID_NAMESPACE = uuid.UUID("0e6f3b52-5d1c-4b8e-a7f4-3c2d9e1b7a64")


def utc_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _input_field(label, identifier, field_format, field_type, *, mandatory, unique=False, description=None) -> dict:
    return {
        "label": label,
        "identifier": identifier,
        "description": description,
        "isMandatory": mandatory,
        "isUnique": unique,
        "format": field_format,
        "type": field_type,
    }


def _template_skeleton(template_id: str, template_type: str, name, description, delivery_page_url: str) -> dict:
    """Every documented key, in the order of the API documentation's example, with the plainest values."""
    return {
        "id": template_id,
        "type": template_type,
        "name": name,
        "description": description,
        "stamps": None,
        "status": "ACTIVE",
        "inputFields": [],
        "isSharingProhibited": False,
        "isNFC": False,
        "singleDeviceOnly": False,
        "firstDeviceOnly": False,
        "oneDeviceAtATime": False,
        "oncePerDevice": False,
        "onePassOfTemplateTypePerDevice": False,
        "posDistributionOnly": False,
        "passPrice": None,
        "whenLastUpdateSent": None,
        "allowReward": False,
        "hasDynamicBarcode": False,
        "dynamicBarcodeExpirationTimeSeconds": None,
        "dynamicBarcodeType": "BASIC",
        "lockInputFields": False,
        "disableIssue": False,
        "deliverByKennitala": False,
        "locations": [],
        "useEmailDomainVerification": False,
        "allowedEmailDomains": [],
        "kennitalaAgeVerification": None,
        "supportsGoogleWallet": True,
        "exchangedForTemplateId": None,
        "deliveryPageUrl": delivery_page_url,
    }


def demo_club_card(delivery_page_url: str) -> dict:
    template = _template_skeleton(
        DEMO_TEMPLATE_ID,
        "MEMBER",
        "Klúbbkort Sundfélagsins",
        "Félagsmenn sýna kortið við innganginn og fá ókeypis aðgang að æfingum í lauginni; "
        "þú færð líka afslátt af öllum námskeiðum.",
        delivery_page_url,
    )
    template["inputFields"] = [
        _input_field("Nafn / Name", "name", "TEXT", "ISSUER", mandatory=True, description="Fullt nafn félagsmanns"),
        _input_field("Netfang / Email", "email", "EMAIL", "ISSUER", mandatory=True, description="Netfang félagsmanns"),
        _input_field("Símanúmer / Phone", "phone", "PHONE_NUMBER", "ISSUER", mandatory=False),
    ]
    template["isNFC"] = True
    template["locations"] = [
        {
            "relevantText": "Velkomin í Laugardalslaug!",
            "point": {"latitude": 64.1463, "longitude": -21.8773},
            "name": "Laugardalslaug",
        },
    ]
    return template


def _loyalty_card_with_email_and_phone(template_id: str, delivery_page_url: str) -> dict:
    template = _template_skeleton(
        template_id,
        "PUNCH",
        "Klippikort Kaffihússins Ögnar",
        "Tíundi kaffibollinn er á okkur. Sýndu kortið á afgreiðsluborðinu.",
        delivery_page_url,
    )
    template["stamps"] = 10
    template["allowReward"] = True
    template["inputFields"] = [
        _input_field("Nafn / Name", "name", "TEXT", "ISSUER", mandatory=False),
        _input_field(
            "Farsími / Mobile",
            "phone",
            "PHONE_NUMBER",
            "ISSUER",
            mandatory=True,
            unique=True,
            description="Farsímanúmer korthafa",
        ),
        _input_field("Netfang / Email", "email", "EMAIL", "ISSUER", mandatory=False),
    ]
    template["locations"] = [
        {"relevantText": "Kaffið bíður þín á Akureyri.", "point": {"latitude": 65.6835, "longitude": -18.0878}},
    ]
    return template


def _pupil_card_with_two_emails(template_id: str, delivery_page_url: str) -> dict:
    template = _template_skeleton(
        template_id,
        "ID",
        "Nemendaskírteini Tónlistarskóla Ísafjarðar",
        "Skírteinið gildir skólaárið; forráðamenn fá afrit af tilkynningum.",
        delivery_page_url,
    )
    template["inputFields"] = [
        _input_field("Nafn nemanda / Pupil's name", "name", "TEXT", "ISSUER", mandatory=True),
        _input_field("Netfang nemanda / Pupil's email", "email", "EMAIL", "ISSUER", mandatory=True),
        _input_field(
            "Netfang forráðamanns / Guardian's email",
            "guardian_email",
            "EMAIL",
            "ISSUER",
            mandatory=False,
            description="Fær afrit af tilkynningum skólans",
        ),
    ]
    return template


_NAMES_BY_TYPE = {
    "ID": ("Starfsmannaskírteini Þórsmerkur ehf.", "Aðgangskort að rannsóknastofu", "Nemendaskírteini á Hólum"),
    "COUPON": ("Kaffihúsið Ögn – 20% afsláttur", "Tveir fyrir einn í sund", "Afsláttarmiði í Bókabúð Sóleyjar"),
    "MEMBER": ("Félagskort Ferðafélagsins Ýmis", "Vildarkort Bakarísins á Hæðinni", "Aðildarkort Golfklúbbsins Þórs"),
    "TICKET": ("Jólatónleikar Kórs Ísafjarðar", "Aðgöngumiði á Þjóðhátíð", "Leikhúsmiði – Fjalla-Eyvindur"),
    "PUNCH": ("Sundkort – tíu ferðir", "Klippikort í jóga", "Þvottastöðin – tíundi þvotturinn frítt"),
    "GIFT": ("Gjafabréf – Veitingahúsið Fjörður", "Gjafakort Blómabúðarinnar Sóleyjar", "Gjafabréf í heilsulind"),
    "MULTI_TICKET": ("Strætókort – 20 ferðir", "Skíðapassi – fimm dagar í Hlíðarfjalli", "Ferjukort til Hríseyjar"),
    "STORAGE": ("Geymsluhólf í Vesturbæjarlaug", "Farangursgeymsla á Egilsstöðum", "Reiðhjólageymsla Háskólans"),
    "APPOINTMENT_PASS": ("Tími hjá tannlækni", "Bókun í klippingu hjá Hárstofunni Ýri", "Skoðun á bílaverkstæði"),
}

_DESCRIPTIONS = (
    "Gildir í öllum útibúum á höfuðborgarsvæðinu.",
    "Sýnið kortið við innganginn; starfsfólk skannar strikamerkið.",
    "Þú færð tíunda bollann ókeypis.",
    "Gjafabréfið gildir í eitt ár frá útgáfudegi.",
    "Æfingar á þriðjudögum og fimmtudögum í íþróttahúsinu.",
    "Sérkjör fyrir félagsmenn á meðan birgðir endast.",
    "Nýtt kort er gefið út fyrir hvert ár.",
)

_LOCATIONS = (
    ("Hallgrímskirkja", "Velkomin til Reykjavíkur!", 64.1417, -21.9266),
    ("Akureyri, miðbær", "Þú ert nálægt okkur á Akureyri.", 65.6835, -18.0878),
    ("Ísafjörður", "Mundu eftir kortinu á Ísafirði.", 66.0750, -23.1350),
    ("Egilsstaðir", "Velkomin á Egilsstaði.", 65.2653, -14.3948),
    ("Vestmannaeyjar", "Góða skemmtun í Eyjum!", 63.4427, -20.2734),
    ("Selfoss", "Kíktu við á Selfossi.", 63.9331, -20.9971),
    ("Húsavík", "Hvalaskoðun og kaffi á Húsavík.", 66.0449, -17.3389),
    ("Höfn í Hornafirði", "Humarinn bíður þín á Höfn.", 64.2539, -15.2082),
)

# Per format, (identifier, label, description) choices.
_FIELDS_BY_FORMAT = {
    "TEXT": (
        ("name", "Nafn / Name", "Fullt nafn korthafa"),
        ("company", "Fyrirtæki / Company", None),
        ("car_plate", "Bílnúmer / Licence plate", "Skráningarnúmer bíls"),
    ),
    "NUMBER": (
        ("member_number", "Félagsnúmer / Member number", None),
        ("locker_number", "Skápur / Locker", None),
        ("seat_count", "Fjöldi sæta / Seats", "Heil tala"),
    ),
    "DATE": (
        ("birth_date", "Fæðingardagur / Date of birth", None),
        ("valid_until", "Gildir til / Valid until", None),
        ("appointment_date", "Dagsetning tíma / Appointment date", "Dagurinn sem tíminn er bókaður"),
    ),
    "EMAIL": (("email", "Netfang / Email", "Netfang korthafa"), ("work_email", "Vinnunetfang / Work email", None)),
    "URL": (("website", "Vefsíða / Website", None), ("profile_url", "Prófíll / Profile", "Slóð á prófíl")),
    "KENNITALA": (("kennitala", "Kennitala / National ID", "Tíu tölustafir"),),
    "PHONE_NUMBER": (("phone", "Símanúmer / Phone", None), ("mobile", "Farsími / Mobile", "Með landsnúmeri ef erlent")),
}

_EMAIL_DOMAINS = ("fyrirtaeki.is", "skoli.is", "sveitarfelag.is")


def generated_template(index: int, template_id: str, rng: random.Random, delivery_page_url: str) -> dict:
    """Template number ``index`` (>= 1). The first two are the hand-made email+phone and two-email templates;
    the rest cycle through types and formats by index, so any 25 templates cover them all, and switch the
    special settings on by index too, so coverage does not depend on luck."""
    if index == 1:
        return _loyalty_card_with_email_and_phone(template_id, delivery_page_url)
    if index == 2:
        return _pupil_card_with_two_emails(template_id, delivery_page_url)

    template_type = TEMPLATE_TYPES[(index - 3) % len(TEMPLATE_TYPES)]
    name = None if index % 13 == 9 else rng.choice(_NAMES_BY_TYPE[template_type])
    description = rng.choice(_DESCRIPTIONS) if index % 5 != 4 else None
    template = _template_skeleton(template_id, template_type, name, description, delivery_page_url)

    # Input fields: one of the cycling format (mandatory), then up to three more.
    fields: list[dict] = []

    def add_field(field_format: str, field_type: str, *, mandatory: bool) -> None:
        taken = {field["identifier"] for field in fields}
        for identifier, label, field_description in _FIELDS_BY_FORMAT[field_format]:  # noqa: B007 - used after the loop
            if identifier not in taken:
                break
        else:
            identifier = f"{identifier}_{len(fields) + 1}"
        unique = field_format in ("EMAIL", "KENNITALA", "PHONE_NUMBER") and rng.random() < 0.3
        field = _input_field(
            label,
            identifier,
            field_format,
            field_type,
            mandatory=mandatory,
            unique=unique,
            description=field_description,
        )
        if field_description is None and rng.random() < 0.5:
            del field["description"]  # optional: sometimes null, sometimes absent
        fields.append(field)

    add_field(FIELD_FORMATS[index % len(FIELD_FORMATS)], FIELD_TYPES[index % 2], mandatory=True)
    for _ in range(rng.randint(0, 3)):
        add_field(rng.choice(FIELD_FORMATS), rng.choice(FIELD_TYPES), mandatory=rng.random() < 0.5)

    if index % 4 == 1:
        template["useEmailDomainVerification"] = True
        if not any(field["format"] == "EMAIL" for field in fields):
            add_field("EMAIL", "MEMBER", mandatory=True)
        domains = rng.sample(_EMAIL_DOMAINS, rng.randint(1, len(_EMAIL_DOMAINS)))
        template["allowedEmailDomains"] = [{"sortOrder": order, "emailDomain": d} for order, d in enumerate(domains)]
    if index % 5 == 2:
        if not any(field["format"] == "KENNITALA" for field in fields):
            add_field("KENNITALA", "MEMBER", mandatory=True)
        template["kennitalaAgeVerification"] = rng.choice((13, 18, 20))
    template["deliverByKennitala"] = any(field["format"] == "KENNITALA" for field in fields) and rng.random() < 0.7
    template["inputFields"] = fields

    if template_type in ("PUNCH", "MULTI_TICKET"):
        template["stamps"] = rng.choice((5, 10, 12, 20))
    if index % 7 == 5:
        template["status"] = "VOIDED"
    if index % 6 == 4:
        template["disableIssue"] = True
    if index % 8 == 6:
        template["posDistributionOnly"] = True
    if index % 5 == 3 or template_type == "GIFT":
        template["passPrice"] = rng.choice((990, 1500, 2490, 4900, 10000))
    if index % 3 == 0:
        template["hasDynamicBarcode"] = True
        template["dynamicBarcodeExpirationTimeSeconds"] = rng.choice((30, 60, 300))
        template["dynamicBarcodeType"] = rng.choice(("BASIC", "INCLUDE_TEMPLATE_ID"))
    if rng.random() < 0.5:
        sent = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(365 * 24 * 3600))
        template["whenLastUpdateSent"] = utc_timestamp(sent)

    for flag in (
        "isSharingProhibited",
        "isNFC",
        "singleDeviceOnly",
        "firstDeviceOnly",
        "oneDeviceAtATime",
        "oncePerDevice",
        "onePassOfTemplateTypePerDevice",
        "allowReward",
        "lockInputFields",
    ):
        template[flag] = rng.random() < 0.3
    template["supportsGoogleWallet"] = rng.random() < 0.85

    for place, relevant_text, latitude, longitude in rng.sample(_LOCATIONS, rng.randint(0, 2)):
        location = {"relevantText": relevant_text, "point": {"latitude": latitude, "longitude": longitude}}
        if rng.random() < 0.7:
            location["name"] = place
        template["locations"].append(location)

    # The docs say optional keys "may be null or absent": every fourth template leaves its nulls out.
    if index % 4 == 3:
        for key in OPTIONAL_TEMPLATE_KEYS:
            if template.get(key, "") is None:
                del template[key]
    return template


HOSTILE_TEMPLATE_ID = "0badc0de-0000-4000-8000-000000000001"  # stored after cleaning
HOSTILE_UNREADABLE_ID = "0badc0de-0000-4000-8000-000000000002"  # skipped: a price nobody can read
HOSTILE_TOTAL_ITEMS = 10**11


def hostile_items() -> list[object]:
    """What a broken or hostile upstream might send in a template list: values too long for their
    columns, NUL bytes (which PostgreSQL refuses in text and jsonb), numbers out of every column's
    range, a script URL, and items no mirror can store (no usable id, not an object, an unreadable price)."""
    long_identifier = "x" * 300
    return [
        {
            "id": HOSTILE_TEMPLATE_ID,
            "type": "MEMBER" * 7,
            "name": "Hostile\x00 " + "N" * 5000,
            "description": "Line one\x00line two",
            "status": "S" * 40,
            "stamps": 10**11,
            "passPrice": 10**15,
            "kennitalaAgeVerification": -(10**11),
            "deliveryPageUrl": "javascript:alert(document.cookie)",
            "whenLastUpdateSent": "not a date",
            "disableIssue": False,
            "posDistributionOnly": False,
            "nested": {"key\x00": ["value\x00"]},
            "inputFields": [
                {"label": "A\x00", "identifier": long_identifier + "a", "format": "TEXT" * 10, "type": "MEMBER"},
                {"label": "B", "identifier": long_identifier + "b", "format": "TEXT", "type": "MEMBER"},
            ],
        },
        {"id": "not-a-uuid", "name": "No usable id", "status": "ACTIVE", "type": "MEMBER"},
        42,
        {
            "id": HOSTILE_UNREADABLE_ID,
            "name": "Priced in words",
            "status": "ACTIVE",
            "type": "MEMBER",
            "passPrice": "a thousand krónur",
        },
    ]
