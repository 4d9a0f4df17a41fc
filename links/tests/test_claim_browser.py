"""PassKit's SmartPass walk-through end to end in Chromium: links made from a CSV for Percy PassKit and Laura
Loopy; with autofill off every click makes a new pass, with autofill on (email) every click shows the first."""

import csv
import io
import re

import pytest
import zxingcpp
from django.core.files.base import ContentFile
from playwright.sync_api import expect

from conftest import login
from links import services as link_services
from links.models import LinkBatch
from members.models import Member
from members.tests.test_browser_daily import look
from sandbox import DEMO_TEMPLATE_ID
from templates_sync import sync
from templates_sync.models import PassTemplate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SEED_CSV = (
    "person.displayName,person.emailAddress,person.mobileNumber\r\n"
    "Percy PassKit,percy@passkit.com,+44 7911 123456\r\n"
    "Laura Loopy, Laura.Loopy@Example.COM ,555 1234\r\n"
)
STAFF_MESSAGE = "Velkomin aftur, þú átt þegar kortið!"


def make_seed_links(template: PassTemplate, user) -> tuple[LinkBatch, dict[str, str]]:
    """Upload the seed's CSV through the links service (as the upload page does) and read the links back."""
    batch = link_services.link_batch_create(
        template=template, uploaded_by=user, file=ContentFile(SEED_CSV.encode(), name="seed.csv")
    )
    link_services.link_batch_confirm(batch=batch, mapping=batch.mapping, enqueue=False)
    batch = link_services.link_batch_process(batch_id=batch.pk)
    assert batch.status == LinkBatch.Status.SUCCEEDED and batch.links == 2, batch.error
    with batch.output_file.open("rb") as output:
        rows = list(csv.DictReader(io.StringIO(output.read().decode("utf-8-sig"))))
    return batch, {row["person.displayName"]: row["smartpass_link"] for row in rows}


def claim_in_browser(page, link: str) -> str:
    """Follow the link, press the one button, and read the Pass ID printed beneath the QR code."""
    page.goto(link)
    page.click("button[type=submit].primary")
    page.wait_for_selector("figure.qr svg")
    return page.locator("#pass-id").inner_text()


def qr_as_drawn(page) -> str:
    """What a scanner reads from the pass page's QR code as Chromium draws it: the SVG painted on a canvas, its
    pixels read by zxing-cpp."""
    side = 400
    grey = page.evaluate(
        """async (side) => {
            const svg = document.querySelector("figure.qr svg");
            const image = new Image();
            image.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(new XMLSerializer().serializeToString(svg));
            await image.decode();
            const canvas = document.createElement("canvas");
            canvas.width = canvas.height = side;
            const context = canvas.getContext("2d");
            context.fillStyle = "#fff";
            context.fillRect(0, 0, side, side);
            context.drawImage(image, 0, 0, side, side);
            const rgba = context.getImageData(0, 0, side, side).data;
            return Array.from({length: side * side}, (_, i) => rgba[4 * i]);
        }""",
        side,
    )
    barcode = zxingcpp.read_barcode(memoryview(bytes(grey)).cast("B", (side, side)))
    assert barcode is not None, "no QR code in the drawn page"
    return barcode.text


def test_the_seed_scenario_one_pass_per_click_without_autofill_and_the_same_pass_with_it(
    page, live_server, live_sandbox, manager, settings
):
    settings.CLAIM_RATE = "100000/m"
    settings.PUBLIC_BASE_URL = live_server.url
    assert sync.templates_sync_all().status == "succeeded"
    club = PassTemplate.objects.get(pk=DEMO_TEMPLATE_ID)
    batch, links = make_seed_links(club, manager)
    assert links["Percy PassKit"].startswith(f"{live_server.url}/p/")

    # Autofill off: Percy's link twice gives two passes with two Pass IDs.
    first = claim_in_browser(page, links["Percy PassKit"])
    assert "Percy PassKit" in page.locator("h1.holder-name").inner_text()
    assert qr_as_drawn(page) == first  # the code a till scans is the Pass ID printed beneath it
    second = claim_in_browser(page, links["Percy PassKit"])
    assert first != second

    # The member list shows two members for Percy, neither with an External ID.
    login(page, live_server, "maria")
    page.goto(f"{live_server.url}/members/?q=percy@passkit.com")
    rows = page.locator("#member-table tbody tr")
    assert rows.count() == 2
    assert set(rows.evaluate_all("rows => rows.map(r => r.dataset.passId)")) == {first, second}
    rows.first.locator("a").first.click()
    assert page.locator("#external-id").count() == 0 and "none" in page.locator("dl.facts").first.inner_text()
    assert "batch" in page.locator("dl.facts").first.inner_text()

    # A manager turns autofill on, with the email address as the unique ID, and words the "already enrolled" note.
    page.goto(f"{live_server.url}/members/autofill/{DEMO_TEMPLATE_ID}/")
    page.check("input[name=source][value=email]")
    page.fill("textarea[name=already_enrolled_message]", STAFF_MESSAGE)
    page.click("text=Save setting")
    # Percy's two passes are already here: the same step shows the conflict before anything is saved.
    expect(page.locator("#autofill-confirm")).to_contain_text("2 in 1 conflict")
    # Nothing to fill in (both passes are Percy's: the conflict is settled by staff), so the one way on is to save.
    expect(page.locator("#save-and-fill")).to_have_count(0)
    expect(page.locator("#autofill-form")).to_have_count(0)  # the confirmation is the one way on
    look(page, "autofill-save-nothing-to-fill")
    page.click("#save-only")
    page.wait_for_selector("text=Autofill setting saved.")

    # Laura's link twice: the same Pass ID and QR code both times; the second time with the staff's message.
    laura_first = claim_in_browser(page, links["Laura Loopy"])
    assert page.locator("#already-enrolled").count() == 0
    first_qr = page.locator("figure.qr svg").inner_html()
    laura_second = claim_in_browser(page, links["Laura Loopy"])
    assert laura_first == laura_second
    assert page.locator("figure.qr svg").inner_html() == first_qr
    assert STAFF_MESSAGE in page.locator("#already-enrolled .custom-message").inner_text()
    assert "Laura Loopy" in page.locator("h1.holder-name").inner_text()
    laura = Member.objects.get(display_name="Laura Loopy")
    assert str(laura.pass_id) == laura_first and laura.external_id == "laura.loopy@example.com"

    # Staff see one member for Laura, with her normalised email as External ID.
    page.goto(f"{live_server.url}/members/?q=Laura")
    assert page.locator("#member-table tbody tr").count() == 1
    page.locator("#member-table tbody tr a").first.click()
    assert page.locator("#external-id").inner_text() == "laura.loopy@example.com"
    assert page.locator("#pass-id").inner_text() == laura_first
    assert Member.objects.count() == 3 and len(live_sandbox.passes(DEMO_TEMPLATE_ID)) >= 3

    # The batch page counts what holders did: 4 claims, 3 members created, 1 duplicate prevented (Laura's).
    page.goto(f"{live_server.url}/links/{batch.pk}/")
    assert page.locator("#claims-count").inner_text() == "4"
    assert page.locator("#claim-members-created").inner_text() == "3"
    assert page.locator("#claim-duplicates-prevented").inner_text() == "1"

    # The holder switches the claim page to Icelandic.
    page.goto(links["Laura Loopy"])
    page.click("button[name=language][value=is]")
    page.wait_for_selector("text=Sýna kortið mitt")
    assert re.search(r"L•+y@example\.com", page.locator("dl.prefilled").inner_text(), re.IGNORECASE)
