"""One StaffAction per change a logged-in person makes through any page.

Every app's changes go through a POST (or PUT/PATCH/DELETE) view, so recording each such request that
succeeded (status below 400) by a logged-in person gives one log of every staff action without each view
remembering to write one: the view's name is the action and the URL's arguments name the object. Services
that know a change's before/after (staff accounts) record it themselves as well, with those values.
"""

from django.conf import settings

from .services import staff_action_record

CHANGING_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class StaffActionMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        if (
            request.method in CHANGING_METHODS
            and response.status_code < 400
            and match is not None
            and match.view_name not in settings.AUDIT_UNRECORDED_VIEWS
            # Public pages (a staff member claiming a pass like any holder) are no staff action.
            and getattr(match.func, "login_required", True)
            and getattr(request, "user", None) is not None
            and request.user.is_authenticated
        ):
            staff_action_record(
                actor=request.user,
                action=match.view_name,
                object_type=match.route[:100],
                object_id=",".join(str(value) for value in match.kwargs.values()),
                object_repr=request.path[:200],
                request=request,
            )
        return response
