"""Django admin for the outbox: read-only. Sending, cancelling and the suppression list go through the
services (which keep the at-most-once rule and write the audit rows); the admin would bypass both."""

from django.contrib import admin

from audit.admin import AppendOnlyAdmin as ReadOnlyAdmin

from .models import Message, SendingRun, Suppression


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "subject_key", "channel", "to", "status", "attempts", "queued_at", "sent_at")
    list_filter = ("channel", "status")
    search_fields = ("subject_key", "to", "provider_id")


@admin.register(Suppression)
class SuppressionAdmin(ReadOnlyAdmin):
    list_display = ("address", "channel", "reason", "created_at")
    list_filter = ("channel", "reason")
    search_fields = ("address",)


@admin.register(SendingRun)
class SendingRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "channel", "status", "sent", "started_at", "heartbeat_at", "finished_at")
    list_filter = ("channel", "status")
