from django.urls import path

from . import views, webhooks

app_name = "delivery"
urlpatterns = [
    path("suppressions/", views.suppression_list, name="suppression_list"),
    path("suppressions/<int:entry_id>/remove/", views.suppression_remove, name="suppression_remove"),
    path("outbox/", views.outbox_page, name="outbox"),
    path("unsubscribe/<str:token>/", views.unsubscribe_page, name="unsubscribe"),
    path("webhooks/twilio/status/", webhooks.twilio_status, name="twilio_status"),
    path("webhooks/twilio/inbound/", webhooks.twilio_inbound, name="twilio_inbound"),
]
