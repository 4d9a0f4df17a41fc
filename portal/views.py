"""Pages that combine the apps: the dashboard and the template pages (which show members and links too)."""

from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from templates_sync import selectors as template_selectors
from templates_sync.models import PassTemplate, SyncRun

from . import selectors

# A login alone is not a role: a new account sees nothing until a manager puts it in a group.
VIEW_TEMPLATES = "templates_sync.view_passtemplate"


@require_GET
@permission_required(VIEW_TEMPLATES, raise_exception=True)
def dashboard(request):
    return render(request, "portal/dashboard.html", selectors.dashboard_summary())


@require_GET
@permission_required(VIEW_TEMPLATES, raise_exception=True)
def template_list(request):
    filters = {key: request.GET.get(key, "") for key in ("search", "type", "status", "removed")}
    templates = selectors.templates_with_counts(template_selectors.template_list(**filters))
    page = Paginator(templates, 50).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "filters": filters,
        "types": PassTemplate.Type.choices,
        "statuses": PassTemplate.Status.choices,
        "last_sync": template_selectors.last_full_sync(),
        "followed_run": _followed_run(request),
    }
    return render(request, "portal/template_list.html", context)


@require_GET
@permission_required(VIEW_TEMPLATES, raise_exception=True)
def template_detail(request, template_id):
    template = get_object_or_404(PassTemplate, pk=template_id)
    context = {"template": template, "followed_run": _followed_run(request)}
    return render(request, "portal/template_detail.html", context)


def _followed_run(request) -> SyncRun | None:
    """The run a page was asked to follow (?run=ID) after pressing Sync now or Refresh."""
    run_id = request.GET.get("run", "")
    return SyncRun.objects.filter(pk=run_id).first() if run_id.isdigit() else None
