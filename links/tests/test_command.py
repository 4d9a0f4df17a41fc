"""`manage.py generate_links` and `manage.py generate_link_key`, and the start-up check of the link keys."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from links.keyring import link_keys
from links.models import LinkBatch
from links.tokens import decode, parse_link_keys

from .factories import DATA, demo_template

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo(sandbox, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return demo_template()


@pytest.mark.django_db
def test_generate_links_writes_the_same_output_as_the_page_and_prints_json(demo, tmp_path):
    out = tmp_path / "out.csv"
    stdout = StringIO()
    call_command(
        "generate_links",
        "--template",
        str(demo.pk),
        str(DATA / "10_missing_mandatory.csv"),
        str(out),
        "--json",
        stdout=stdout,
    )
    outcome = json.loads(stdout.getvalue())
    batch = LinkBatch.objects.get()
    assert outcome == {
        "rows": 4,
        "links": 1,
        "errors": 3,
        "warnings": 0,
        "duplicates": 0,
        "existing_members": 0,
        "unused_columns": [],
        "encoding": "utf-8",
        "batch": batch.pk,
    }
    assert batch.created_via == "command" and batch.uploaded_by is None
    rows = list(csv.reader(out.open(encoding="utf-8-sig", newline="")))
    assert len(rows) == 5 and rows[0][-2:] == ["smartpass_link", "error"]
    assert [row[-1] for row in rows[2:]] == [
        "Netfang / Email is required.",
        "Nafn / Name is required.",
        "Nafn / Name is required. Netfang / Email is required.",
    ]


@pytest.mark.django_db
def test_single_use_puts_the_flag_into_every_link_and_on_the_batch(demo, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("name,email\nAnna Jónsdóttir,anna@example.is\nBjarni Þórsson,bj@example.is\n", encoding="utf-8")
    plain, single = tmp_path / "plain.csv", tmp_path / "single.csv"
    call_command("generate_links", "--template", str(demo.pk), str(source), str(plain), stdout=StringIO())
    call_command(
        "generate_links", "--template", str(demo.pk), str(source), str(single), "--single-use", stdout=StringIO()
    )

    def payloads(path):
        rows = list(csv.DictReader(path.open(encoding="utf-8-sig")))
        return [decode(row["smartpass_link"].rsplit("/", 1)[1], link_keys()) for row in rows]

    assert [p.single_use for p in payloads(plain)] == [False, False]
    batch = LinkBatch.objects.get(single_use=True)
    assert [(p.single_use, p.batch_id, p.row) for p in payloads(single)] == [(True, batch.pk, 1), (True, batch.pk, 2)]


@pytest.mark.django_db
def test_a_bad_optional_phone_costs_the_row_only_the_phone_unless_strict(demo, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("name,email,phone\nAnna,anna@example.is,600 5729\nBjörn,bjorn@example.is,820 0001\n")
    problem = "Símanúmer / Phone: “600 5729” is not a valid phone number. It is not an assigned Icelandic number."
    results = {}
    for flags in ([], ["--strict"]):
        out, stdout = tmp_path / f"out{len(flags)}.csv", StringIO()
        arguments = ["--template", str(demo.pk), str(source), str(out), "--json", *flags]
        call_command("generate_links", *arguments, stdout=stdout)
        results[bool(flags)] = json.loads(stdout.getvalue()), list(csv.reader(out.open(encoding="utf-8-sig")))[1:]

    outcome, rows = results[False]
    assert (outcome["links"], outcome["errors"], outcome["warnings"]) == (2, 0, 1)
    assert rows[0][-1] == f"Warning: {problem} The link was made without it."
    assert decode(rows[0][-2].rsplit("/", 1)[1], link_keys()).fields == {"name": "Anna", "email": "anna@example.is"}
    assert decode(rows[1][-2].rsplit("/", 1)[1], link_keys()).fields["phone"] == "+3548200001"

    outcome, rows = results[True]
    assert (outcome["links"], outcome["errors"], outcome["warnings"]) == (1, 1, 0)
    assert rows[0][-2:] == ["", problem]
    assert LinkBatch.objects.filter(strict=True).count() == 1 and LinkBatch.objects.filter(strict=False).count() == 1


@pytest.mark.django_db
def test_map_overrides_the_automatic_match(demo, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("Fullt nafn,netfang,kort\nAnna,anna@example.is,K-1\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    call_command(
        "generate_links",
        "--template",
        str(demo.pk),
        str(source),
        str(out),
        "--map",
        "fullt nafn=name",
        "--map",
        "kort=@external_id",
        stdout=StringIO(),
    )
    link = list(csv.reader(out.open(encoding="utf-8-sig")))[1][3]
    payload = decode(link.rsplit("/", 1)[1], link_keys())
    assert payload.fields == {"name": "Anna", "email": "anna@example.is"} and payload.external_id == "K-1"


@pytest.mark.django_db
def test_generate_links_says_what_is_wrong(demo, tmp_path):
    with pytest.raises(CommandError, match="No pass template '00000000-0000-0000-0000-000000000000'"):
        call_command(
            "generate_links",
            "--template",
            "00000000-0000-0000-0000-000000000000",
            str(DATA / "01_plain_utf8.csv"),
            str(tmp_path / "o.csv"),
        )
    with pytest.raises(CommandError, match="^This file does not look like a CSV text file.$"):
        call_command(
            "generate_links", "--template", str(demo.pk), str(DATA / "18_binary_junk.csv"), str(tmp_path / "o.csv")
        )
    with pytest.raises(CommandError, match="the file has no column 'mail'"):
        call_command(
            "generate_links",
            "--template",
            str(demo.pk),
            str(DATA / "01_plain_utf8.csv"),
            str(tmp_path / "o.csv"),
            "--map",
            "mail=email",
        )
    with pytest.raises(CommandError, match="Choose the column for Netfang / Email: every pass needs it."):
        call_command(
            "generate_links",
            "--template",
            str(demo.pk),
            str(DATA / "01_plain_utf8.csv"),
            str(tmp_path / "o.csv"),
            "--map",
            "email=",
        )
    assert not (tmp_path / "o.csv").exists()


def test_generate_link_key_prints_an_entry_that_parses():
    stdout = StringIO()
    call_command("generate_link_key", "--id", "k2026", stdout=stdout)
    keys = parse_link_keys(stdout.getvalue().strip())
    assert keys.key_ids == ("k2026",)


def test_a_missing_or_malformed_key_setting_is_a_clear_configuration_error(settings):
    settings.SMARTPASS_LINK_KEYS = ""
    with pytest.raises(ImproperlyConfigured, match="SMARTPASS_LINK_KEYS is empty.*generate_link_key"):
        link_keys()
    settings.SMARTPASS_LINK_KEYS = "k1:c2hvcnQ="
    with pytest.raises(ImproperlyConfigured, match=r"entry 1 \('k1'\): the key decodes to 5 bytes"):
        link_keys()


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "SMARTPASS_LINK_KEYS"}
    environment.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "false",
            "SECRET_KEY": "s" * 60,
            "DATABASE_URL": "sqlite:///:memory:",
        },
        **env,
    )
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_the_portal_does_not_start_without_link_keys_outside_debug():
    result = _manage("check")
    assert result.returncode != 0
    assert "(links.E001) SMARTPASS_LINK_KEYS is empty" in result.stderr  # a system check, not a crash
    bad = _manage("check", SMARTPASS_LINK_KEYS="k1:not base64!")
    assert "SMARTPASS_LINK_KEYS entry 1 ('k1'): the key is not valid base64." in bad.stderr
    assert "not base64!" not in bad.stderr.replace(
        "SMARTPASS_LINK_KEYS entry 1 ('k1'): the key is not valid base64.", ""
    )
    # The command that makes the first key still runs.
    made = _manage("generate_link_key")
    assert made.returncode == 0 and parse_link_keys(made.stdout.strip())
