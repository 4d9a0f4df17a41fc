"""Short links (`/s/{code}`) made by generate_links and the upload service, resolved by the claim page exactly as
the long links they stand for; long links that never end in a character autolinkers drop; first opens."""

from __future__ import annotations

import csv
import json
import re
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from links import tokens
from links.keyring import link_keys
from links.models import LinkBatch, LinkOpen, ShortLink
from links.services.opens import is_preview_agent
from links.short_codes import ALPHABET, CODE_LENGTH, RANDOM_LENGTH, new_code, stretch
from members.models import Member
from members.services import autofill

from .claim_factories import LAURA, PERCY, link_path, open_and_claim

SHORT_RE = re.compile(rf"http://127\.0\.0\.1:8000/s/([0-9A-Za-z]{{{CODE_LENGTH}}})\Z")
POST_PASS = ("POST", "/api/v1/pass")


@pytest.fixture(autouse=True)
def generous_claim_rate(settings):
    settings.CLAIM_RATE = "100000/m"


def generate(demo, tmp_path, rows: list[dict], *options: str) -> tuple[LinkBatch, list[dict]]:
    source, out = tmp_path / f"in-{uuid.uuid4().hex}.csv", tmp_path / f"out-{uuid.uuid4().hex}.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    stdout = StringIO()
    call_command("generate_links", "--template", str(demo.pk), str(source), str(out), "--json", *options, stdout=stdout)
    batch = LinkBatch.objects.get(pk=json.loads(stdout.getvalue())["batch"])
    return batch, list(csv.DictReader(out.open(encoding="utf-8-sig")))


def path_of(link: str) -> str:
    return link.removeprefix("http://127.0.0.1:8000")


PEOPLE = [
    {"name": "Anna Jónsdóttir", "email": "anna@example.is"},
    {"name": "Bjarni Þórsson", "email": "bjarni@example.is"},
    {"name": "Laura Loopy", "email": "laura.loopy@example.com"},
]


@pytest.mark.django_db
def test_short_links_are_stored_with_their_batch_row_and_stand_for_that_rows_long_token(demo, tmp_path):
    batch, rows = generate(demo, tmp_path, PEOPLE, "--short-links", "--jobs", "1")

    assert batch.short_links and batch.links == 3
    codes = [SHORT_RE.match(row["smartpass_link"]).group(1) for row in rows]
    assert all(len(row["smartpass_link"]) == len("http://127.0.0.1:8000/s/") + CODE_LENGTH for row in rows)
    assert 24 + len("/s/") + CODE_LENGTH <= 40  # the bound, with a 24-character PUBLIC_BASE_URL
    stored = {link.code: link for link in ShortLink.objects.filter(batch_id=batch.pk)}
    assert sorted(stored) == sorted(codes)
    for number, (code, person) in enumerate(zip(codes, PEOPLE, strict=True), start=1):
        payload = tokens.decode(stored[code].token, link_keys())
        assert stored[code].row == number and (payload.batch_id, payload.row) == (batch.pk, number)
        assert payload.fields["email"] == person["email"] and payload.fields["name"] == person["name"]


@pytest.mark.django_db
def test_a_short_link_is_single_use_as_its_long_link_is(client, demo, tmp_path, sandbox):
    autofill.autofill_setting_change(template=demo, source="off", already_enrolled_message="Þú átt kortið nú þegar.")
    batch, rows = generate(demo, tmp_path, PEOPLE[:1], "--short-links", "--single-use", "--jobs", "1")
    short = path_of(rows[0]["smartpass_link"])

    first = open_and_claim(client, short)
    assert first.status_code == 302
    assert "Show my pass" in client.get(short).content.decode()  # the page knows the row is claimed
    second = open_and_claim(Client(), short)  # another browser: the link alone decides

    assert second["Location"] == first["Location"] + "?enrolled=1"
    assert "Þú átt kortið nú þegar." in client.get(second["Location"]).content.decode()
    assert Member.objects.count() == 1 and sandbox.request_count(*POST_PASS) == 1
    # The long token the code stands for is the same row: claiming it shows the same pass.
    long_path = "/p/" + ShortLink.objects.get(batch_id=batch.pk).token
    assert open_and_claim(Client(), long_path)["Location"] == second["Location"]
    assert Member.objects.count() == 1


@pytest.mark.django_db
def test_a_code_of_the_first_format_still_opens_its_rows_claim_page(client, demo, tmp_path, sandbox):
    """Codes were 11 characters (one random first character per chunk) before the chunk's stretch; links sent
    with them keep working."""
    batch, _ = generate(demo, tmp_path, PEOPLE[:1], "--short-links", "--jobs", "1")
    made = ShortLink.objects.get(batch_id=batch.pk)
    first_format = ShortLink.objects.create(code="Q" + new_code(""), batch_id=batch.pk, row=1, token=made.token)
    assert len(first_format.code) == CODE_LENGTH - 1

    assert open_and_claim(client, "/s/" + first_format.code).status_code == 302
    assert open_and_claim(Client(), "/s/" + made.code).status_code == 302
    assert Member.objects.count() == 2 and sandbox.request_count(*POST_PASS) == 2  # two claims, as two long links


@pytest.mark.django_db
def test_a_short_link_with_autofill_shows_the_same_pass_on_every_claim(client, demo, tmp_path, sandbox):
    autofill.autofill_setting_change(template=demo, source="email")
    _, rows = generate(demo, tmp_path, [{"name": LAURA["name"], "email": LAURA["email"]}], "--short-links")
    short = path_of(rows[0]["smartpass_link"])

    first = open_and_claim(client, short)
    second = open_and_claim(Client(), short)

    assert second["Location"] == first["Location"] + "?enrolled=1"
    member = Member.objects.get()
    assert member.external_id == "laura.loopy@example.com" and sandbox.request_count(*POST_PASS) == 1


@pytest.mark.django_db
def test_unknown_and_malformed_codes_get_the_same_404_page_as_a_tampered_token(client, demo, tmp_path):
    generate(demo, tmp_path, PEOPLE, "--short-links")
    good = link_path(fields=PERCY).removeprefix("/p/")
    tampered = client.get("/p/" + good[:-3] + ("AAA" if good[-3:] != "AAA" else "BBB"))
    assert tampered.status_code == 404
    for code in [new_code(stretch(7)), "short", "a" * 40, "abc_def-ghi", "0000000000."]:
        answer = client.get("/s/" + code)
        assert answer.status_code == 404 and answer.content == tampered.content, code
    assert not LinkOpen.objects.exists()


@pytest.mark.django_db
def test_short_link_lookups_are_rate_limited_with_the_claims(settings, demo, tmp_path):
    _, rows = generate(demo, tmp_path, PEOPLE[:1], "--short-links")
    settings.CLAIM_RATE = "4/m"
    client = Client(REMOTE_ADDR=f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}")
    short = path_of(rows[0]["smartpass_link"])

    codes = [client.get(short).status_code, client.get("/s/" + new_code(stretch(7))).status_code]
    codes += [client.get(link_path(fields=PERCY)).status_code, client.get(short).status_code]
    codes += [client.get("/s/" + new_code(stretch(7))).status_code, client.get(short).status_code]

    assert codes == [200, 404, 200, 200, 429, 429]


@pytest.mark.slow  # starts two processes
@pytest.mark.django_db(transaction=True)
def test_short_links_of_a_batch_cut_into_chunks_in_two_processes_are_all_stored(demo, tmp_path, settings):
    settings.LINKS_CHUNK_ROWS = 40
    people = [{"name": f"Holder {n}", "email": f"holder{n}@example.is"} for n in range(1, 201)]
    batch, rows = generate(demo, tmp_path, people, "--short-links", "--jobs", "2")

    assert len(batch.plan) == 5  # five chunks
    codes = [SHORT_RE.match(row["smartpass_link"]).group(1) for row in rows]
    stored = dict(ShortLink.objects.filter(batch_id=batch.pk).values_list("code", "row"))
    assert len(set(codes)) == 200 and {stored[code] for code in codes} == set(range(1, 201))
    assert [stored[code] for code in codes] == list(range(1, 201))


def test_codes_use_letters_and_digits_only_and_carry_at_least_58_random_bits():
    lead = stretch(4711)
    codes = [new_code(lead) for _ in range(20000)]
    # The first two characters are the chunk's; each code's own random part is the rest.
    assert len(ALPHABET) == 62 and RANDOM_LENGTH * 5.954 >= 58  # log2(62) = 5.954
    assert all(len(code) == CODE_LENGTH and code[:2] == lead and set(code) <= set(ALPHABET) for code in codes)
    assert len(set(codes)) == len(codes)
    # Every character is used about equally in every position (a byte-modulo bias would show here).
    last = [code[-1] for code in codes]
    counts = [last.count(char) for char in ALPHABET]
    assert min(counts) > 20000 / 62 * 0.6 and max(counts) < 20000 / 62 * 1.4


@pytest.mark.django_db
def test_each_chunks_codes_start_with_its_own_stretch(demo, tmp_path, settings):
    settings.LINKS_CHUNK_ROWS = 2
    batch, _ = generate(demo, tmp_path, PEOPLE, "--short-links", "--jobs", "1")
    assert len(batch.plan) == 2  # rows 1-2 and row 3
    stored = dict(ShortLink.objects.filter(batch_id=batch.pk).values_list("row", "code"))
    first, second = {stored[1][:2], stored[2][:2]}, {stored[3][:2]}
    assert len(first) == 1 and second != first
    # The chunks' ids follow each other, and so do their stretches.
    number = ALPHABET.index(stored[1][0]) * len(ALPHABET) + ALPHABET.index(stored[1][1])
    assert second == {stretch(number + 1)}


def test_consecutive_chunks_write_to_consecutive_stretches_of_the_index_and_wrap_around():
    stretches = [stretch(number) for number in range(62 * 62 + 1)]
    assert stretches[:3] == ["00", "01", "02"] and stretches[62] == "10"
    assert stretches == sorted(stretches[:-1]) + ["00"]  # in order, each once, then from the start again
    assert len(set(stretches)) == 62 * 62


def test_long_links_never_end_in_a_character_autolinkers_drop():
    keys = link_keys()
    encoder = tokens.LinkEncoder(keys, template_id=uuid.uuid4(), batch_id=7)
    # Values of every length, so tokens of every length modulo 4 (only whole 3-byte groups can end in - or _).
    made = [encoder.encode({"name": "x" * (n % 40)}, row=n) for n in range(6000)]
    assert not [token for token in made if token[-1] in "-_."]
    assert all(tokens.decode(token, keys).row == n for n, token in enumerate(made))


# --- opens ---------------------------------------------------------------------------------------------------
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Version/17.4 Mobile Safari/604.1"


@pytest.mark.django_db
def test_the_first_get_of_a_rows_claim_page_is_its_open_and_previews_heads_and_later_gets_are_not(demo, tmp_path):
    batch, rows = generate(demo, tmp_path, PEOPLE, "--short-links")
    short = path_of(rows[0]["smartpass_link"])
    long_path = "/p/" + ShortLink.objects.get(batch_id=batch.pk, row=2).token

    Client(HTTP_USER_AGENT="facebookexternalhit/1.1 Facebot Twitterbot/1.0").get(short)  # iMessage's preview
    Client(HTTP_USER_AGENT="Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)").get(long_path)
    Client(HTTP_USER_AGENT=BROWSER).head(short)
    Client().get(short)  # no User-Agent at all: not a person's browser
    assert not LinkOpen.objects.exists()

    Client(HTTP_USER_AGENT=BROWSER).get(short)
    Client(HTTP_USER_AGENT=BROWSER).get(short)
    Client(HTTP_USER_AGENT=BROWSER).get(long_path)

    assert sorted(LinkOpen.objects.values_list("batch_id", "row")) == [(batch.pk, 1), (batch.pk, 2)]
    assert [field.name for field in LinkOpen._meta.fields] == ["id", "batch_id", "row", "at"]  # no token kept


def test_link_preview_agents_are_told_from_browsers():
    for agent in [
        "WhatsApp/2.23.20.0",
        "TelegramBot (like TwitterBot)",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) BingPreview/1.0b",
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.12026; Pro)",
        "",
    ]:
        assert is_preview_agent(agent), agent
    for agent in [
        BROWSER,
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Instagram 330.0",
    ]:
        assert not is_preview_agent(agent), agent
