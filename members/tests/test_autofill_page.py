"""The autofill settings page runs the conflict preview (every member of the template) only when asked."""

import re

import pytest
from django.urls import reverse

from members import selectors
from members.models import AutofillSetting
from members.services import autofill

from .factories import make_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def previews(monkeypatch):
    """Records each conflict preview the page asks for, and still runs the real one."""
    calls = []
    real = selectors.autofill_preview

    def recording(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(selectors, "autofill_preview", recording)
    return calls


@pytest.fixture
def autofill_on(club):
    autofill.autofill_setting_change(template=club, source="email")
    make_member(club, name="Laura", email="laura@example.com")
    make_member(club, name="Twin A", email="twin@example.com")
    make_member(club, name="Twin B", email="Twin@Example.com")
    return club


def test_a_plain_visit_shows_the_setting_and_the_audit_without_reading_every_member(
    client, manager, autofill_on, previews
):
    client.force_login(manager)
    page = client.get(reverse("members:autofill_settings", args=[autofill_on.pk]))

    assert page.status_code == 200 and previews == []
    text = page.content.decode()
    assert '<strong id="autofill-source">Email address</strong>' in text
    assert "<td>Off</td><td>Email address (email)</td>" in text  # the audit line
    assert 'id="autofill-form"' in text
    # The field it reads is named by its label, as on the pass: not "Netfang / Email (email, email)".
    assert re.search(r'<option value="email"[^>]*>Netfang / Email</option>', text)
    assert 'id="autofill-preview"' not in text and 'id="backfill-button"' not in text
    assert f'href="{reverse("members:autofill_settings", args=[autofill_on.pk])}?preview=1' in text


def test_check_existing_members_previews_the_saved_setting_and_offers_the_backfill(
    client, manager, autofill_on, previews
):
    client.force_login(manager)
    page = client.get(reverse("members:autofill_settings", args=[autofill_on.pk]), {"preview": "1"})

    assert previews == [{"template": autofill_on}]
    text = page.content.decode()
    assert "<h2>Existing members</h2>" in text
    assert 'data-count="eligible">3<' in text and 'data-count="fill">1<' in text
    assert 'data-count="conflicts">2<' in text
    assert 'id="backfill-button"' in text and 'id="check-members"' not in text


def test_the_preview_button_previews_the_proposed_setting_without_saving_it(client, manager, club, previews):
    make_member(club, name="Laura", email="laura@example.com", phone="+3545551234")
    client.force_login(manager)
    url = reverse("members:autofill_settings", args=[club.pk])

    form = {"source": "phone", "field_identifier": "", "already_enrolled_message": ""}

    # A POST, so that the form's CSRF token never lands in a URL (history, access logs).
    proposal = client.post(url, form | {"preview": "1"})

    assert previews == [{"template": club, "source": "phone", "field_identifier": ""}]
    text = proposal.content.decode()
    assert "Preview of the proposed setting" in text and 'data-count="fill">1<' in text
    assert 'id="backfill-button"' not in text  # a backfill follows a saved setting, never a proposal
    assert 'id="autofill-confirm"' not in text  # only a look: nothing to confirm
    assert '<input type="radio" name="source" value="phone" id="id_source_2" required checked>' in text  # kept
    assert not AutofillSetting.objects.filter(template=club).exists()

    client.get(url, {"source": "phone", "preview": "1"})  # a URL's proposal is not read: the saved setting is
    client.post(url, {"source": "nonsense", "preview": "1"})  # refused by the form, nothing to preview
    assert previews[1:] == [{"template": club}]
    assert not AutofillSetting.objects.filter(template=club).exists()


def test_saving_a_setting_that_is_on_shows_what_it_means_for_existing_members(client, manager, club, previews):
    make_member(club, name="Laura", email="laura@example.com")
    client.force_login(manager)
    url = reverse("members:autofill_settings", args=[club.pk])

    saved = client.post(
        url, {"source": "email", "field_identifier": "", "already_enrolled_message": "", "confirm": "1", "fill": "0"}
    )
    assert saved["Location"] == f"{url}?preview=1"
    turned_off = client.post(url, {"source": "off", "field_identifier": "", "already_enrolled_message": ""})
    assert turned_off["Location"] == url
    assert previews == []  # a confirmed save previews nothing; the page it leads to does, once


def test_a_viewer_sees_the_page_without_a_preview(client, viewer, autofill_on, previews):
    client.force_login(viewer)
    page = client.get(reverse("members:autofill_settings", args=[autofill_on.pk]))
    assert page.status_code == 200 and previews == []
    assert b"changing it needs the manager role" in page.content and b'id="autofill-preview"' not in page.content


def test_saving_when_nothing_can_be_filled_in_offers_to_save_without_counting_zero(client, manager, club):
    # Two passes of one holder: a conflict, so nothing would be filled in.
    make_member(club, name="Percy", email="percy@example.com")
    make_member(club, name="Percy P.", email="percy@example.com")
    client.force_login(manager)
    url = reverse("members:autofill_settings", args=[club.pk])

    step = client.post(
        url, {"source": "email", "field_identifier": "", "already_enrolled_message": ""}
    ).content.decode()

    assert 'id="autofill-confirm"' in step and 'data-count="fill">0<' in step  # said, not a button
    assert 'id="save-and-fill"' not in step and "fill in 0" not in step
    assert (
        '<button class="button primary" type="submit" name="fill" value="0" id="save-only">Save setting</button>'
        in step
    )
    saved = client.post(
        url, {"source": "email", "field_identifier": "", "already_enrolled_message": "", "confirm": "1", "fill": "0"}
    )
    assert saved.status_code == 302 and AutofillSetting.objects.get(template=club).source == "email"
