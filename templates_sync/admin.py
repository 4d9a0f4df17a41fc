from django.contrib import admin

from .models import PassTemplate, SyncRun, TemplateInputField


class TemplateInputFieldInline(admin.TabularInline):
    model = TemplateInputField
    extra = 0
    can_delete = False
    fields = ["position", "identifier", "label", "format", "type", "is_mandatory", "is_unique"]
    readonly_fields = fields


@admin.register(PassTemplate)
class PassTemplateAdmin(admin.ModelAdmin):
    """Read-only: the mirror is written by the sync alone."""

    list_display = ["name", "type", "status", "changed_at", "removed_at"]
    list_filter = ["type", "status"]
    search_fields = ["name", "id"]
    inlines = [TemplateInputFieldInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "status",
        "trigger",
        "created_count",
        "updated_count",
        "unchanged",
        "removed",
        "queued_at",
    ]
    list_filter = ["kind", "status", "trigger"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
