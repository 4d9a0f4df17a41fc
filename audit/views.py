"""Staff pages of the audit records: filter, page through, export as CSV. Reading only; nothing here writes."""

from django.conf import settings
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from . import selectors
from .models import AuthEvent

VIEW_AUTH_EVENTS = "audit.view_authevent"
VIEW_STAFF_ACTIONS = "audit.view_staffaction"


def _csv_response(lines, name: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-{timezone.localdate():%Y-%m-%d}.csv"'
    return response


@require_GET
@permission_required(VIEW_AUTH_EVENTS, raise_exception=True)
def auth_event_list(request):
    filters = selectors.AuditFilters.from_query(request.GET)
    events = selectors.auth_event_list(filters=filters)
    if request.GET.get("format") == "csv":
        return _csv_response(selectors.auth_event_csv_lines(events=events), "sign-in-events")
    context = {
        "page": Paginator(events, 100).get_page(request.GET.get("page")),
        "filters": filters,
        "kinds": AuthEvent.Kind.choices,
        "retention_days": settings.AUTH_EVENTS_DAYS,
        "export_query": request.GET.urlencode(),
    }
    return render(request, "audit/auth_event_list.html", context)


@require_GET
@permission_required(VIEW_STAFF_ACTIONS, raise_exception=True)
def staff_action_list(request):
    filters = selectors.AuditFilters.from_query(request.GET)
    actions = selectors.staff_action_list(filters=filters)
    if request.GET.get("format") == "csv":
        return _csv_response(selectors.staff_action_csv_lines(actions=actions), "staff-actions")
    context = {
        "page": Paginator(actions, 100).get_page(request.GET.get("page")),
        "filters": filters,
        "export_query": request.GET.urlencode(),
    }
    return render(request, "audit/staff_action_list.html", context)
