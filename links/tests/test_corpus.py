"""The corpus of awkward campaign CSVs in tests/data/, each with its exact outcome, through the real service
on PostgreSQL: either the sentence the upload form shows, or the result file row by row."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import pytest
from django.core.files.storage import default_storage

from links import services
from links.csv_files import safe_cell
from links.keyring import link_keys
from links.models import LinkBatch
from links.tokens import decode
from members.models import AutofillSetting, Member

from .factories import DATA, demo_template, every_format_template, make_links

pytestmark = pytest.mark.django_db

REQUIRED_EMAIL = "Netfang / Email is required."
REQUIRED_NAME = "Nafn / Name is required."
SAME_VALUES = "Warning: the same values as row 1."
LEFT_OUT = " The link was made without it."
ALREADY_MEMBER = "Warning: a member with this External ID already exists; the link shows that pass."


# One bad value in an optional field, and the row's error (strict) or warning (by default) about it.
BAD_PHONES = {
    1: "Símanúmer / Phone: “555-ABCD” is not a valid phone number. It contains letters.",
    2: "Símanúmer / Phone: “12” is not a valid phone number. Icelandic numbers have 7 or 9 digits.",
    3: "Símanúmer / Phone: “+999 1234567” is not a valid phone number. Its country code is unknown.",
    4: "Símanúmer / Phone: “00447700900123” is not a valid phone number. It is not an assigned +44 number.",
}
BAD_KENNITOLUR = {
    1: "Kennitala: “12345” is not a kennitala. A kennitala has 10 digits, e.g. 010130-2989.",
    2: "Kennitala: “3113992389” is not a kennitala. Its first six digits are not a real date.",
    3: "Kennitala: “0101992000” is not a kennitala. Its date is in the future.",
    6: "Kennitala: “0101302989x” is not a kennitala. A kennitala has 10 digits, e.g. 010130-2989.",
}
KENNITALA_CHECK_DIGIT = (
    "Warning: Kennitala: the check digit of “0101302979” does not match. Please double-check the number "
    "(some kennitölur issued since February 2026 fail this check)."
)


@dataclass
class Case:
    file: str
    template: str = "demo"  # demo | every_format | strict (every format, hi.is addresses only, 18+)
    strict: bool = False  # the upload's choice: no link for a row with an invalid optional value
    form_error: str = ""
    rows: int = 0
    links: int = 0
    duplicates: int = 0
    existing: int = 0
    errors: dict[int, str] = field(default_factory=dict)  # row → the error cell of a row without a link
    warnings: dict[int, str] = field(default_factory=dict)  # row → the error cell of a row with a link
    values: dict[int, dict[str, str]] = field(default_factory=dict)  # row → the field values in its link
    external_ids: dict[int, str] = field(default_factory=dict)  # row → the explicit External ID in its link
    limits: dict[str, int] = field(default_factory=dict)
    autofill: str = "off"
    members: tuple[str, ...] = ()  # External IDs that already have a member


CASES = [
    Case(
        "01_plain_utf8.csv",
        rows=3,
        links=3,
        values={
            1: {"name": "Anna Jónsdóttir", "email": "anna@example.is", "phone": "+3546123456"},
            2: {"name": "Björn Sigurðsson", "email": "bjorn@example.is", "phone": "+3546123457"},
            3: {"name": "Guðrún Ólafsdóttir", "email": "gudrun@example.is"},
        },
    ),
    Case(
        "02_utf8_bom_labels.csv",
        rows=2,
        links=2,
        values={1: {"name": "Þórdís Ævarsdóttir", "email": "thordis@example.is", "phone": "+3548201234"}},
    ),
    Case(
        "03_cp1252_icelandic.csv",
        rows=3,
        links=3,
        values={
            1: {"name": "Þórður Ægisson", "email": "thordur@example.is", "phone": "+3546123456"},
            2: {"name": "Ðóra Björk Ösp", "email": "dora@example.is"},
        },
    ),
    Case("04_semicolons.csv", rows=2, links=2, values={2: {"name": "Jón; yngri", "email": "jon@example.is"}}),
    Case("05_tabs.csv", rows=2, links=2, values={2: {"name": "Björn, Sigurðsson", "email": "bjorn@example.is"}}),
    Case(
        "06_quoted_newlines.csv",
        rows=3,
        links=3,
        values={
            1: {"name": "Anna\nJónsdóttir", "email": "anna@example.is"},
            2: {"name": 'Björn "Bjössi" Sigurðsson, eldri', "email": "bjorn@example.is", "phone": "+3546123456"},
            3: {"name": "Guðrún", "email": "gudrun@example.is"},
        },
    ),
    Case("07_crlf.csv", rows=2, links=2, values={2: {"name": "Björn", "email": "bjorn@example.is"}}),
    Case(
        "08_passkit_headers.csv",
        rows=2,
        links=2,
        values={1: {"name": "Percy PassKit", "email": "percy@example.com", "phone": "+447911123456"}},
        external_ids={1: "CUST-001"},
    ),  # trimmed; row 2 has none
    Case("09_duplicate_rows.csv", rows=4, links=4, duplicates=2, warnings={3: SAME_VALUES, 4: SAME_VALUES}),
    Case(
        "10_missing_mandatory.csv",
        rows=4,
        links=1,
        errors={
            2: REQUIRED_EMAIL,
            3: REQUIRED_NAME,
            4: f"{REQUIRED_NAME} {REQUIRED_EMAIL}",
        },
    ),
    Case(
        "11_bad_emails.csv",
        rows=5,
        links=1,
        errors={
            1: "Netfang / Email: “anna@” is not a valid email address. There must be something after the @-sign.",
            2: "Netfang / Email: “bjorn at example.is” is not a valid email address. An email address must have an @-sign.",
            3: "Netfang / Email: “gudrun@@example.is” is not a valid email address. The part after the @-sign contains "
            "invalid characters: '@'.",
            4: "Netfang / Email: “dora@example” is not a valid email address. The part after the @-sign is not valid. "
            "It should have a period.",
        },
        values={5: {"name": "E", "email": "eva@example.is"}},
    ),
    # The phone is optional: a bad one costs the row only the phone, unless the upload is strict.
    Case(
        "12_bad_phones.csv",
        rows=5,
        links=5,
        warnings={number: f"Warning: {message}{LEFT_OUT}" for number, message in BAD_PHONES.items()},
        values={
            1: {"name": "A", "email": "a@example.is"},
            5: {"name": "E", "email": "e@example.is", "phone": "+3546123456"},
        },
    ),
    Case(
        "12_bad_phones.csv",
        strict=True,
        rows=5,
        links=1,
        errors=BAD_PHONES,
        values={5: {"name": "E", "email": "e@example.is", "phone": "+3546123456"}},
    ),
    Case(
        "13_formula_cells.csv",
        rows=3,
        links=3,
        values={1: {"name": '=HYPERLINK("http://evil.example","click")', "email": "a@example.is"}},
    ),
    Case("14_empty.csv", form_error="The file is empty."),
    Case("15_header_only.csv", form_error="The file has column names but no rows; add one row per pass holder."),
    Case(
        "16_header_and_blank_lines.csv",
        form_error="The file has column names but no rows; add one row per pass holder.",
    ),
    Case(
        "17_ragged_rows.csv",
        rows=4,
        links=2,
        errors={
            2: REQUIRED_EMAIL,
            4: "This row has 2 more cells than the header: “extra”, “values”. Check it for a stray delimiter or a "
            "missing quotation mark.",
        },
        values={3: {"name": "Guðrún", "email": "gudrun@example.is"}},
    ),
    Case("18_binary_junk.csv", form_error="This file does not look like a CSV text file."),
    Case(
        "19_excel_workbook.csv",
        form_error="This looks like an Excel workbook, not a CSV file; in Excel choose "
        "Save As › “CSV UTF-8” and upload that file.",
    ),
    Case("20_utf16.csv", rows=1, links=1, values={1: {"name": "Anna", "email": "anna@example.is"}}),
    Case(
        "21_over_byte_limit.csv",
        form_error="The file is 2.2 KB; the limit is 1 KB.",
        limits={"LINKS_MAX_UPLOAD_BYTES": 1024},
    ),
    Case(
        "22_over_row_limit.csv",
        form_error="The file has more than 5 rows; split it into smaller files.",
        limits={"LINKS_MAX_ROWS": 5},
    ),
    Case(
        "23_invalid_utf8_late.csv",
        form_error="The file is not valid UTF-8 text in row 2501; choose its encoding, or save it as “CSV UTF-8” and "
        "upload it again.",
    ),
    Case(
        "24_duplicate_header.csv",
        form_error="The column name “Email” appears more than once in the header row; column names must be different.",
    ),
    # The quotation mark never closed swallows the rest of the file into one cell: that record has no email.
    Case("25_unclosed_quote.csv", rows=2, links=1, errors={2: REQUIRED_EMAIL}),
    Case("26_extra_columns.csv", rows=2, links=2, values={1: {"name": "Anna", "email": "anna@example.is"}}),
    Case(
        "27_whitespace_and_case.csv",
        rows=1,
        links=1,
        values={1: {"name": "Anna Jónsdóttir", "email": "anna@example.is", "phone": "+3546123456"}},
    ),
    Case(
        "28_bad_kennitolur.csv",
        template="every_format",
        rows=6,
        links=6,
        warnings={
            **{number: f"Warning: {message}{LEFT_OUT}" for number, message in BAD_KENNITOLUR.items()},
            4: KENNITALA_CHECK_DIGIT,
        },
        values={1: {"name": "A"}, 5: {"name": "E", "kennitala": "0101302989"}},
    ),
    Case(
        "28_bad_kennitolur.csv",
        template="every_format",
        strict=True,
        rows=6,
        links=2,
        errors=BAD_KENNITOLUR,
        warnings={4: KENNITALA_CHECK_DIGIT},
        values={5: {"name": "E", "kennitala": "0101302989"}},
    ),
    Case(
        "29_bad_dates.csv",
        template="every_format",
        strict=True,
        rows=5,
        links=2,
        errors={
            1: "Fæðingardagur: “31.02.2024” is not a real date.",
            2: "Fæðingardagur: “2024/01/05” is not a date. Use yyyy-mm-dd or dd.mm.yyyy.",
            4: "Fæðingardagur: “2024-13-01” is not a real date.",
        },
        values={3: {"name": "C", "kennitala": "0101302989", "birthday": "2024-01-05"}},
    ),
    Case(
        "30_numbers_and_urls.csv",
        template="every_format",
        strict=True,
        rows=5,
        links=1,
        errors={
            1: "Félagsnúmer: “1.000” is not a whole number. Write it without thousands separators, e.g. 1000.",
            2: "Félagsnúmer: “12.5” is not a whole number. Decimals are not allowed. Vefsíða: “example.is” is not a "
            "valid web address. It must start with http:// or https://.",
            3: "Vefsíða: “https://example.is/a b” is not a valid web address. It contains spaces or characters a URL "
            "cannot have.",
            4: "Vefsíða: “ftp://example.is” is not a valid web address. It must start with http:// or https://.",
        },
        values={
            5: {
                "name": "E",
                "kennitala": "0101302989",
                "memberNumber": "42",
                "website": "https://sund.example.is/felagar?id=42",
            }
        },
    ),
    # Both bad values of row 2 are left out, each with its warning; the row keeps what was good.
    Case(
        "30_numbers_and_urls.csv",
        template="every_format",
        rows=5,
        links=5,
        warnings={
            1: "Warning: Félagsnúmer: “1.000” is not a whole number. Write it without thousands separators, e.g. "
            f"1000.{LEFT_OUT}",
            2: f"Warning: Félagsnúmer: “12.5” is not a whole number. Decimals are not allowed.{LEFT_OUT} Warning: "
            f"Vefsíða: “example.is” is not a valid web address. It must start with http:// or https://.{LEFT_OUT}",
            3: "Warning: Vefsíða: “https://example.is/a b” is not a valid web address. It contains spaces or "
            f"characters a URL cannot have.{LEFT_OUT}",
            4: "Warning: Vefsíða: “ftp://example.is” is not a valid web address. It must start with http:// or "
            f"https://.{LEFT_OUT}",
        },
        values={
            1: {"name": "A", "kennitala": "0101302989", "website": "https://example.is"},
            2: {"name": "B", "kennitala": "0101302989"},
            4: {"name": "D", "kennitala": "0101302989", "memberNumber": "0"},
        },
    ),
    # Sími is a mandatory MEMBER field: the holder gives it on the claim page, so the issuer may leave it out.
    Case(
        "31_member_fields_left_empty.csv",
        template="every_format",
        rows=2,
        links=2,
        values={1: {"name": "A", "kennitala": "0101302989"}},
    ),
    # Optional, but under the template's rules (allowed domains, minimum age): refused even when not strict.
    Case(
        "32_domains_and_age.csv",
        template="strict",
        rows=4,
        links=1,
        errors={
            1: "Netfang: “anna@gmail.com” is not allowed. Use an address at hi.is.",
            2: "Kennitala: the holder must be at least 18 years old.",
            4: "Kennitala: “5001302979” must be a person's kennitala, not a company's.",
        },
        values={3: {"name": "C", "kennitala": "0101302989", "email": "gudrun@hi.is"}},
    ),
    Case(
        "33_too_long_for_a_link.csv",
        template="every_format",
        rows=2,
        links=1,
        errors={2: "The values in this row are too long to fit in a link."},
    ),
    Case(
        "34_existing_members.csv",
        autofill="email",
        members=("anna@example.is",),
        rows=2,
        links=2,
        existing=1,
        warnings={1: ALREADY_MEMBER},
    ),
    Case(
        "35_autofill_duplicates.csv",
        autofill="email",
        rows=3,
        links=3,
        duplicates=1,
        warnings={3: "Warning: the same External ID as row 1."},
    ),
]


def _template(kind: str):
    if kind == "every_format":
        return every_format_template()
    if kind == "strict":
        return every_format_template(allowed_domains=["hi.is"], min_age=18)
    return demo_template()


def _read_output(batch: LinkBatch, name: str) -> tuple[bytes, list[list[str]]]:
    raw = default_storage.open(name, "rb").read()
    return raw, list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""), delimiter=batch.delimiter))


def _input_rows(path) -> list[list[str]]:
    raw = path.read_bytes()
    text = (
        raw.decode("utf-8-sig")
        if raw.startswith(b"\xef\xbb\xbf")
        else (raw.decode("utf-8") if _is_utf8(raw) else raw.decode("cp1252"))
    )
    delimiter = ";" if "04_" in path.name else "\t" if "05_" in path.name else ","
    return [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)]


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_the_corpus_has_at_least_25_files_and_each_has_an_expected_outcome():
    assert len(CASES) >= 25
    assert {case.file for case in CASES} == {path.name for path in DATA.iterdir() if path.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[case.file + (" strict" if case.strict else "") for case in CASES])
def test_corpus_file(case: Case, sandbox, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    for name, value in case.limits.items():
        setattr(settings, name, value)
    template = _template(case.template)
    if case.autofill != "off":
        AutofillSetting.objects.create(template=template, source=case.autofill, field_identifier=case.autofill)
    for external_id in case.members:
        Member.objects.create(template=template, external_id=external_id, source="manual", status="issued")
    path = DATA / case.file

    if case.form_error:
        with pytest.raises(services.LinkUploadError) as refused:
            make_links(template, path)
        assert str(refused.value) == case.form_error
        assert not LinkBatch.objects.exists()
        return

    batch = make_links(template, path, strict=case.strict)

    assert batch.status == "succeeded", batch.error
    assert (batch.rows_done, batch.links, batch.errors) == (case.rows, case.links, len(case.errors))
    assert (batch.duplicates, batch.existing_members) == (case.duplicates, case.existing)
    assert batch.rows_total == case.rows
    raw, output = _read_output(batch, batch.output_file.name)
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with a BOM, for Excel
    header, rows = output[0], output[1:]
    assert header == batch.header + ["smartpass_link", "error"]
    assert len(rows) == case.rows  # every row comes back, in order
    for number, row in enumerate(rows, start=1):
        link, error = row[-2], row[-1]
        if number in case.errors:
            assert (link, error) == ("", case.errors[number]), f"row {number}"
            continue
        assert error == case.warnings.get(number, ""), f"row {number}"
        assert link.startswith(f"{settings.PUBLIC_BASE_URL}/p/")
        payload = decode(link.rsplit("/", 1)[1], link_keys())
        assert (str(payload.template_id), payload.batch_id, payload.row) == (str(template.pk), batch.pk, number)
        assert payload.external_id == case.external_ids.get(number)
        if number in case.values:
            assert payload.fields == case.values[number], f"row {number}"

    _, error_rows = _read_output(batch, batch.errors_file.name)
    assert [row[-1] for row in error_rows[1:]] == list(case.errors.values())


def test_original_cells_come_back_unchanged_except_formula_guards(sandbox, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    batch = make_links(demo_template(), DATA / "13_formula_cells.csv")
    _, output = _read_output(batch, batch.output_file.name)
    assert [row[:4] for row in output] == [
        ["name", "email", "phone", "note"],
        ['\'=HYPERLINK("http://evil.example","click")', "a@example.is", "", "'=1+2"],
        ["'+SUM(A1)", "b@example.is", "", "'@cmd"],
        ["'-2+3", "c@example.is", "+3546123456", "-5"],  # a plain number is left alone
    ]


@pytest.mark.parametrize(
    "name",
    [
        "01_plain_utf8.csv",
        "03_cp1252_icelandic.csv",
        "06_quoted_newlines.csv",
        "17_ragged_rows.csv",
        "26_extra_columns.csv",
    ],
)
def test_every_input_column_comes_back_in_its_place(name, sandbox, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    batch = make_links(demo_template(), DATA / name)
    _, output = _read_output(batch, batch.output_file.name)
    width = len(batch.header)
    expected = [
        [safe_cell(cell) for cell in (row + [""] * width)[:width]] for row in _input_rows(DATA / name) if row
    ]  # only blank lines (no cells) are not rows
    assert [row[:width] for row in output] == expected


def test_empty_rows_and_extra_cells_come_back_with_an_error_and_no_value_is_lost(sandbox, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    path = tmp_path / "gaps.csv"
    path.write_bytes(
        "name,email,phone\r\n"
        "Anna,anna@example.is,\r\n"
        ",,\r\n"  # an empty row: the spreadsheet shows it, so the result has it too
        "\r\n"  # a blank line: no cells, not a row
        'Björn,bjorn@example.is,6123456,=1+1,"two\nlines"\r\n'
        "  ,  \r\n"
        "Gunna,gunna@example.is,\r\n"
        "\r\n".encode()
    )

    batch = make_links(demo_template(), path)

    assert (batch.rows_done, batch.rows_total, batch.links, batch.errors) == (5, 5, 2, 3)
    _, output = _read_output(batch, batch.output_file.name)
    assert all(len(row) == 5 for row in output)  # smartpass_link and error stay in their columns
    assert [row[:3] + [row[4]] for row in output[1:]] == [
        ["Anna", "anna@example.is", "", ""],
        ["", "", "", "This row is empty."],
        [
            "Björn",
            "bjorn@example.is",
            "6123456",
            "This row has 2 more cells than the header: “=1+1”, “two\nlines”. "
            "Check it for a stray delimiter or a missing quotation mark.",
        ],
        ["  ", "  ", "", "This row is empty."],
        ["Gunna", "gunna@example.is", "", ""],
    ]
    assert [bool(row[3]) for row in output[1:]] == [True, False, False, False, True]
    _, error_rows = _read_output(batch, batch.errors_file.name)
    assert [row[-1] for row in error_rows[1:]] == [output[2][4], output[3][4], output[4][4]]


def test_a_file_whose_rows_are_all_empty_is_refused_at_upload(sandbox, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    path = tmp_path / "nothing.csv"
    path.write_bytes(b"name,email\r\n,\r\n \r\n\r\n")
    with pytest.raises(services.LinkUploadError, match="^The file has column names but no rows"):
        make_links(demo_template(), path)
    assert not LinkBatch.objects.exists()
