"""Staff pages of the outbox: the suppression list (a manager can remove an entry), the DEBUG-only Outbox
page of `make run`, and the public one-click unsubscribe link every email carries."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_not_required, permission_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import outbox, selectors, services, unsubscribe
from .models import CHANNELS, Suppression


@require_GET
@permission_required("delivery.view_suppression", raise_exception=True)
def suppression_list(request):
    channel = request.GET.get("channel", "")
    channel = channel if channel in dict(CHANNELS) else ""
    search = request.GET.get("q", "").strip()[:100]
    page = Paginator(selectors.suppressions(channel=channel, search=search), 50).get_page(request.GET.get("page"))
    context = {"page": page, "channel": channel, "q": search, "channels": CHANNELS, "outbox_on": settings.DEBUG}
    return render(request, "delivery/suppression_list.html", context)


@require_POST
@permission_required("delivery.remove_suppression", raise_exception=True)
def suppression_remove(request, entry_id):
    entry = get_object_or_404(Suppression, pk=entry_id)
    services.suppression_remove(entry=entry, actor=request.user, request=request)
    flash.success(request, f"{entry.address} was taken off the suppression list: later sends reach it again.")
    return redirect("delivery:suppression_list")


@require_GET
@permission_required("delivery.view_message", raise_exception=True)
def outbox_page(request):
    """What `make run` sent: files under var/outbox/, never a real provider. Only with DEBUG on."""
    if not settings.DEBUG:
        raise Http404("The outbox exists only in development (DEBUG).")
    context = {"entries": outbox.outbox_entries(), "folder": settings.OUTBOX_DIR}
    return render(request, "delivery/outbox.html", context)


@csrf_exempt  # RFC 8058: the mail client POSTs without a form of ours
@login_not_required
@require_http_methods(["GET", "POST"])
def unsubscribe_page(request, token):
    """The List-Unsubscribe link: GET shows a button (link scanners only GET), POST puts the address on the
    suppression list."""
    found = unsubscribe.address_from(token)
    if found is None:
        raise Http404("This unsubscribe link is not valid.")
    channel, address = found
    done = request.method == "POST"
    if done:
        services.suppression_add(
            channel=channel, address=address, reason=Suppression.OPT_OUT, detail="Unsubscribe link"
        )
    return render(request, "delivery/unsubscribe.html", {"done": done})
