"""Public pages of the holder's side: the claim page of a SmartPass link and the pass page. No login.

Every failure of a token gets the same 404 page, byte for byte, so a probe learns nothing about which
check failed. The logic lives in links.claims; these views only choose a page.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.cache import patch_cache_control
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods
from django_ratelimit.core import is_ratelimited

from background.failures import on_a_working_connection
from members.models import Member
from members.services import pass_links
from members.services.pass_links import PassLinkNotSent

from . import claims
from .public_forms import ClaimForm
from .qr import qr_svg
from .services.opens import link_open_record
from .services.short_links import short_link_token

# Seconds between reloads of a pass page whose pass is still being prepared.
PENDING_REFRESH_SECONDS = 3
# Query flag on a pass page reached by claiming a link whose holder already had this pass.
ALREADY_ENROLLED_FLAG = "enrolled"


@login_not_required
@require_http_methods(["GET", "HEAD", "POST"])  # link previews send HEAD
def claim(request: HttpRequest, token: str) -> HttpResponse:
    if _rate_limited(request):
        return _rate_limited_page(request)
    return _claim_page(request, token=token)


@login_not_required
@require_http_methods(["GET", "HEAD", "POST"])
def short_link(request: HttpRequest, code: str) -> HttpResponse:
    """/s/{code}: the claim page of the long token the code stands for, answered here (no redirect, so the
    long token never shows in the address bar or in a referrer). Lookups count against the claim rate:
    guessing codes costs as much as guessing tokens."""
    if _rate_limited(request):
        return _rate_limited_page(request)
    token = short_link_token(code=code)
    if token is None:
        return link_not_found(request)
    return _claim_page(request, token=token)


def _rate_limited(request: HttpRequest) -> bool:
    return is_ratelimited(request, group="claim", key="ip", rate=settings.CLAIM_RATE, increment=True)


def _rate_limited_page(request: HttpRequest) -> HttpResponse:
    response = render(request, "links/public/rate_limited.html", status=429)
    response["Retry-After"] = "60"
    return response


def _claim_page(request: HttpRequest, *, token: str) -> HttpResponse:
    payload = claims.claim_payload_from_token(token=token)
    if payload is None:
        return link_not_found(request)
    link_open_record(payload=payload, method=request.method, user_agent=request.headers.get("User-Agent", ""))
    try:
        context = claims.claim_context_for(payload=payload)
    except claims.ClaimUnavailable:
        return _unavailable(request, template=None)
    if request.method == "POST" and request.POST.get("send_offer"):
        return _send_pass(request, context=context)
    # The pass this link names, if its holder has one: the page words its button with it, and it is shown even when
    # no new pass could be issued. A press looks it up in the claim itself (one lookup fewer on a surge's path).
    looked_up = request.method != "POST" or bool(context.refusal)
    existing = claims.claim_existing_member(context=context) if looked_up else None
    if claims.claim_unavailable(context=context, existing=existing):
        return _unavailable(request, template=context.template)
    if (
        request.method != "POST"
        and not claims.pass_shown_without_issuing(context=context, existing=existing)
        and claims.link_values_unusable(context=context)
    ):
        return _link_problem(request, context=context)
    if request.method == "POST":
        form = ClaimForm(request.POST, asked=context.asked, rules=context.rules)
        if form.is_valid():
            answer = _claim_answer_on_a_live_connection(request, context=context, form=form)
            if answer is not None:
                return answer
    else:
        form = ClaimForm(asked=context.asked, rules=context.rules)
    # A re-shown form keeps the nonce it was posted with: fixing a typo and posting again is the same claim.
    posted_nonce = request.POST.get("nonce")
    response = render(
        request,
        "links/public/claim.html",
        {
            "context": context,
            "template": context.template,
            "form": form,
            "nonce": posted_nonce if claims.is_claim_nonce(posted_nonce) else claims.new_claim_nonce(),
            "existing_member": existing if looked_up else claims.claim_existing_member(context=context),
        },
    )
    # Private: the page holds the holder's values and a one-time nonce. Not no-store: going back to the
    # form and pressing the button again must post the same nonce (and so issue once).
    patch_cache_control(response, private=True)
    return response


def _claim_answer_on_a_live_connection(
    request: HttpRequest, *, context: claims.ClaimContext, form: ClaimForm
) -> HttpResponse | None:
    """The claim, tried once more on a fresh database connection when its connection broke part of the way (a
    database restart, a killed backend): the holder gets their pass instead of an error page. The form's nonce
    makes the second try the same claim, so nothing is issued twice."""
    return on_a_working_connection(
        lambda: _claim_answer(request, context=context, form=form),
        tries=2,
        subject=f"a claim of template {context.template.pk}",
    )


def _claim_answer(request: HttpRequest, *, context: claims.ClaimContext, form: ClaimForm) -> HttpResponse | None:
    """Make the claim; the page to answer with, or None to show the form again (with the claim's errors)."""
    outcome = claims.claim_submit(context=context, answers=form.answers(), nonce=form.cleaned_data["nonce"])
    kind = outcome.kind
    if kind == claims.ClaimKind.ENROLLED_PASS_HIDDEN:
        # The holder typed an External ID someone already has: no redirect, so no pass page to follow.
        return _already_enrolled(
            request, template=context.template, message=context.already_enrolled_message, offer=outcome.offer
        )
    if kind in claims.SHOWS_PASS:
        url = reverse("holder:pass", kwargs={"key": claims.pass_page_key(member=outcome.member)})
        if kind == claims.ClaimKind.ALREADY_ENROLLED:
            # The flag only switches on the template's own "already enrolled" note on a page the key already
            # opens: nothing from the claim travels in the URL.
            url += f"?{ALREADY_ENROLLED_FLAG}=1"
        return redirect(url)
    if kind == claims.ClaimKind.UNAVAILABLE:
        return _unavailable(request, template=context.template)
    if kind == claims.ClaimKind.LINK_PROBLEM:
        return _link_problem(request, context=context, taken=outcome.taken)
    form.add_claim_errors(outcome.errors, taken=outcome.taken)
    return None


def _link_problem(
    request: HttpRequest, *, context: claims.ClaimContext, taken: frozenset[str] = frozenset()
) -> HttpResponse:
    """The link's own values cannot issue a pass: only the issuer can fix them. `taken`: unique fields whose
    value another pass holds."""
    labels = {spec.identifier: spec.name for spec in context.specs}
    names = sorted(labels.get(identifier, identifier) for identifier in taken)
    return render(request, "links/public/link_problem.html", {"template": context.template, "taken": names}, status=400)


@login_not_required
@require_http_methods(["GET", "HEAD"])
def pass_page(request: HttpRequest, key: str) -> HttpResponse:
    member = claims.pass_page_member(key=key)
    if member is None:
        return link_not_found(request)
    context = {"member": member, "template": member.template, "refresh_seconds": None}
    if request.GET.get(ALREADY_ENROLLED_FLAG) == "1" and member.status != Member.Status.VOIDED:
        # A cancelled pass says so instead (and how to reach the issuer): "you already have it" would mislead.
        context["already_enrolled"] = True
        context["custom_message"] = claims.already_enrolled_message_for(template=member.template)
    if member.status in (Member.Status.ISSUED, Member.Status.REDEEMED) and member.pass_id:
        # A redeemed pass is shown too, marked so: it stays the holder's (the scanner knows it was used).
        context["qr_svg"] = _qr_svg(str(member.pass_id))
    elif member.status == Member.Status.PENDING:
        context["refresh_seconds"] = PENDING_REFRESH_SECONDS
    elif member.status == Member.Status.VOIDED:
        replacement = claims.pass_replacement(member=member)
        if replacement is not None:
            context["replacement_url"] = reverse(
                "holder:pass", kwargs={"key": claims.pass_page_key(member=replacement)}
            )
        else:
            context["contact_help"] = pass_links.contact_help_for(template=member.template)
    elif member.upstream_conflict and not member.pass_link_needed:
        # SmartPages already held a pass with this External ID, made outside the portal. (With
        # `pass_link_needed` that pass is most likely the holder's own: the page says it is nearly ready.)
        return _already_enrolled(
            request, template=member.template, message=claims.already_enrolled_message_for(template=member.template)
        )
    response = render(request, "links/public/pass.html", context)
    if context["refresh_seconds"]:
        # The header as well as the <meta>, for clients that honour only one of them.
        response["Refresh"] = str(PENDING_REFRESH_SECONDS)
    patch_cache_control(response, private=True, no_cache=True)
    return response


def link_not_found(request: HttpRequest) -> HttpResponse:
    """The one answer to any link that is not ours. Nothing from the request is echoed into it."""
    return render(request, "links/public/not_found.html", status=404)


def _unavailable(request: HttpRequest, *, template) -> HttpResponse:
    return render(request, "links/public/unavailable.html", {"template": template}, status=410)


def _already_enrolled(
    request: HttpRequest,
    *,
    template,
    message: str,
    offer=None,
    sent_to: str = "",
    problem: str = "",
    contact_help: str = "",
    status=200,
) -> HttpResponse:
    context = {
        "template": template,
        "custom_message": message,
        "offer": offer,
        "sent_to": sent_to,
        "problem": problem,
        "contact_help": contact_help,
    }
    response = render(request, "links/public/already_enrolled.html", context, status=status)
    patch_cache_control(response, private=True, no_store=True)  # the offer's key is for this page only
    return response


def _send_pass(request: HttpRequest, *, context: claims.ClaimContext) -> HttpResponse:
    """The offer to send my pass: its link goes to the member's address on file, never to the page."""
    try:
        sent_to = claims.claim_send_pass(
            context=context,
            key=request.POST["send_offer"],
            channel=request.POST.get("channel", ""),
            pass_url_for=_absolute_pass_url,
            language=translation.get_language(),
        )
    except PassLinkNotSent as exc:
        status = 429 if exc.reason == "rate_limited" else 200
        offer = contact_help = None
        if exc.reason == "undeliverable":
            # An address that takes no messages from us: the other channel, if it can send, else how to reach the issuer.
            offer = claims.send_offer_left(
                context=context, key=request.POST["send_offer"], failed_channel=request.POST.get("channel", "")
            )
            if offer is None:
                contact_help = pass_links.contact_help_for(template=context.template)
        return _already_enrolled(
            request,
            template=context.template,
            message=context.already_enrolled_message,
            offer=offer,
            problem=exc.reason,
            contact_help=contact_help or "",
            status=status,
        )
    if sent_to is None:
        return _already_enrolled(
            request, template=context.template, message=context.already_enrolled_message, problem="expired"
        )
    return _already_enrolled(
        request, template=context.template, message=context.already_enrolled_message, sent_to=sent_to
    )


def _absolute_pass_url(member: Member) -> str:
    path = reverse("holder:pass", kwargs={"key": claims.pass_page_key(member=member)})
    return settings.PUBLIC_BASE_URL.rstrip("/") + path


def _qr_svg(pass_id: str) -> str:
    return _qr_svg_in(pass_id, translation.get_language())


# A pass page is opened again and again (a pending page refreshes into it, holders come back, everyone who
# claimed one autofill link lands on it), so the last few hundred QR codes are kept, per language (the title is
# translated). At ~4 KB each, at most a few MB per process.
@functools.lru_cache(maxsize=256)
def _qr_svg_in(pass_id: str, _language: str) -> str:
    return qr_svg(pass_id, scale=6, title=_("QR code of your pass"))
