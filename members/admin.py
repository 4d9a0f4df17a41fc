"""Django admin for members and the autofill setting: read-mostly. Changes go through the staff pages,
whose services call SmartPages and write the audit rows; the admin would bypass both."""

from django.contrib import admin

from audit.admin import AppendOnlyAdmin as ReadOnlyAdmin

from .models import AutofillBackfill, AutofillChange, AutofillSetting, Member, MemberStatusChange


class MemberStatusChangeInline(admin.TabularInline):
    model = MemberStatusChange
    extra = 0
    can_delete = False
    readonly_fields = ("at", "old", "new", "reason", "by")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Member)
class MemberAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "display_name",
        "email",
        "phone",
        "external_id",
        "pass_id",
        "template",
        "status",
        "source",
        "created_at",
    )
    list_filter = ("status", "source")
    # Exact lookups only ("=" prefix): they use the indexes; a LIKE over a million rows would not.
    search_fields = ("=email", "=phone", "=external_id", "=pass_id")
    list_select_related = ("template",)
    show_full_result_count = False
    inlines = [MemberStatusChangeInline]


@admin.register(AutofillSetting)
class AutofillSettingAdmin(ReadOnlyAdmin):
    list_display = ("template", "source", "field_identifier", "updated_by", "updated_at")
    list_filter = ("source",)


@admin.register(MemberStatusChange)
class MemberStatusChangeAdmin(ReadOnlyAdmin):
    list_display = ("member", "at", "old", "new", "reason", "by")
    list_select_related = ("member",)
    show_full_result_count = False


@admin.register(AutofillChange)
class AutofillChangeAdmin(ReadOnlyAdmin):
    list_display = ("template", "changed_at", "changed_by", "changed_via", "old_source", "new_source")


@admin.register(AutofillBackfill)
class AutofillBackfillAdmin(ReadOnlyAdmin):
    list_display = ("template", "status", "total", "filled", "conflicts", "queued_at", "finished_at")
