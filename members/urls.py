from django.urls import path

from . import views

app_name = "members"
urlpatterns = [
    path("", views.member_list, name="member_list"),
    path("export.csv", views.member_export, name="member_export"),
    path("add/", views.member_add_choose, name="member_add_choose"),
    path("add/<uuid:template_id>/", views.member_add, name="member_add"),
    path("<int:member_id>/", views.member_detail, name="member_detail"),
    path("<int:member_id>/void/", views.member_void, name="member_void"),
    path("<int:member_id>/refresh/", views.member_refresh, name="member_refresh"),
    path("<int:member_id>/link-pass/", views.member_link_pass, name="member_link_pass"),
    path("<int:member_id>/edit/", views.member_edit, name="member_edit"),
    path("<int:member_id>/send-link/", views.member_send_link, name="member_send_link"),
    path("bulk/", views.member_bulk, name="member_bulk"),
    path("bulk/<int:bulk_id>/", views.bulk_detail, name="bulk_detail"),
    path("bulk/<int:bulk_id>/status.json", views.bulk_status, name="bulk_status"),
    path("refresh-runs/", views.refresh_runs, name="refresh_runs"),
    path("refresh-runs/now/", views.refresh_now, name="refresh_now"),
    path("refresh-runs/<int:run_id>/status.json", views.refresh_run_status, name="refresh_run_status"),
    path("autofill/<uuid:template_id>/resolve/", views.autofill_conflict_resolve, name="autofill_conflict_resolve"),
    path("autofill/<uuid:template_id>/", views.autofill_settings, name="autofill_settings"),
    path("autofill/<uuid:template_id>/backfill/", views.autofill_backfill, name="autofill_backfill"),
    path("backfills/<int:backfill_id>/status.json", views.backfill_status, name="backfill_status"),
]
