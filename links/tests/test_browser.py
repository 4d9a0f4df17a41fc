"""What a manager does in Chromium: upload a campaign CSV, confirm the columns, watch the batch finish, and
download a result with one working link per good row and a reason on each bad one."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from django.core.files import File
from django.core.files.storage import default_storage
from django.utils import timezone
from playwright.sync_api import expect

from conftest import login
from links import services
from links.keyring import link_keys
from links.models import LinkBatch
from links.tokens import decode
from sandbox import DEMO_TEMPLATE_ID
from templates_sync import sync
from templates_sync.models import PassTemplate

pytestmark = [pytest.mark.browser, pytest.mark.worker]

ROWS = 1500


def _campaign(path):
    expected = {}
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out, delimiter=";")  # Icelandic Excel writes semicolons
        writer.writerow(["Nafn", "Netfang", "Símanúmer", "Hópur"])
        for number in range(1, ROWS + 1):
            if number % 100 == 0:
                writer.writerow([f"Félagi {number}", "ekki netfang", "", "B"])
                expected[number] = None
            else:
                writer.writerow([f"Félagi {number}", f"Felagi{number}@Example.is", f"+354 {8200000 + number}", "A"])
                expected[number] = {
                    "name": f"Félagi {number}",
                    "email": f"felagi{number}@example.is",
                    "phone": f"+354{8200000 + number}",
                }
    return expected


SHOTS = Path("/work/shots/engine")


NOTE_SHOTS = Path("/work/notes/shots/issue-24-links")


def _screenshots(page, name: str, *, folder: Path = SHOTS) -> None:
    """The page at a desktop and a phone width, for a person to look at (outside the repository)."""
    if not folder.parent.is_dir():
        return
    folder.mkdir(exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(folder / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_a_manager_uploads_a_csv_and_downloads_one_link_per_good_row(
    page, live_server, celery_worker_process, live_sandbox, manager, tmp_path
):
    sync.templates_sync_all()
    expected = _campaign(tmp_path / "vorherferð.csv")
    login(page, live_server, "maria")
    page.goto(f"{live_server.url}/templates/{DEMO_TEMPLATE_ID}/")
    page.get_by_role("link", name="Generate links").click()

    page.set_input_files("input[type=file]", str(tmp_path / "vorherferð.csv"))
    page.get_by_role("button", name="Upload and preview").click()
    expect(page.locator("h1")).to_have_text("vorherferð.csv")
    expect(page.get_by_text(f"{ROWS:,} rows read (semicolon-separated, UTF-8 with BOM)")).to_be_visible()
    expect(page.locator("table.preview tbody tr")).to_have_count(10)
    # The columns were matched by label; the group column stays out of the links.
    expect(page.get_by_label("Nafn")).to_have_value("name")
    expect(page.get_by_label("Netfang")).to_have_value("email")
    expect(page.get_by_label("Símanúmer")).to_have_value("phone")
    expect(page.get_by_label("Hópur")).to_have_value("")
    # Autofill is off for the demo template: the column check says what a second click of a link does.
    expect(page.locator("#autofill-off-note")).to_contain_text("gets a second pass")
    _screenshots(page, "batch-check-columns")

    page.get_by_role("button", name="Generate links").click()
    expect(page.locator("[data-run-status] progress")).to_be_attached()
    # portal.js follows the batch and reloads the page when the worker is done.
    expect(page.get_by_role("link", name="Download links")).to_be_visible(timeout=60_000)
    # Not "succeeded" when rows failed: the reasons are on the page, without opening the CSV.
    expect(page.locator("[data-run-status] .badge")).to_have_text(f"completed with {ROWS // 100} errors")
    expect(page.locator("dd.count-links")).to_have_text(f"{ROWS - ROWS // 100:,}")
    expect(page.locator("dd.count-errors")).to_contain_text(f"{ROWS // 100}")
    reasons = page.locator(".batch-summary tbody tr")
    expect(reasons).to_have_count(1)
    expect(reasons.first).to_contain_text("“…” is not a valid email address")
    expect(reasons.first).to_contain_text("100, 200, 300, 400, 500, …")
    expect(reasons.first).to_contain_text("Row 100: Netfang / Email: “ekki netfang”")
    _screenshots(page, "batch-completed-with-errors")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download links").click()
    download = download_info.value
    assert download.suggested_filename == "vorherferð-links.csv"
    with open(download.path(), encoding="utf-8-sig", newline="") as result:
        rows = list(csv.reader(result, delimiter=";"))
    batch = LinkBatch.objects.get()
    try:
        assert rows[0] == ["Nafn", "Netfang", "Símanúmer", "Hópur", "smartpass_link", "error"]
        assert len(rows) == ROWS + 1
        for number, row in enumerate(rows[1:], start=1):
            link, error = row[4], row[5]
            if expected[number] is None:
                assert link == "" and re.fullmatch(
                    r"Netfang / Email: “ekki netfang” is not a valid email address\..*", error
                )
                continue
            assert error == ""
            payload = decode(link.removeprefix(f"{live_server.url}/p/").rsplit("/", 1)[-1], link_keys())
            assert (str(payload.template_id), payload.row, payload.fields) == (
                DEMO_TEMPLATE_ID,
                number,
                expected[number],
            )
    finally:
        for field in (batch.input_file, batch.output_file, batch.errors_file):
            if field.name and default_storage.exists(field.name):
                default_storage.delete(field.name)


def test_a_manager_cancels_a_running_batch_from_its_page(page, live_server, sandbox, manager, tmp_path):
    sync.templates_sync_all()
    _campaign(tmp_path / "vorherferð.csv")
    with (tmp_path / "vorherferð.csv").open("rb") as binary:
        batch = services.link_batch_create(
            template=PassTemplate.objects.get(pk=DEMO_TEMPLATE_ID),
            uploaded_by=manager,
            file=File(binary, name="vorherferð.csv"),
        )
    # A batch a worker is making (its state set here: no worker takes it in this test).
    LinkBatch.objects.filter(pk=batch.pk).update(status="running", rows_done=600, started_at=timezone.now())
    login(page, live_server, "maria")
    page.goto(f"{live_server.url}/links/{batch.pk}/")
    expect(page.locator("[data-run-status] .badge")).to_have_text("running")
    _screenshots(page, "batch-running-cancel")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("[data-run-status] .badge")).to_have_text("cancelled")
    expect(page.locator(".run-error")).to_have_text("Cancelled by maria; the result holds the rows made until then.")
    expect(page.get_by_role("button", name="Run again")).to_be_visible()
    _screenshots(page, "batch-cancelled")
    assert LinkBatch.objects.get(pk=batch.pk).status == "cancelled"

    # The cancel's assembly (the task a worker runs; here in this process): no row was made, so the partial
    # links file holds every input row with an empty link and the reason, and the page offers it.
    services.link_batch_finish(batch_id=batch.pk)
    page.reload()
    download_button = page.get_by_role("link", name="Download partial links")
    expect(download_button).to_be_visible()
    _screenshots(page, "batch-cancelled-partial-links")
    _screenshots(page, "batch-cancelled-partial-links", folder=NOTE_SHOTS)
    with page.expect_download() as download:
        download_button.click()
    rows = list(csv.reader(Path(download.value.path()).read_text(encoding="utf-8-sig").splitlines(), delimiter=";"))
    assert rows[0] == ["Nafn", "Netfang", "Símanúmer", "Hópur", "smartpass_link", "error"]
    assert [row[0] for row in rows[1:]] == [f"Félagi {number}" for number in range(1, ROWS + 1)]
    assert {(row[4], row[5]) for row in rows[1:]} == {("", "not made: the upload was cancelled")}
