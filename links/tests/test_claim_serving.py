"""The claim flow as production serves it: gunicorn with deploy/gunicorn.conf.py (threaded workers, many claims
in one process at once), production settings, behind the TLS proxy (played here by X-Forwarded-Proto), against a
sandbox answering each create in 100 ms. Threads in one process share nothing but the database, so these prove
the races are still decided there: 500 holders on one link make one member and one upstream pass, and one form
posted many times makes one member."""

from __future__ import annotations

import re
import uuid
from collections import Counter

import pytest
import requests

from conftest import SANDBOX_KEY_ID, SANDBOX_KEY_TOKEN, production_env, start_gunicorn
from members.models import Member
from members.services import autofill
from sandbox import Faults

from .claim_factories import CSRF_RE, LAURA, link_path, mirror, nonce_of

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HOLDERS_ON_ONE_LINK = 500
TAPS_ON_ONE_FORM = 30
_CSRF_COOKIE_RE = re.compile(r"((?:__Host-)?csrftoken=[^;]+)")


@pytest.fixture
def served(live_sandbox):
    """gunicorn exactly as deploy/gunicorn.conf.py configures it (its own worker count and threads) on
    production settings; the sandbox takes 100 ms per create, as SmartPages does, so the claims overlap."""
    live_sandbox.faults = Faults(slow_seconds=0.1, scope="passes")
    env = production_env(
        {
            "SMARTPAGES_API_URL": live_sandbox.url,
            "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
            "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
            "CLAIM_RATE": "100000/m",  # every holder here comes from 127.0.0.1
        }
    )
    # start_gunicorn's default command is the production one: gunicorn -c deploy/gunicorn.conf.py.
    web, url, log = start_gunicorn(env, log_name="claim-serving-gunicorn", workers=2)
    yield url, log
    web.terminate()
    web.wait(timeout=30)
    live_sandbox.faults = Faults()


class Holder:
    """One holder's phone behind the TLS proxy: the proxy's X-Forwarded-Proto, and the Secure CSRF cookie
    carried by hand (a client speaking plain HTTP to gunicorn would not send a Secure cookie)."""

    def __init__(self, url: str, path: str):
        self.url, self.path = url, path
        self.headers = {"X-Forwarded-Proto": "https", "Origin": url.replace("http://", "https://")}

    def open(self) -> dict:
        page = requests.get(self.url + self.path, headers=self.headers, timeout=60)
        assert page.status_code == 200, page.status_code
        self.headers["Cookie"] = _CSRF_COOKIE_RE.search(page.headers["Set-Cookie"]).group(1)
        return {"nonce": nonce_of(page.text), "csrfmiddlewaretoken": CSRF_RE.search(page.text).group(1)}

    def press(self, form: dict) -> tuple[int, str, int, str]:
        """Press the button and follow to the page it leads to: (POST status, Location, page status, page)."""
        answer = requests.post(self.url + self.path, data=form, headers=self.headers, allow_redirects=False, timeout=60)
        location = answer.headers.get("Location", "")
        page = requests.get(self.url + location, headers=self.headers, timeout=60) if location else answer
        return answer.status_code, location, page.status_code, page.text


def test_five_hundred_holders_on_one_autofill_link_at_once_make_one_member_and_one_upstream_pass(
    served, live_sandbox, run_at_a_barrier
):
    url, log = served
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    # An address of its own: the session's sandbox outlives this test, and a pass left there with a shared
    # address would meet a later test's claim as a 409.
    email = f"laura.{uuid.uuid4().hex[:8]}@example.com"
    path = link_path(fields={**LAURA, "email": email})
    creates_before = live_sandbox.request_count("POST", "/api/v1/pass")

    def holder(barrier):
        phone = Holder(url, path)
        form = phone.open()  # 500 different people's forms, one link
        barrier.wait(timeout=120)
        return phone.press(form)

    answers, errors = run_at_a_barrier(HOLDERS_ON_ONE_LINK, holder)

    assert errors == [] and len(answers) == HOLDERS_ON_ONE_LINK
    member = Member.objects.get(template=club)
    assert member.external_id == email and member.status == Member.Status.ISSUED
    assert live_sandbox.request_count("POST", "/api/v1/pass") - creates_before == 1
    assert [p for p in live_sandbox.passes() if p["externalIdentifier"] == member.external_id] != []
    assert len([p for p in live_sandbox.passes() if p["externalIdentifier"] == member.external_id]) == 1
    # One claim made the member; every other holder reached the same pass page, flagged "already enrolled".
    locations = Counter(location for _status, location, _page_status, _page in answers)
    pass_page = min(locations, key=len)
    assert locations == {pass_page: 1, pass_page + "?enrolled=1": HOLDERS_ON_ONE_LINK - 1}
    statuses = Counter((status, page_status) for status, _location, page_status, _page in answers)
    assert statuses == {(302, 200): HOLDERS_ON_ONE_LINK}, (statuses, log.read_text()[-3000:])
    assert all("Laura Loopy" in page for *_rest, page in answers)
    assert "Traceback" not in log.read_text()


def test_one_form_pressed_many_times_at_once_and_again_later_makes_one_member(served, live_sandbox, run_at_a_barrier):
    url, _log = served
    club = mirror()  # autofill off and no External ID: only the form's nonce tells the presses apart
    path = link_path(fields={"name": "Percy PassKit", "email": "percy@passkit.com"})
    phone = Holder(url, path)
    form = phone.open()
    creates_before = live_sandbox.request_count("POST", "/api/v1/pass")

    def tap(barrier):
        barrier.wait(timeout=60)
        return phone.press(form)

    answers, errors = run_at_a_barrier(TAPS_ON_ONE_FORM, tap)
    again = phone.press(form)  # back to the form, and the button once more

    assert errors == []
    member = Member.objects.get(template=club)
    assert member.status == Member.Status.ISSUED and member.external_id is None
    assert live_sandbox.request_count("POST", "/api/v1/pass") - creates_before == 1
    assert {(status, location, page_status) for status, location, page_status, _page in [*answers, again]} == {
        (302, answers[0][1], 200)
    }
