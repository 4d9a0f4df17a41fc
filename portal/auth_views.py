"""Login with throttling: too many attempts from one address or for one user name answer 429."""
from django.conf import settings
from django.contrib.auth import views as auth_views
from django_ratelimit.core import is_ratelimited


class ThrottledLoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        # Count both keys on every attempt (no short-circuit), so each limit sees every try.
        by_address = is_ratelimited(request, group="login-ip", key="ip", rate=settings.LOGIN_RATE, increment=True)
        by_user = is_ratelimited(
            request, group="login-user", key="post:username", rate=settings.LOGIN_RATE, increment=True
        )
        if by_address or by_user:
            context = self.get_context_data(form=self.get_form(), throttled=True)
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)
