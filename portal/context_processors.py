def nav_section(request) -> dict:
    """Which main-navigation item the page belongs to ('' on pages outside any, such as a 404)."""
    match = getattr(request, "resolver_match", None)
    return {"nav_section": (match.namespace or match.url_name or "") if match else ""}
