"""Staff pages are never stored by a browser or a proxy.

Member pages, member exports and link downloads carry holders' personal data and bearer links; a shared
computer's cache or back button must not keep them after the staff member logs out. Every page a logged-in
user gets is private and no-store unless its view chose its own caching (the public claim page does: it
must be re-posted from the back button with the same nonce).
"""

from django.utils.cache import patch_cache_control


class StaffPagesNotStoredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.user.is_authenticated and not response.has_header("Cache-Control"):
            patch_cache_control(response, private=True, no_store=True)
        return response
