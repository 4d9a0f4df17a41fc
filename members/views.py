"""Staff pages for members and the autofill setting. Logic lives in services and selectors."""

import uuid
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from templates_sync.models import PassTemplate

from . import selectors, services
from .csv_export import member_csv_lines
from .forms import AutofillSettingForm, MemberAddForm, MemberEditForm
from .identity import InvalidIdentity
from .models import AutofillBackfill, AutofillSource, Member, MemberBulkAction, MemberRefreshRun
from .services import autofill, bulk, issuing, pass_links, passes, refresh

# Reading needs a role too, not just a login: these pages hold every member's personal data.
VIEW_MEMBERS = "members.view_member"
VIEW_AUTOFILL = "members.view_autofillsetting"
PAGE_SIZES = ("25", "50", "100", "200")


@require_GET
@permission_required(VIEW_MEMBERS, raise_exception=True)
def member_list(request):
    filters = selectors.MemberFilters.from_query(request.GET)
    per_page = int(request.GET["per_page"]) if request.GET.get("per_page") in PAGE_SIZES else selectors.MEMBER_PAGE_SIZE
    page = selectors.member_page(
        members=selectors.member_list(filters=filters), page=request.GET.get("page"), per_page=per_page
    )
    context = {
        "page": page,
        "filters": filters,
        "templates": PassTemplate.objects.order_by("name").only("id", "name"),
        "statuses": Member.Status.choices,
        "sources": Member.Source.choices,
        "sorts": [
            ("-created", "Newest first"),
            ("created", "Oldest first"),
            ("name", "Name A–Z"),
            ("-name", "Name Z–A"),
            ("email", "Email"),
            ("status", "Status"),
        ],
        "filtered_template": _filtered_template(filters),
        "member_url_prefix": reverse("members:member_list"),
        "sort_links": _sort_links(request, filters),
        "filter_fields": [(name, getattr(filters, name)) for name in filters.FIELDS if getattr(filters, name)],
    }
    return render(request, "members/member_list.html", context)


SORTABLE = {"name": "name", "email": "email", "status": "status", "created": "-created"}  # column: first sort


def _sort_links(request, filters) -> dict[str, tuple[str, str]]:
    """Per sortable column: the query string that sorts by it (reversed when it is the sort), and its arrow."""
    current = filters.sort or "-created"
    links = {}
    for column, first in SORTABLE.items():
        ascending, descending = first.lstrip("-"), "-" + first.lstrip("-")
        active = current in (ascending, descending)
        query = request.GET.copy()
        query.pop("page", None)
        query["sort"] = (descending if current == ascending else ascending) if active else first
        links[column] = (query.urlencode(), ("▼" if current == descending else "▲") if active else "")
    return links


def _filtered_template(filters) -> PassTemplate | None:
    try:
        return PassTemplate.objects.filter(pk=uuid.UUID(filters.template)).first()
    except ValueError:  # none chosen, or a malformed id in the query string
        return None


@require_http_methods(["GET", "POST"])
@permission_required(VIEW_MEMBERS, raise_exception=True)
def member_export(request):
    """Every member the filter matches, or only the ones ticked on the list. The list's "Export selected"
    posts (a read, but the form carries its CSRF token, which must not end up in a URL and its logs)."""
    query = request.POST if request.method == "POST" else request.GET
    filters = selectors.MemberFilters.from_query(query)
    members = selectors.member_list(filters=filters)
    ticked = _ticked_ids(query)
    if ticked and query.get("all") != "1":
        members = members.filter(pk__in=ticked)
    lines = member_csv_lines(members)
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="members-{stamp}.csv"'
    return response


@require_GET
@permission_required(VIEW_MEMBERS, raise_exception=True)
def member_detail(request, member_id):
    try:
        member = selectors.member_detail(member_id=member_id)
    except Member.DoesNotExist:
        raise Http404("No such member.") from None
    context = {
        "member": member,
        "field_values": selectors.member_values_by_label(member=member),
        "history": selectors.member_status_history(member=member),
        "changes": selectors.member_changes(member=member),
        "autofill": selectors.autofill_setting_for(template=member.template),
        "sent_messages": selectors.member_messages(member=member),
        "pass_link_addresses": pass_links.pass_link_addresses(member=member),
        "pass_link_channels": pass_links.pass_link_channels(),
    }
    return render(request, "members/member_detail.html", context)


@require_POST
@permission_required("members.manage_members", raise_exception=True)
def member_send_link(request, member_id):
    """ "Send pass link again": the member's pass link to the address on file, by the channel chosen."""
    member = get_object_or_404(Member.objects.select_related("template"), pk=member_id)
    _queue_pass_links(request, [member], request.POST.get("channel", ""))
    return redirect("members:member_detail", member.pk)


def _queue_pass_links(request, members, channel: str) -> None:
    wanted = {"email": ("email",), "sms": ("sms",), "email,sms": ("email", "sms")}.get(channel, ())
    available = pass_links.pass_link_channels()
    channels = tuple(name for name in wanted if available[name])  # email,sms: by SMS only where it is set up
    if not channels:
        messages.error(request, "That channel is not set up; nothing was sent.")
        return
    language = request.POST.get("language") if request.POST.get("language") in ("is", "en") else "is"
    result = pass_links.pass_links_queue(members=members, channels=channels, language=language)
    if result.queued:
        messages.success(request, f"Pass link queued for {result.queued} member(s); it goes out in a moment.")
    if result.already:
        messages.info(request, f"{result.already} already queued.")
    for _key, reason in result.skipped[:5]:
        messages.warning(request, f"Not sent: {reason}")
    if len(result.skipped) > 5:
        messages.warning(request, f"… and {len(result.skipped) - 5} more not sent.")


def _ticked_ids(query) -> list[int]:
    return [int(value) for value in query.getlist("member") if value.isdigit()]


@require_POST
@permission_required("members.manage_members", raise_exception=True)
def member_bulk(request):
    """Void or refresh the ticked members, or every member the list's filter matches (all=1)."""
    filters = selectors.MemberFilters.from_query(request.POST)
    every = request.POST.get("all") == "1"
    if request.POST.get("action") == "send_link":
        chosen = (
            selectors.member_list(filters=filters) if every else Member.objects.filter(pk__in=_ticked_ids(request.POST))
        )
        chosen = list(chosen.select_related("template")[: bulk.BULK_MAX])
        if not chosen:
            messages.error(request, "No members are selected.")
        else:
            _queue_pass_links(request, chosen, request.POST.get("channel", "email"))
        return redirect(f"{reverse('members:member_list')}?{_filter_query(filters)}")
    try:
        action = bulk.member_bulk_request(
            action=request.POST.get("action", ""),
            user=request.user,
            member_ids=_ticked_ids(request.POST),
            members=selectors.member_list(filters=filters) if every else None,
        )
    except services.MemberError as exc:
        messages.error(request, str(exc))
        return redirect(f"{reverse('members:member_list')}?{_filter_query(filters)}")
    messages.info(request, f"{action.get_action_display()}: {action.total} members queued; progress shows below.")
    return redirect("members:bulk_detail", action.pk)


def _filter_query(filters: selectors.MemberFilters) -> str:
    return urlencode({name: getattr(filters, name) for name in filters.FIELDS if getattr(filters, name)})


@require_GET
@permission_required("members.view_memberbulkaction", raise_exception=True)
def bulk_detail(request, bulk_id):
    action = get_object_or_404(MemberBulkAction.objects.select_related("requested_by"), pk=bulk_id)
    outcomes = action.outcomes.exclude(outcome="waiting").select_related("member").order_by("-outcome", "id")
    return render(request, "members/bulk_detail.html", {"action": action, "outcomes": outcomes[:500]})


@require_GET
@permission_required("members.view_memberbulkaction", raise_exception=True)
def bulk_status(request, bulk_id):
    return JsonResponse(get_object_or_404(MemberBulkAction, pk=bulk_id).as_json())


@require_GET
@permission_required("members.view_memberrefreshrun", raise_exception=True)
def refresh_runs(request):
    page = Paginator(MemberRefreshRun.objects.select_related("triggered_by"), 50).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "interval_minutes": max(1, settings.MEMBER_REFRESH_INTERVAL // 60),
        "rate": settings.MEMBER_REFRESH_RATE,
    }
    return render(request, "members/refresh_runs.html", context)


@require_POST
@permission_required("members.manage_members", raise_exception=True)
def refresh_now(request):
    run = refresh.member_refresh_run_start(trigger=MemberRefreshRun.Trigger.MANUAL, user=request.user)
    if run.status == MemberRefreshRun.Status.SKIPPED:
        messages.warning(request, run.error)
    else:
        messages.info(request, f"Refresh started: {run.total} members to read; progress shows below.")
    return redirect("members:refresh_runs")


@require_GET
@permission_required("members.view_memberrefreshrun", raise_exception=True)
def refresh_run_status(request, run_id):
    return JsonResponse(get_object_or_404(MemberRefreshRun, pk=run_id).as_json())


@require_http_methods(["GET", "POST"])
@permission_required("members.manage_members", raise_exception=True)
def member_edit(request, member_id):
    member = get_object_or_404(Member.objects.select_related("template"), pk=member_id)
    form = MemberEditForm(request.POST or None, member=member)
    if request.method == "POST" and form.is_valid():
        try:
            passes.member_edit(
                member=member, values=form.values(), external_id=form.cleaned_data["external_id"], user=request.user
            )
        except services.InvalidMemberValues as exc:
            form.add_value_errors(exc.errors)
        except (InvalidIdentity, services.MemberError) as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Saved on SmartPages and here.")
            return redirect("members:member_detail", member.pk)
    return render(request, "members/member_edit.html", {"member": member, "form": form})


@require_POST
@permission_required("members.manage_members", raise_exception=True)
def member_void(request, member_id):
    member = get_object_or_404(Member.objects.select_related("template"), pk=member_id)
    try:
        passes.member_void(member=member, user=request.user)
    except services.MemberError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "The pass is voided.")
    return redirect("members:member_detail", member.pk)


@require_POST
@permission_required("members.manage_members", raise_exception=True)
def member_link_pass(request, member_id):
    member = get_object_or_404(Member.objects.select_related("template"), pk=member_id)
    try:
        issuing.member_link_pass(member=member, pass_id=request.POST.get("pass_id", ""), user=request.user)
    except services.MemberError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Linked to the pass on SmartPages.")
    return redirect("members:member_detail", member.pk)


@require_POST
@permission_required("members.manage_members", raise_exception=True)
def member_refresh(request, member_id):
    member = get_object_or_404(Member.objects.select_related("template"), pk=member_id)
    try:
        passes.member_refresh(member=member)
    except services.MemberError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Refreshed from SmartPages.")
    return redirect("members:member_detail", member.pk)


@require_GET
@permission_required("members.manage_members", raise_exception=True)
def member_add_choose(request):
    template_id = request.GET.get("template", "")
    if template_id:
        return redirect("members:member_add", template_id)
    templates = PassTemplate.objects.filter(removed_at__isnull=True).order_by("name")
    return render(request, "members/member_add_choose.html", {"templates": templates})


@require_http_methods(["GET", "POST"])
@permission_required("members.manage_members", raise_exception=True)
def member_add(request, template_id):
    template = get_object_or_404(PassTemplate, pk=template_id)
    form = MemberAddForm(request.POST or None, template=template)
    if request.method == "POST" and form.is_valid() and not template.issue_refusal_reason:
        try:
            issued = issuing.member_add(
                template=template, values=form.values(), external_id=form.cleaned_data["external_id"], user=request.user
            )
        except services.InvalidMemberValues as exc:
            form.add_value_errors(exc.errors)
        except (InvalidIdentity, services.MemberError) as exc:
            form.add_error(None, str(exc))
        else:
            _report_issue(request, issued)
            return redirect("members:member_detail", issued.member.pk)
    return render(request, "members/member_add.html", {"template": template, "form": form})


def _report_issue(request, issued: issuing.IssueResult) -> None:
    member = issued.member
    if issued.kind == issuing.IssueKind.ALREADY_ENROLLED:
        messages.warning(
            request,
            f"A member with External ID “{member.external_id}” already exists on this "
            "template; no new pass was made. This is that member.",
        )
    elif member.status == Member.Status.ISSUED:
        messages.success(request, "Member added and pass issued.")
    elif member.status == Member.Status.PENDING:
        messages.info(request, "Member added; SmartPages could not be reached, so the pass is still pending.")
    else:
        messages.error(request, "Member added, but SmartPages refused the pass; the reason is shown below.")


@require_http_methods(["GET", "POST"])
@permission_required(VIEW_AUTOFILL, raise_exception=True)
def autofill_settings(request, template_id):
    template = get_object_or_404(PassTemplate, pk=template_id)
    setting = selectors.autofill_setting_for(template=template)
    can_change = request.user.has_perm("members.change_autofill")
    proposal = None  # what a proposed setting would do: to confirm on saving, or only to look at ("Preview")
    previewing = False
    if request.method == "POST":
        if not can_change:
            raise PermissionDenied
        form = AutofillSettingForm(request.POST, template=template)
        previewing = request.POST.get("preview") == "1"
        if previewing:
            # "Preview": what the proposed setting would do, saving nothing. A POST, so that the form's CSRF token
            # stays out of the URL (history, access logs).
            proposal = _autofill_proposal(template, form.cleaned_data) if form.is_valid() else None
        elif form.is_valid():
            proposal = _autofill_fill_step(request, template, setting, form.cleaned_data)
            if proposal is None and (saved := _autofill_save(request, template, form)) is not None:
                return saved
        preview = proposal
    else:
        initial = {
            "source": setting.source,
            "field_identifier": setting.field_identifier,
            "already_enrolled_message": setting.already_enrolled_message,
            "already_enrolled_message_is": setting.already_enrolled_message_is,
            "contact_help": setting.contact_help,
        }
        form = AutofillSettingForm(initial=initial, template=template)
        # "Check existing members" (?preview=1): the saved setting's preview, only when asked for.
        preview = selectors.autofill_preview(template=template) if request.GET.get("preview") == "1" else None
    open_conflicts = list(selectors.open_conflicts(template=template).values_list("external_id", flat=True)[:100])
    if preview is not None and preview.field_identifier:
        groups = selectors.conflict_groups_from_preview(preview=preview)
    else:
        # Conflicts a claim or a backfill opened: listed without reading every member of the template.
        groups = selectors.autofill_conflict_groups(template=template, external_ids=open_conflicts)
        settled = set(open_conflicts) - {group.external_id for group in groups}
        if settled:  # settled another way (a member voided or edited, autofill turned off): no longer open
            autofill.external_id_conflicts_close_settled(template=template, external_ids=settled)
            open_conflicts = [external_id for external_id in open_conflicts if external_id not in settled]
    context = {
        "template": template,
        "setting": setting,
        "form": form,
        "can_change": can_change,
        "preview": preview,
        "confirming": proposal is not None and not previewing,
        "previewing_proposal": proposal is not None,
        "conflict_groups": groups,
        "conflict_source": AutofillSource(preview.source if preview is not None else setting.source).label,
        "open_conflicts": len(open_conflicts),
        "invalid_shown": (preview.invalid[:20] if preview else []),
        "changes": selectors.autofill_changes(template=template)[:50],
        "backfill": selectors.autofill_backfill_latest(template=template),
    }
    return render(request, "members/autofill_settings.html", context)


def _autofill_fill_step(request, template, setting, data) -> selectors.AutofillPreview | None:
    """The preview to confirm before saving, or None to save now: turning autofill on (or onto another field)
    for a template whose members have no External ID shows, in the same step, how many would get one and the
    conflicts; the confirmation saves and fills them in."""
    if data["source"] == AutofillSource.OFF or request.POST.get("confirm") == "1":
        return None
    if (data["source"], data["field_identifier"]) == (setting.source, setting.field_identifier):
        return None  # only the message changed
    if not Member.objects.filter(
        template=template, external_id__isnull=True, status__in=selectors.BACKFILL_STATUSES
    ).exists():
        return None
    preview = _autofill_proposal(template, data)
    return preview if preview.field_identifier and preview.eligible else None


def _autofill_save(request, template, form):
    """Save the setting (and fill in External IDs when confirmed so); None when refused (the form says why)."""
    try:
        autofill.autofill_setting_change(template=template, user=request.user, **form.cleaned_data)
    except services.AutofillSettingError as exc:
        form.add_error(None, str(exc))
        return None
    url = reverse("members:autofill_settings", args=[template.pk])
    if request.POST.get("fill") == "1":
        try:
            run = autofill.autofill_backfill_request(template=template, user=request.user)
        except services.AutofillSettingError as exc:
            messages.error(request, f"Autofill setting saved, but the External IDs were not filled in: {exc}")
        else:
            _report_backfill(request, run, saved=True)
        return redirect(url)
    messages.success(request, "Autofill setting saved.")
    # Whoever turns autofill on wants to know what it means for the members already there.
    return redirect(f"{url}?preview=1" if form.cleaned_data["source"] != AutofillSource.OFF else url)


def _report_backfill(request, run: AutofillBackfill, *, saved: bool = False) -> None:
    lead = "Autofill setting saved. " if saved else ""
    if run.is_finished:
        text = f"{lead}{run.filled} External ID{'s' if run.filled != 1 else ''} filled in"
        text += (
            f"; {run.conflicts} member{'s' if run.conflicts != 1 else ''} in conflicts have none yet: choose the pass "
            "to keep for each holder under “Conflicts” below and press “Resolve”."
            if run.conflicts
            else "."
        )
        messages.success(request, text)
    else:
        messages.info(request, f"{lead}Filling in External IDs; the progress shows below.")


def _autofill_proposal(template: PassTemplate, data: dict) -> selectors.AutofillPreview:
    """What the proposed setting (a valid form's cleaned data, unsaved) would do to the members already there. It
    reads the External ID and values of every member of the template: too much to do on every visit of the page."""
    return selectors.autofill_preview(
        template=template, source=data["source"], field_identifier=data["field_identifier"]
    )


@require_POST
@permission_required("members.change_autofill", raise_exception=True)
def autofill_backfill(request, template_id):
    template = get_object_or_404(PassTemplate, pk=template_id)
    try:
        run = autofill.autofill_backfill_request(template=template, user=request.user)
    except services.AutofillSettingError as exc:
        messages.error(request, str(exc))
    else:
        _report_backfill(request, run)
    return redirect(reverse("members:autofill_settings", args=[template.pk]))


@require_POST
@permission_required("members.change_autofill", raise_exception=True)
def autofill_conflict_resolve(request, template_id):
    """Resolve one conflict. Voiding the others' passes asks first, on a page naming each of them."""
    template = get_object_or_404(PassTemplate, pk=template_id)
    keep, external_id = request.POST.get("keep", ""), request.POST.get("external_id", "")
    void = request.POST.get("void") == "1"
    back = f"{reverse('members:autofill_settings', args=[template.pk])}#conflicts"
    group = selectors.autofill_conflict_group(template=template, external_id=external_id)
    if void and request.POST.get("confirm") != "1" and group is not None and keep.isdigit():
        kept = next((member for member in group.members if member.pk == int(keep)), None)
        if kept is not None:
            context = {"template": template, "group": group, "kept": kept, "others": group.others(kept.pk)}
            return render(request, "members/autofill_conflict_confirm.html", context)
    try:
        if not keep.isdigit():
            raise services.AutofillSettingError("Choose the member that keeps the External ID.")
        done = autofill.autofill_conflict_resolve(
            template=template, external_id=external_id, keep_member_id=int(keep), void_others=void, user=request.user
        )
    except services.AutofillSettingError as exc:
        messages.error(request, str(exc))
    else:
        text = (
            f"{done.kept} keeps External ID “{done.kept.external_id}”; {done.excluded} other "
            f"member{'' if done.excluded == 1 else 's'} left without it"
        )
        text += f", {done.voided} voided on SmartPages." if done.voided else "."
        messages.success(request, text)
        for error in done.void_errors:
            messages.error(request, f"Not voided: {error}")
    return redirect(back)


@require_GET
@permission_required("members.view_autofillbackfill", raise_exception=True)
def backfill_status(request, backfill_id):
    backfill = get_object_or_404(AutofillBackfill, pk=backfill_id)
    return JsonResponse(backfill.as_json())
