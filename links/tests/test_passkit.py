"""PassKit's own example files (tests/data/passkit/, copied from PassKit's SmartPass link generator, MIT
licence: see SOURCE.md) and PassKit's columns: where every column goes, through the real upload service on
PostgreSQL, the real link tokens, the claim and the sandbox's create-pass."""

from __future__ import annotations

import csv
import io
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command

from links import passkit, selectors, services
from links.keyring import link_keys
from links.models import EXTERNAL_ID_TARGET, LinkBatch
from links.tokens import decode
from members.models import AutofillSetting, Member

from .claim_factories import open_and_claim
from .factories import DATA, make_links, upload

pytestmark = pytest.mark.django_db

PASSKIT = DATA / "passkit"
MEMBER_FILE = PASSKIT / "example-member-data.csv"
COUPON_FILE = PASSKIT / "example-coupon-data.csv"
PAST_EXPIRY = (
    "Warning: universal.expiryDate 2021-06-22T23:59:00-05:00 has passed; the pass will be issued already expired."
)

# The demo template has name, email and phone. Every column of PassKit's files, and where it goes.
MEMBER_DESTINATIONS = {
    "universal.expiryDate": passkit.EXPIRATION_TARGET,
    "person.surname": "@surname:name",
    "person.forename": "@forename:name",
    "person.otherNames": "@othernames:name",
    "person.displayName": "name",
    "person.emailAddress": "email",
    "person.mobileNumber": "phone",
    "person.externalId": passkit.PERSON_EXTERNAL_ID_TARGET,
    "members.member.externalId": EXTERNAL_ID_TARGET,
    "meta.customField": passkit.BACK_FIELD_TARGET,
}
MEMBER_UNUSED = {
    "universal.optIn": "PassKit's marketing opt-in; SmartPages passes have no such setting.",
    "person.salutation": "no input field of this template takes it; choose one, or “Back field”, to keep it.",
    "person.suffix": "no input field of this template takes it; choose one, or “Back field”, to keep it.",
    "person.gender": "no input field of this template takes it; choose one, or “Back field”, to keep it.",
    "person.dateOfBirth": "no input field of this template takes it; choose one, or “Back field”, to keep it.",
    "members.tier.id": "PassKit's tier; in SmartPages a tier is a template of its own: upload to that template.",
    "members.member.points": "PassKit's points and member data; SmartPages passes keep no points.",
    "members.member.tierPoints": "PassKit's points and member data; SmartPages passes keep no points.",
    "members.member.secondaryPoints": "PassKit's points and member data; SmartPages passes keep no points.",
    "members.member.groupingIdentifier": "PassKit's points and member data; SmartPages passes keep no points.",
    "members.member.profileImage": "SmartPages takes no picture per pass.",
    "utm_source": "PassKit's campaign tracking; SmartPass links carry no tracking.",
    "utm_medium": "PassKit's campaign tracking; SmartPass links carry no tracking.",
    "utm_name": "PassKit's campaign tracking; SmartPass links carry no tracking.",
    "utm_term": "PassKit's campaign tracking; SmartPass links carry no tracking.",
    "utm_content": "PassKit's campaign tracking; SmartPass links carry no tracking.",
    "location[1].lat": "SmartPages keeps locations on the template, not on each pass.",
    "location[1].lon": "SmartPages keeps locations on the template, not on each pass.",
    "location[1].lockScreenMessage": "SmartPages keeps locations on the template, not on each pass.",
}
COUPON_DESTINATIONS = {
    **{key: value for key, value in MEMBER_DESTINATIONS.items() if key != "members.member.externalId"},
    "singleUseCoupons.coupon.externalId": EXTERNAL_ID_TARGET,
}
COUPON_UNUSED = {
    **{key: value for key, value in MEMBER_UNUSED.items() if not key.startswith("members.")},
    "singleUseCoupons.coupon.sku": "PassKit's coupon data; SmartPages keeps offers on the template.",
}


def read_output(batch: LinkBatch) -> tuple[bytes, list[list[str]]]:
    with default_storage.open(batch.output_file.name, "rb") as stored:
        data = stored.read()
    return data, list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def payload_of(link: str):
    return decode(link.rsplit("/p/", 1)[1], link_keys())


@pytest.mark.parametrize(
    ("path", "destinations", "unused"),
    [(MEMBER_FILE, MEMBER_DESTINATIONS, MEMBER_UNUSED), (COUPON_FILE, COUPON_DESTINATIONS, COUPON_UNUSED)],
    ids=["member", "coupon"],
)
def test_every_column_of_passkits_example_files_has_a_destination_or_a_reason(demo, path, destinations, unused):
    header = next(csv.reader(path.open(encoding="utf-8")))
    assert set(destinations) | set(unused) == set(header) and not set(destinations) & set(unused)
    batch = make_links(demo, path)
    assert batch.mapping == destinations
    assert dict(selectors.link_unused_columns(header=batch.header, mapping=batch.mapping)) == unused
    assert (batch.status, batch.rows_total, batch.links, batch.errors) == ("succeeded", 2, 2, 0)
    _, rows = read_output(batch)
    assert rows[0] == header + ["smartpass_link", "error"]
    # A past expiry is a warning (PassKit makes such passes too), never an error.
    assert [row[-1] for row in rows[1:]] == [PAST_EXPIRY, PAST_EXPIRY]
    patrick, paul = (payload_of(row[-2]) for row in rows[1:])
    assert patrick.fields == {
        "name": "Patrick Kosterman",
        "email": "patrick@passkit.com",
        "@expirationDate": "2021-06-22T23:59:00-05:00",
        # PassKit's coupon example has one cell fewer than its header: its meta.customField holds "USD 10".
        "@back:customField": "My custom value" if path == MEMBER_FILE else "USD 10",
    }
    assert (patrick.external_id, paul.external_id) == ("ABC", "DEF")
    # The input columns come back exactly as given (PassKit's rows are a cell short: padded to the header).
    given = list(csv.reader(path.open(encoding="utf-8")))[1:]
    assert [row[: len(header)] for row in rows[1:]] == [cells + [""] * (len(header) - len(cells)) for cells in given]


def test_the_command_lists_the_columns_that_reach_no_pass_by_name(demo, tmp_path):
    stdout = StringIO()
    out = tmp_path / "out.csv"
    call_command("generate_links", "--template", str(demo.pk), str(MEMBER_FILE), str(out), "--json", stdout=stdout)
    outcome = json.loads(stdout.getvalue())
    assert outcome["unused_columns"] == list(MEMBER_UNUSED)
    assert (outcome["rows"], outcome["links"], outcome["errors"], outcome["warnings"]) == (2, 2, 0, 2)


def test_a_claimed_passkit_link_sends_expiry_valid_from_and_back_fields_to_smartpages(demo, client, sandbox, tmp_path):
    source = tmp_path / "campaign.csv"
    source.write_text(
        "person.forename,person.otherNames,person.surname,person.emailAddress,universal.expiryDate,"
        "universal.validFrom,meta.Félagi síðan,meta.Deild\n"
        "Guðrún,Björk,Jónsdóttir,gudrun@example.is,2099-12-31,2026-01-01T08:00:00Z,2010,Sund\n",
        encoding="utf-8",
    )
    batch = make_links(demo, source)
    assert batch.errors == 0 and batch.warnings == 0
    _, rows = read_output(batch)
    link = rows[1][-2]
    response = open_and_claim(client, link[link.index("/p/") :])
    assert response.status_code == 302
    member = Member.objects.get()
    assert member.values == {"name": "Guðrún Björk Jónsdóttir", "email": "gudrun@example.is"}
    upstream = next(issued for issued in sandbox.passes() if issued["id"] == str(member.pass_id))
    assert upstream["expirationDate"] == "2099-12-31T23:59:59+00:00"
    assert upstream["validFrom"] == "2026-01-01T08:00:00+00:00"
    assert upstream["backFields"] == [{"label": "Félagi síðan", "value": "2010"}, {"label": "Deild", "value": "Sund"}]
    assert member.pass_values == {
        "expirationDate": "2099-12-31T23:59:59+00:00",
        "validFrom": "2026-01-01T08:00:00+00:00",
        "backFields": [{"label": "Félagi síðan", "value": "2010"}, {"label": "Deild", "value": "Sund"}],
    }


def test_the_sandbox_refuses_malformed_pass_dates_and_back_fields(sandbox):
    from sandbox import DEMO_TEMPLATE_ID

    fields = [{"identifier": "name", "value": "A"}, {"identifier": "email", "value": "a@example.is"}]
    base = {"passTemplateId": DEMO_TEMPLATE_ID, "inputFields": fields}
    assert sandbox._create_pass({**base, "expirationDate": "31.12.2026"})[0] == 400
    assert sandbox._create_pass({**base, "validFrom": "2026-01-01T00:00:00"})[0] == 400  # no offset
    assert sandbox._create_pass({**base, "backFields": [{"label": "x"}]})[0] == 400
    assert sandbox._create_pass({**base, "expirationDate": "2026-12-31T23:59:59+00:00"})[0] == 201


def test_name_parts_fill_the_name_only_where_the_display_name_is_empty(demo, tmp_path):
    source = tmp_path / "names.csv"
    source.write_text(
        "person.displayName,person.forename,person.surname,person.emailAddress\n"
        "Sigga,Sigríður,Jónsdóttir,sigga@example.is\n"
        ",Jón,Jónsson,jon@example.is\n",
        encoding="utf-8",
    )
    batch = make_links(demo, source)
    _, rows = read_output(batch)
    assert [payload_of(row[-2]).fields["name"] for row in rows[1:]] == ["Sigga", "Jón Jónsson"]


def test_the_programs_external_id_wins_over_the_persons_and_a_difference_is_a_warning(demo, tmp_path):
    source = tmp_path / "ids.csv"
    source.write_text(
        "person.displayName,person.emailAddress,person.externalId,members.member.externalId\n"
        "A,a@example.is,P-1,M-1\n"
        "B,b@example.is,P-2,\n"
        "C,c@example.is,M-3,M-3\n",
        encoding="utf-8",
    )
    batch = make_links(demo, source)
    _, rows = read_output(batch)
    assert [payload_of(row[-2]).external_id for row in rows[1:]] == ["M-1", "P-2", "M-3"]
    assert [row[-1] for row in rows[1:]] == [
        "Warning: the program's External ID “M-1” and person.externalId “P-1” differ; the link uses “M-1”.",
        "",
        "",
    ]


def test_a_date_that_is_no_date_costs_the_row_that_date_or_with_strict_the_link(demo, tmp_path):
    source = tmp_path / "dates.csv"
    source.write_text(
        "person.displayName,person.emailAddress,universal.expiryDate\nA,a@example.is,31.12.2099\n", encoding="utf-8"
    )
    message = (
        "universal.expiryDate: “31.12.2099” is not a date; write a date (2026-12-31) or a date and time as PassKit "
        "writes them (2026-12-31T23:59:00Z, 2026-12-31T23:59:00-05:00, 2026-12-31 23:59)."
    )
    _, rows = read_output(make_links(demo, source))
    assert rows[1][-1] == f"Warning: {message} The link was made without it."
    assert "@expirationDate" not in payload_of(rows[1][-2]).fields
    _, rows = read_output(make_links(demo, source, strict=True))
    assert rows[1][-2:] == ["", message]


def test_an_explicit_external_id_on_an_autofill_by_email_template_is_kept_and_the_page_says_so(
    demo, client, manager, tmp_path
):
    AutofillSetting.objects.create(template=demo, source="email", field_identifier="email")
    batch = make_links(demo, MEMBER_FILE)
    assert (batch.errors, batch.links) == (0, 2)
    _, rows = read_output(batch)
    assert payload_of(rows[1][-2]).external_id == "ABC"
    client.force_login(manager)
    pending = upload(demo, MEMBER_FILE)
    page = client.get(f"/links/{pending.pk}/").content.decode()
    assert "A row with a value in the column that goes into External ID keeps that External ID" in page
    assert "autofill fills only the rows without one" in page
    assert "<span data-unused-count>19 columns</span> will not reach the pass" in page
    assert "<code>members.member.profileImage</code> — SmartPages takes no picture per pass." in page


# --- PassKit's output format -----------------------------------------------------------------------------------
def passkit_batch(template, path: Path, *, strict: bool = False) -> LinkBatch:
    with path.open("rb") as binary:
        from django.core.files import File

        batch = services.link_batch_create(
            template=template,
            uploaded_by=None,
            file=File(binary, name=path.name),
            output_format=LinkBatch.OutputFormat.PASSKIT,
        )
    services.link_batch_confirm(batch=batch, mapping=batch.mapping, strict=strict, enqueue=False)
    return services.link_batch_process(batch_id=batch.pk)


def test_passkit_format_without_a_problem_row_has_smarturl_lf_no_bom_and_no_error_column(demo, tmp_path):
    source = tmp_path / "clean.csv"
    source.write_text(
        "person.displayName,person.emailAddress,person.mobileNumber,note,joined\r\n"
        "Anna,anna@example.is,+354 612 3456,=HYPERLINK(1),2024-05-01\r\n"
        'Björn,bjorn@example.is,,"line\nbreak, and comma",-5\r\n',
        encoding="utf-8",
    )
    batch = passkit_batch(demo, source)
    data, rows = read_output(batch)
    assert not data.startswith(b"\xef\xbb\xbf") and b"\r\n" not in data.replace(b'"line\nbreak', b"")
    assert rows[0] == ["person.displayName", "person.emailAddress", "person.mobileNumber", "note", "joined", "smartUrl"]
    # Unguarded but for the cell a spreadsheet would evaluate as a formula.
    assert rows[1][:5] == ["Anna", "anna@example.is", "+354 612 3456", "'=HYPERLINK(1)", "2024-05-01"]
    assert rows[2][:5] == ["Björn", "bjorn@example.is", "", "line\nbreak, and comma", "-5"]
    assert all(row[5].startswith("http://") for row in rows[1:]) and {len(row) for row in rows} == {6}


def test_passkit_format_with_a_problem_row_keeps_the_error_column_for_every_row(demo, tmp_path):
    source = tmp_path / "errors.csv"
    source.write_text("person.displayName,person.emailAddress\nAnna,anna@example.is\nBjörn,\n", encoding="utf-8")
    data, rows = read_output(passkit_batch(demo, source))
    assert not data.startswith(b"\xef\xbb\xbf") and b"\r" not in data
    assert rows[0] == ["person.displayName", "person.emailAddress", "smartUrl", "error"]
    assert [row[-1] for row in rows[1:]] == ["", "Netfang / Email is required."]


def test_passkit_format_of_passkits_own_file_from_the_command(demo, tmp_path):
    out = tmp_path / "out.csv"
    call_command("generate_links", "--template", str(demo.pk), str(MEMBER_FILE), str(out), "--format", "passkit")
    data = out.read_bytes()
    header = data.split(b"\n", 1)[0].decode()
    assert header.endswith(",smartUrl,error") and not data.startswith(b"\xef\xbb\xbf") and b"\r" not in data
    assert LinkBatch.objects.get().get_output_format_display().startswith("PassKit")
