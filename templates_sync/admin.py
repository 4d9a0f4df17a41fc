from django.contrib import admin
from django.utils.html import format_html_join

from audit.admin import AppendOnlyAdmin

from .models import PassTemplate, SyncRun


@admin.register(PassTemplate)
class PassTemplateAdmin(admin.ModelAdmin):
    """Read-only: the mirror is written by the sync alone."""

    list_display = ["name", "type", "status", "changed_at", "removed_at"]
    list_filter = ["type", "status"]
    search_fields = ["name", "id"]
    readonly_fields = ["input_field_list"]

    @admin.display(description="Input fields")
    def input_field_list(self, template: PassTemplate) -> str:
        return (
            format_html_join(
                "",
                "<div>{} (<code>{}</code>) · {} · entered by {}{}{}</div>",
                (
                    (
                        f.label,
                        f.identifier,
                        f.format_label,
                        f.type.lower() or "?",
                        " · mandatory" if f.is_mandatory else "",
                        " · unique" if f.is_unique else "",
                    )
                    for f in template.input_fields
                ),
            )
            or "none"
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(SyncRun)
class SyncRunAdmin(AppendOnlyAdmin):
    """History, and the running row holds the sync lock: nobody may change or delete a run here."""

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
