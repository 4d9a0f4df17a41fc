"""`{% batch_delivery batch %}`: a batch's messages on its page — the send history, the delivery table filtered
by status (?status=), paginated (?page=), with cancel, send again and the CSV export."""

from django import template
from django.core.paginator import Paginator

from links import send_selectors

register = template.Library()
MESSAGES_PAGE_SIZE = 50


@register.inclusion_tag("links/_batch_delivery.html", takes_context=True)
def batch_delivery(context, batch) -> dict:
    request = context["request"]
    status = request.GET.get("status") or ""
    rows = send_selectors.batch_messages(batch=batch, status=status or None)
    page = Paginator(rows, MESSAGES_PAGE_SIZE).get_page(request.GET.get("page"))
    for message in page:
        message.row = send_selectors.row_of_key(message.subject_key)
    return {
        "batch": batch,
        "request": request,
        "perms": context.get("perms"),
        "csrf_token": context.get("csrf_token"),
        "funnel": send_selectors.batch_funnel(batch=batch),
        "sends": send_selectors.batch_sends(batch=batch)[:10],
        "page": page,
        "status": status,
        "statuses": send_selectors.STATUS_CHOICES,
    }
