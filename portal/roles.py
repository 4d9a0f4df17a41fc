"""The two staff roles, as Django groups: viewers read everything, managers also act.

Views ask for permissions (`view_*`, and the custom action permissions of each app), never for group
names, so a role is exactly the permissions granted here.
"""

from django.contrib.auth.models import Group, Permission

VIEWER = "viewer"
MANAGER = "manager"
PORTAL_APPS = ("templates_sync", "members", "links")


def sync_role_permissions(sender=None, **kwargs) -> None:
    """Grant viewers every view permission of the portal's apps and managers every permission of them."""
    portal_permissions = Permission.objects.filter(content_type__app_label__in=PORTAL_APPS)
    viewer, _ = Group.objects.get_or_create(name=VIEWER)
    manager, _ = Group.objects.get_or_create(name=MANAGER)
    viewer.permissions.set(portal_permissions.filter(codename__startswith="view_"))
    manager.permissions.set(portal_permissions)
