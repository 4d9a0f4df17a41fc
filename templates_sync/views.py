"""Staff pages for sync runs: start one, follow it, read the history."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from . import selectors, services
from .models import PassTemplate, SyncRun

VIEW_RUNS = "templates_sync.view_syncrun"


@require_POST
@permission_required("templates_sync.run_sync", raise_exception=True)
def sync_now(request):
    run = services.sync_request_full(user=request.user)
    if run.status == SyncRun.Status.SKIPPED:
        messages.warning(request, "Skipped: a sync is already running; its progress shows below.")
        run = selectors.running_full_sync() or run
    else:
        messages.info(request, "Sync started; its progress shows below.")
    return redirect(f"{_back(request)}?run={run.pk}")


@require_POST
@permission_required("templates_sync.run_sync", raise_exception=True)
def refresh(request, template_id):
    template = get_object_or_404(PassTemplate, pk=template_id)
    run = services.sync_request_refresh(template=template, user=request.user)
    messages.info(request, "Refresh started; its result shows below.")
    return redirect(f"{_back(request)}?run={run.pk}")


def _back(request) -> str:
    """The page the button was pressed on (its form posts `next`, a path on this site), else the sync history.
    The pages that start syncs belong to the portal: they say where to come back, so this app names none."""
    back = request.POST.get("next", "")
    if back and url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return back.split("?", 1)[0]
    return reverse("templates_sync:run_list")


@require_GET
@permission_required(VIEW_RUNS, raise_exception=True)
def run_list(request):
    page = Paginator(selectors.sync_run_history(), 50).get_page(request.GET.get("page"))
    interval_minutes = max(1, settings.TEMPLATE_SYNC_INTERVAL // 60)
    return render(request, "templates_sync/run_list.html", {"page": page, "interval_minutes": interval_minutes})


@require_GET
@permission_required(VIEW_RUNS, raise_exception=True)
def run_status(request, run_id):
    run = get_object_or_404(SyncRun, pk=run_id)
    return JsonResponse(run.as_json())
