"""Claims under pressure, on PostgreSQL against the sandbox over HTTP: simultaneous claims of one link, and
a thousand claims while SmartPages fails a fifth of the time."""

import re
import uuid

import pytest
import requests

from links import claims, tokens
from links.keyring import link_keys
from links.models import LinkClaim
from members.models import Member
from members.services import autofill, issuing
from sandbox import DEMO_TEMPLATE_ID, Faults

from .claim_factories import CSRF_RE, LAURA, add_member_field_template, link_path, mirror, nonce_of

THREADS = 50


@pytest.fixture(autouse=True)
def generous_claim_rate(settings):
    settings.CLAIM_RATE = "100000/m"


def payload_of(path: str) -> tokens.LinkPayload:
    return tokens.decode(path.removeprefix("/p/"), link_keys())


@pytest.mark.django_db(transaction=True)
def test_fifty_simultaneous_claims_of_one_autofill_link_make_one_member_and_one_upstream_pass(
    sandbox, run_at_a_barrier
):
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    payload = payload_of(link_path(fields=LAURA, batch_id=9, row=2))

    def claim(barrier):
        context = claims.claim_context_for(payload=payload)
        nonce = claims.new_claim_nonce()  # fifty different people's forms, one email address
        barrier.wait(timeout=30)
        return claims.claim_submit(context=context, answers={}, nonce=nonce)

    outcomes, errors = run_at_a_barrier(THREADS, claim)

    assert errors == [] and len(outcomes) == THREADS
    member = Member.objects.get()
    assert member.status == Member.Status.ISSUED and member.external_id == "laura.loopy@example.com"
    assert sandbox.request_count("POST", "/api/v1/pass") == 1 and len(sandbox.passes()) == 1
    assert {outcome.member.pk for outcome in outcomes} == {member.pk}
    assert sum(outcome.kind == claims.ClaimKind.ISSUED for outcome in outcomes) == 1


@pytest.mark.django_db(transaction=True)
def test_simultaneous_claims_of_one_single_use_row_make_one_member_and_one_upstream_pass(sandbox, run_at_a_barrier):
    mirror()  # autofill off and no External ID: only the row's key can tell the claims are one holder's
    jon = {"name": "Jón Jónsson", "email": "jon@example.is"}
    payload = payload_of(link_path(fields=jon, batch_id=41, row=7, single_use=True))

    def claim(barrier):
        context = claims.claim_context_for(payload=payload)
        nonce = claims.new_claim_nonce()  # each claim from its own form
        barrier.wait(timeout=30)
        return claims.claim_submit(context=context, answers={}, nonce=nonce)

    outcomes, errors = run_at_a_barrier(THREADS, claim)

    assert errors == [] and len(outcomes) == THREADS
    member = Member.objects.get()
    assert member.status == Member.Status.ISSUED and member.external_id is None
    assert (member.source_batch_id, member.source_row, member.claim_nonce) == (41, 7, "row:41:7")
    assert sandbox.request_count("POST", "/api/v1/pass") == 1 and len(sandbox.passes()) == 1
    assert {outcome.member.pk for outcome in outcomes} == {member.pk}
    kinds = sorted(outcome.kind for outcome in outcomes)
    assert kinds == sorted([claims.ClaimKind.ISSUED] + [claims.ClaimKind.ALREADY_ENROLLED] * (THREADS - 1))
    assert LinkClaim.objects.filter(batch_id=41, row=7).count() == THREADS


@pytest.mark.django_db(transaction=True)
def test_simultaneous_claims_over_http_of_one_autofill_link_make_one_member(live_server, sandbox, run_at_a_barrier):
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    url = live_server.url + link_path(fields=LAURA)

    def claim(barrier):
        with requests.Session() as browser:
            form = browser.get(url, timeout=30)
            assert form.status_code == 200
            data = {"nonce": nonce_of(form.text), "csrfmiddlewaretoken": CSRF_RE.search(form.text).group(1)}
            barrier.wait(timeout=30)
            answer = browser.post(url, data=data, allow_redirects=False, timeout=60)
            return answer.status_code, answer.headers.get("Location")

    answers, errors = run_at_a_barrier(20, claim)

    assert errors == []
    member = Member.objects.get()
    # One claim made the member; the others found it and show the same pass page, flagged "already enrolled".
    pass_page = f"/pass/{claims.pass_page_key(member=member)}"
    assert sorted(answers) == [(302, pass_page)] + [(302, pass_page + "?enrolled=1")] * 19
    assert sandbox.request_count("POST", "/api/v1/pass") == 1


@pytest.mark.django_db(transaction=True)
def test_one_form_posted_by_many_taps_at_once_issues_once(sandbox, run_at_a_barrier):
    mirror()
    payload = payload_of(link_path(fields={"name": "Percy PassKit", "email": "percy@passkit.com"}))
    nonce = claims.new_claim_nonce()  # one rendering of the form, no External ID

    def tap(barrier):
        context = claims.claim_context_for(payload=payload)
        barrier.wait(timeout=30)
        return claims.claim_submit(context=context, answers={}, nonce=nonce)

    outcomes, errors = run_at_a_barrier(10, tap)

    assert errors == [] and {outcome.member.pk for outcome in outcomes} == {Member.objects.get().pk}
    assert sandbox.request_count("POST", "/api/v1/pass") == 1


@pytest.mark.django_db(transaction=True)
def test_simultaneous_claims_typing_one_email_make_one_member_and_show_its_pass_to_nobody_else(
    sandbox, run_at_a_barrier
):
    school = mirror(add_member_field_template(sandbox))
    autofill.autofill_setting_change(template=school, source="email")
    payload = payload_of(link_path(school.pk, {"name": "Gunnar Nemandi"}))
    answers = {"kennitala": "0101302989", "schoolEmail": "gunnar@skoli.is"}

    def claim(barrier):
        context = claims.claim_context_for(payload=payload)
        nonce = claims.new_claim_nonce()  # twenty people's forms, one typed address
        barrier.wait(timeout=30)
        return claims.claim_submit(context=context, answers=answers, nonce=nonce)

    outcomes, errors = run_at_a_barrier(20, claim)

    assert errors == [] and len(outcomes) == 20
    member = Member.objects.get()
    assert member.external_id == "gunnar@skoli.is" and sandbox.request_count("POST", "/api/v1/pass") == 1
    shown = [outcome for outcome in outcomes if outcome.member is not None]
    assert [outcome.member.pk for outcome in shown] == [member.pk] and shown[0].kind == claims.ClaimKind.ISSUED
    assert all(outcome.kind == claims.ClaimKind.ENROLLED_PASS_HIDDEN for outcome in outcomes if outcome.member is None)


@pytest.mark.slow
def test_a_thousand_claims_with_a_fifth_of_upstream_calls_failing_all_end_issued_or_failed_with_a_reason(db, sandbox):
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    anonymous_id = sandbox.add_template(
        sandbox.get_template(DEMO_TEMPLATE_ID) | {"id": str(uuid.uuid4()), "name": "Gestakort"}
    )["id"]
    mirror(anonymous_id)  # autofill off: every claim is a new member
    sandbox.faults = Faults(error_rate=0.2, scope="passes", seed=5)

    people = [{"name": f"Félagi {n}", "email": f"Felagi.{n}@Example.is"} for n in range(700)]
    links = [link_path(fields=person, batch_id=1, row=n + 1) for n, person in enumerate(people)]
    claimed = []  # (kind, member id)
    for n in range(1000):
        if n % 5 == 4:  # every fifth claim is a guest on the template without an External ID
            path, kind = link_path(anonymous_id, {"name": f"Gestur {n}", "email": f"gestur{n}@example.is"}), "guest"
        elif n >= 800:  # the last claims are second clicks of earlier links
            path, kind = links[(n * 7) % 640], "again"
        else:
            path, kind = links[len([c for c in claimed if c[0] == "first"])], "first"
        context = claims.claim_context_for(payload=payload_of(path))
        outcome = claims.claim_submit(context=context, answers={}, nonce=claims.new_claim_nonce())
        assert outcome.member is not None, (n, outcome)
        claimed.append((kind, outcome.member.pk))

    pending_after_claims = Member.objects.filter(status=Member.Status.PENDING).count()
    assert pending_after_claims > 100  # the faults really hit
    for _round in range(issuing.ISSUE_MAX_ATTEMPTS):
        pending = list(Member.objects.filter(status=Member.Status.PENDING).select_related("template"))
        if not pending:
            break
        for member in pending:
            issuing.member_issue_retry(member=member)

    members = Member.objects.all()
    firsts, guests = {pk for kind, pk in claimed if kind == "first"}, {pk for kind, pk in claimed if kind == "guest"}
    assert len(firsts) == 640 and len(guests) == 200 and {pk for kind, pk in claimed if kind == "again"} <= firsts
    assert members.count() == 840  # nothing lost, nothing doubled
    assert not members.filter(status=Member.Status.PENDING).exists()
    assert not members.filter(status=Member.Status.FAILED, failure_reason="").exists()
    assert set(members.values_list("status", flat=True)) <= {Member.Status.ISSUED, Member.Status.FAILED}
    issued = members.filter(status=Member.Status.ISSUED)
    upstream = sandbox.passes()
    assert len(upstream) == issued.count()
    assert {p["id"] for p in upstream} == {str(pass_id) for pass_id in issued.values_list("pass_id", flat=True)}
    external_ids = [p["externalIdentifier"] for p in upstream if p["externalIdentifier"]]
    assert len(external_ids) == len(set(external_ids)) == 640
    assert re.fullmatch(r"felagi\.\d+@example\.is", external_ids[0])
