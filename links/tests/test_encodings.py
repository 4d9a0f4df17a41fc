"""Encodings said, not guessed: Mac Excel's and DOS's code pages told apart from Windows-1252 by which reading
gives Icelandic text, the encoding chosen on the upload form, the mapping page and the command, UTF-16 read,
Excel's sep= first line and DOS's trailing Ctrl-Z; through the real upload service on PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from io import StringIO

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command

from links import selectors, services
from links.csv_files import CsvFormatError, read_rows, sniff
from links.keyring import link_keys
from links.models import LinkBatch
from links.tokens import decode

from .factories import make_links, upload

pytestmark = pytest.mark.django_db

NAMES = ["Guðrún Jónsdóttir", "Þórður Ævarsson", "Ýr Ösp Bárðardóttir"]


def campaign(encoding: str, *, line_end: str = "\r\n", names=NAMES) -> bytes:
    lines = ["Nafn;Netfang"] + [f"{name};holder{number}@example.is" for number, name in enumerate(names, start=1)]
    return (line_end.join(lines) + line_end).encode(encoding)


def link_names(batch: LinkBatch) -> list[str]:
    with default_storage.open(batch.output_file.name, "rb") as stored:
        rows = list(csv.reader(io.StringIO(stored.read().decode("utf-8-sig"), newline=""), delimiter=batch.delimiter))
    return [decode(row[-2].rsplit("/p/", 1)[1], link_keys()).fields["name"] for row in rows[1:]]


@pytest.mark.parametrize(
    ("encoding", "line_end"),
    [("mac_iceland", "\r"), ("cp850", "\r\n"), ("cp1252", "\r\n"), ("utf-8", "\n")],
)
def test_each_code_page_is_told_apart_by_the_icelandic_it_gives(demo, tmp_path, encoding, line_end):
    source = tmp_path / "campaign.csv"
    source.write_bytes(campaign(encoding, line_end=line_end))
    batch = make_links(demo, source)
    assert (batch.encoding, batch.errors) == (encoding, 0)
    assert link_names(batch) == NAMES


def test_mac_roman_is_named_for_a_file_without_the_letters_only_mac_icelandic_has():
    assert sniff(campaign("mac_roman", line_end="\r", names=["Jón Ólafsson", "Ásta Örnólfsdóttir"])).encoding == (
        "mac_roman"
    )


def test_the_issues_mac_file_no_longer_reads_as_windows_1252(tmp_path):
    # "GuÝrœn J—nsd—ttir" was what a Mac Excel file gave before.
    data = campaign("mac_iceland", line_end="\r")
    dialect = sniff(data)
    header, rows = read_rows(io.BytesIO(data), dialect)
    assert [cells[0] for _, cells in rows] == NAMES
    assert data.decode("cp1252", "replace").split("\r")[1].startswith("GuÝrœn J—nsd—ttir")


def test_the_encoding_chosen_on_upload_and_by_the_command_wins_over_detection(demo, tmp_path):
    source = tmp_path / "campaign.csv"
    source.write_bytes(campaign("cp1252"))
    with source.open("rb") as binary:
        from django.core.files import File

        batch = services.link_batch_create(template=demo, uploaded_by=None, file=File(binary), encoding="cp850")
    assert batch.encoding == "cp850" and batch.header == ["Nafn", "Netfang"]
    out = tmp_path / "out.csv"
    stdout = StringIO()
    call_command(
        "generate_links", "--template", str(demo.pk), str(source), str(out), "--encoding", "mac_roman", "--json",
        stdout=stdout,
    )  # fmt: skip
    assert json.loads(stdout.getvalue())["encoding"] == "mac_roman"
    assert link_names(LinkBatch.objects.latest("pk"))[0] == NAMES[0].encode("cp1252").decode("mac_roman")


def test_staff_read_an_upload_again_in_another_encoding_before_confirming(demo, tmp_path, client, manager):
    source = tmp_path / "campaign.csv"
    source.write_bytes(("Nafn;Netfang;Félag\r\n" + "Guðrún;g@example.is;Sund\r\n").encode("mac_iceland"))
    batch = upload(demo, source)
    assert batch.encoding == "mac_iceland" and batch.header == ["Nafn", "Netfang", "Félag"]
    client.force_login(manager)
    page = client.get(f"/links/{batch.pk}/").content.decode()
    assert 'name="encoding"' in page and '<option value="mac_iceland" selected>Mac Icelandic</option>' in page
    assert "Mac Icelandic" in page and "<td>Guðrún</td>" in page
    response = client.post(f"/links/{batch.pk}/encoding/", {"encoding": "cp1252"})
    assert response.status_code == 302
    batch.refresh_from_db()
    assert batch.encoding == "cp1252" and batch.header == [
        "Nafn",
        "Netfang",
        "Félag".encode("mac_iceland").decode("cp1252"),
    ]
    assert selectors.link_batch_preview(batch=batch).rows[0][1][0] == "GuÝrœn"
    services.link_batch_reencode(batch=batch, encoding="mac_iceland")
    assert batch.header == ["Nafn", "Netfang", "Félag"] and batch.mapping == {"Nafn": "name", "Netfang": "email"}


def test_a_utf16_file_is_read_and_shown_as_it_was_written(demo, tmp_path, client, manager):
    source = tmp_path / "unicode.txt"
    source.write_bytes(campaign("utf-16", names=NAMES[:2]))
    batch = make_links(demo, source)
    assert (batch.source_encoding, batch.encoding, batch.errors) == ("utf-16", "utf-8", 0)
    assert link_names(batch) == NAMES[:2]
    pending = upload(demo, source)
    client.force_login(manager)
    page = client.get(f"/links/{pending.pk}/").content.decode()
    assert "UTF-16, converted to UTF-8" in page and "<td>Þórður Ævarsson</td>" in page
    assert f'action="/links/{pending.pk}/encoding/"' not in page  # converted: no other reading of it
    without_bom = tmp_path / "no-bom.csv"
    without_bom.write_bytes(campaign("utf-16-le", names=NAMES[:1]))
    from django.core.files import File

    with without_bom.open("rb") as binary:
        chosen = services.link_batch_create(template=demo, uploaded_by=None, file=File(binary), encoding="utf-16")
    assert chosen.header == ["Nafn", "Netfang"] and chosen.rows_total == 1


def test_excels_sep_line_names_the_delimiter_and_is_no_row(demo, tmp_path):
    source = tmp_path / "sep.csv"
    source.write_bytes(b"\xef\xbb\xbfsep=;\r\nNafn;Netfang\r\nAnna, yngri;anna@example.is\r\n")
    batch = make_links(demo, source)
    assert (batch.delimiter, batch.header, batch.rows_total, batch.errors) == (";", ["Nafn", "Netfang"], 1, 0)
    assert link_names(batch) == ["Anna, yngri"]
    with pytest.raises(CsvFormatError, match="names a delimiter the portal does not read"):
        sniff(b"sep=|\nNafn|Netfang\n")


def test_a_trailing_ctrl_z_is_no_row(demo, tmp_path):
    for ending in (b"\x1a", b"\x1a\r\n"):
        source = tmp_path / "dos.csv"
        source.write_bytes(campaign("cp850", names=NAMES[:1]) + ending)
        batch = make_links(demo, source)
        assert (batch.rows_total, batch.links, batch.errors) == (1, 1, 0)
