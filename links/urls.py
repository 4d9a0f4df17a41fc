from django.urls import path

from . import send_views, views

app_name = "links"
urlpatterns = [
    path("", views.batch_list, name="batch_list"),
    path("template/<uuid:template_id>/", views.template_batches, name="template_batches"),
    path("template/<uuid:template_id>/upload/", views.upload, name="upload"),
    path("template/<uuid:template_id>/sample.csv", views.template_sample, name="template_sample"),
    path("<int:batch_id>/", views.batch_detail, name="batch_detail"),
    path("<int:batch_id>/confirm/", views.batch_confirm, name="batch_confirm"),
    path("<int:batch_id>/encoding/", views.batch_encoding, name="batch_encoding"),
    path("<int:batch_id>/rerun/", views.batch_rerun, name="batch_rerun"),
    path("<int:batch_id>/columns/", views.batch_remap, name="batch_remap"),
    path("<int:batch_id>/delete/", views.batch_delete, name="batch_delete"),
    path("<int:batch_id>/cancel/", views.batch_cancel, name="batch_cancel"),
    path("<int:batch_id>/status.json", views.batch_status, name="batch_status"),
    path("<int:batch_id>/download/<str:kind>/", views.batch_download, name="batch_download"),
    path("<int:batch_id>/send/", send_views.batch_send, name="batch_send"),
    path("<int:batch_id>/send/cancel/", send_views.batch_send_cancel, name="batch_send_cancel"),
    path("<int:batch_id>/send/again/", send_views.batch_send_again, name="batch_send_again"),
    path("<int:batch_id>/sends/<int:send_id>/status.json", send_views.batch_send_status, name="batch_send_status"),
    path("<int:batch_id>/messages.csv", send_views.batch_messages_csv, name="batch_messages_csv"),
]
