"""History in the admin is for reading: no add, change or delete for anyone, superusers included."""

from django.contrib import admin

from .models import AuthEvent, StaffAction


class AppendOnlyAdmin(admin.ModelAdmin):
    """For every history model of every app (sync runs, link batch events, member history, audit records)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuthEvent)
class AuthEventAdmin(AppendOnlyAdmin):
    list_display = ["at", "kind", "username", "typed_fingerprint", "ip_address", "user_agent", "detail"]
    list_filter = ["kind"]
    search_fields = ["=username", "=ip_address", "=typed_fingerprint"]
    date_hierarchy = "at"


@admin.register(StaffAction)
class StaffActionAdmin(AppendOnlyAdmin):
    list_display = ["at", "actor_name", "action", "object_type", "object_id", "object_repr", "ip_address"]
    list_filter = ["action"]
    search_fields = ["=actor_name", "=object_id", "action"]
    date_hierarchy = "at"
