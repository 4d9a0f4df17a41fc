"""Staff pages for sending a batch's links: the Send links page (preview, test send, send), a send's state,
cancel, send again, and the batch's messages as CSV. Managers only (links.send_links); the logic is
links.services.sending."""

from __future__ import annotations

import csv
import os
import secrets

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import send_selectors
from .models import LinkBatch, LinkBatchSend
from .send_forms import SendForm
from .services import sending

SEND = "links.send_links"
VIEW = "links.view_linkbatch"
# The session remembers the keys of the last pages whose "Send a test" went out: reloading such a page (or going
# back to it and posting it again) posts its key again and sends nothing, where a press of the button on the page
# a test returned sends another. A few keys, for several tabs; a test that went nowhere is not remembered.
SENT_TEST_KEYS = "links_sent_test_keys"
SENT_TEST_KEYS_KEPT = 20


def _initial_data(form: SendForm) -> dict:
    return {name: field.initial for name, field in form.fields.items() if field.initial is not None}


@require_http_methods(["GET", "POST"])
@permission_required(SEND, raise_exception=True)
def batch_send(request, batch_id):
    batch = get_object_or_404(LinkBatch.objects.select_related("template"), pk=batch_id)
    if batch.status != LinkBatch.Status.SUCCEEDED or not batch.output_file:
        messages.error(request, "Links can be sent once the batch has finished making them.")
        return redirect("links:batch_detail", batch.pk)
    if request.method == "POST":
        form = SendForm(request.POST, batch=batch, user=request.user)
    else:
        blank = SendForm(batch=batch, user=request.user)
        form = SendForm(_initial_data(blank), batch=batch, user=request.user)
    action = request.POST.get("action", "preview")
    preview, plan, tests, test_repeated = [], None, [], False
    status = 200
    if form.is_valid():
        options = form.options()
        try:
            plan = sending.batch_send_plan(batch=batch, options=options)
            if action == "send":
                if request.POST.get("expected") != str(plan.messages):
                    form.add_error(
                        None,
                        f"The rows to send changed since this page was shown: {plan.messages:,} now. Check the "
                        "preview and press Send again.",
                    )
                elif not plan.messages:
                    form.add_error(None, "No row gets a message with these settings.")
                else:
                    sending.batch_send_request(batch=batch, options=options, user=request.user, request=request)
                    messages.success(
                        request,
                        f"Sending to {plan.messages:,} holder{'s' if plan.messages != 1 else ''}: the messages are "
                        "being queued, and this page shows them once they are.",
                    )
                    return redirect(reverse("links:batch_detail", args=[batch.pk]) + "#delivery")
            elif action == "test":
                test_key = request.POST.get("test_key", "")
                sent_keys = request.session.get(SENT_TEST_KEYS, [])
                if test_key and test_key in sent_keys:
                    test_repeated = True
                else:
                    tests = sending.batch_send_test(
                        batch=batch,
                        options=options,
                        email=form.cleaned_data.get("test_email") or "",
                        phone=form.cleaned_data.get("test_phone") or "",
                    )
                    if test_key and any(test.sent for test in tests):
                        request.session[SENT_TEST_KEYS] = [*sent_keys, test_key][-SENT_TEST_KEYS_KEPT:]
            preview = sending.batch_send_preview(batch=batch, options=options)
        except sending.SendError as exc:
            form.add_error(None, str(exc))
    if form.errors:
        status = 400
    context = {
        "batch": batch,
        "form": form,
        "preview": preview,
        "plan": plan,
        "tests": tests,
        "test_repeated": test_repeated,
        "test_key": secrets.token_urlsafe(12),
    }
    return render(request, "links/batch_send.html", context, status=status)


@require_POST
@permission_required(SEND, raise_exception=True)
def batch_send_cancel(request, batch_id):
    batch = get_object_or_404(LinkBatch, pk=batch_id)
    count = sending.batch_send_cancel(batch=batch, user=request.user, request=request)
    messages.success(request, f"Cancelled {count:,} message{'s' if count != 1 else ''} not sent yet.")
    return redirect(reverse("links:batch_detail", args=[batch.pk]) + "#delivery")


@require_POST
@permission_required(SEND, raise_exception=True)
def batch_send_again(request, batch_id):
    batch = get_object_or_404(LinkBatch, pk=batch_id)
    count = sending.batch_send_again(batch=batch, user=request.user, request=request)
    messages.success(request, f"{count:,} failed message{'s' if count != 1 else ''} queued again.")
    return redirect(reverse("links:batch_detail", args=[batch.pk]) + "#delivery")


@require_GET
@permission_required(VIEW, raise_exception=True)
def batch_send_status(request, batch_id, send_id):
    """A send's state for the batch page, which reloads once the worker has queued its messages."""
    return JsonResponse(get_object_or_404(LinkBatchSend, pk=send_id, batch_id=batch_id).as_json())


class _Echo:
    def write(self, value):
        return value


@require_GET
@permission_required(VIEW, raise_exception=True)
def batch_messages_csv(request, batch_id):
    batch = get_object_or_404(LinkBatch, pk=batch_id)
    status = request.GET.get("status") or None
    writer = csv.writer(_Echo())
    lines = (writer.writerow(row) for row in send_selectors.batch_messages_csv(batch=batch, status=status))
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    stem = os.path.splitext(batch.original_name)[0] or "upload"
    filename = f"{stem}-messages{'-' + status if status else ''}.csv"
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["Cache-Control"] = "private, no-store"
    return response
