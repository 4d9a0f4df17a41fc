"""Link batches' history in the admin, for reading: who downloaded, changed or deleted which upload."""

from django.contrib import admin

from audit.admin import AppendOnlyAdmin

from .models import LinkBatchEvent


@admin.register(LinkBatchEvent)
class LinkBatchEventAdmin(AppendOnlyAdmin):
    list_display = ("at", "by_name", "action", "batch_id", "batch_name", "file")
    list_filter = ("action", "file")
    search_fields = ("=batch_id", "=by_name")
