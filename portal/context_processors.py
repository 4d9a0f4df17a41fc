def nav_section(request) -> dict:
    """Which main-navigation item the page belongs to ('' on pages outside any, such as a 404)."""
    match = getattr(request, "resolver_match", None)
    return {"nav_section": (match.namespace or match.url_name or "") if match else ""}


# The pages of one app that link to another's name them through these, set here at the top: templates_sync and
# members know nothing of the portal's template pages, and members nothing of link batches.
PAGE_URL_NAMES = {
    "template_list_url": "template_list",
    "template_url": "template_detail",
    "batch_url": "links:batch_detail",
}


def page_url_names(request) -> dict:
    """URL names of pages in other apps, for `{% url template_url pk %}` in an app's own templates."""
    return PAGE_URL_NAMES
