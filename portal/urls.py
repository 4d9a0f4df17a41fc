from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import auth_views as portal_auth_views
from . import health, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", portal_auth_views.ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", health.healthz, name="healthz"),
    path("templates/", views.template_list, name="template_list"),
    path("templates/<uuid:template_id>/", views.template_detail, name="template_detail"),
    path("sync/", include("templates_sync.urls")),
    path("members/", include("members.urls")),
    path("links/", include("links.urls")),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
]
