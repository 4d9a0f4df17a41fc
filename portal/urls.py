from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.i18n import set_language

from . import account_views, health, staff_views, views

urlpatterns = [
    # The holder's side first: SmartPass links (/p/<token>), short links and pass pages, public. A surge of
    # holders is most of the traffic, and each pattern tried before theirs cost every claim request (3% of
    # the web process's CPU with these last). No staff address starts with p/, s/ or pass/.
    path("", include("links.public_urls")),
    path("", views.dashboard, name="dashboard"),
    # Throttled by django-axes (settings.py), like the admin's login.
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("login/second-factor/", account_views.second_factor_verify, name="second_factor_verify"),
    path("login/set-up-second-factor/", account_views.second_factor_enrol, name="second_factor_enrol"),
    path("account/", account_views.account, name="account"),
    path("account/password/", account_views.PasswordChangeView.as_view(), name="password_change"),
    path("account/recovery-codes/", account_views.recovery_codes_new, name="recovery_codes_new"),
    path("logout/", account_views.second_factor_exempt(auth_views.LogoutView.as_view()), name="logout"),
    path("healthz", health.healthz, name="healthz"),
    path("templates/", views.template_list, name="template_list"),
    path("templates/<uuid:template_id>/", views.template_detail, name="template_detail"),
    path("sync/", include("templates_sync.urls")),
    path("members/", include("members.urls")),
    path("links/", include("links.urls")),
    path("audit/", include("audit.urls")),
    path("delivery/", include("delivery.urls")),
    # django-anymail's status webhooks (public; checked against ANYMAIL_WEBHOOK_SECRET).
    path("anymail/", include("delivery.anymail_urls")),
    path("staff/", staff_views.staff_list, name="staff_list"),
    path("staff/invite/", staff_views.staff_invite, name="staff_invite"),
    path("staff/<int:user_id>/role/", staff_views.staff_role, name="staff_role"),
    path("staff/<int:user_id>/active/", staff_views.staff_active, name="staff_active"),
    path("staff/<int:user_id>/reset-second-factor/", staff_views.staff_reset_second_factor, name="staff_reset_mfa"),
    # The invitation link (public: the invited person has no password yet).
    path(
        "staff/set-password/<uidb64>/<token>/",
        staff_views.StaffSetPasswordView.as_view(),
        name="staff_set_password",
    ),
    path("admin/login/", account_views.admin_login, name="admin_login"),
    path("admin/", admin.site.urls),
    # Holder pages switch language too, so the switch is public.
    path("i18n/setlang/", login_not_required(set_language), name="set_language"),
]
