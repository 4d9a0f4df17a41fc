"""The three staff roles, as Django groups: viewers read everything, managers also act, admins also manage staff.

Views ask for permissions (`view_*`, and the custom action permissions of each app), never for group
names, so a role is exactly the permissions granted here.
"""

from django.contrib.auth.models import Group, Permission

VIEWER = "viewer"
MANAGER = "manager"
ADMIN = "admin"
ROLES = (VIEWER, MANAGER, ADMIN)
PORTAL_APPS = ("templates_sync", "members", "links", "delivery")
# What makes an admin more than a manager: the staff pages, and reading the audit records (sign-in events name
# accounts and addresses: for the people who manage accounts, not for every campaign manager).
ADMIN_PERMISSIONS = ("portal.manage_staff", "audit.view_authevent", "audit.view_staffaction")


def sync_role_permissions(sender=None, **kwargs) -> None:
    """Grant viewers every view permission of the portal's apps, managers every permission of them, and admins
    a manager's permissions plus ADMIN_PERMISSIONS. Nobody is granted a change or delete of audit records."""
    portal_permissions = Permission.objects.filter(content_type__app_label__in=PORTAL_APPS)
    viewer, _ = Group.objects.get_or_create(name=VIEWER)
    manager, _ = Group.objects.get_or_create(name=MANAGER)
    admin, _ = Group.objects.get_or_create(name=ADMIN)
    viewer.permissions.set(portal_permissions.filter(codename__startswith="view_"))
    manager.permissions.set(portal_permissions)
    admin_only = [
        permission
        for label in ADMIN_PERMISSIONS
        for permission in Permission.objects.filter(
            content_type__app_label=label.split(".")[0], codename=label.split(".")[1]
        )
    ]
    admin.permissions.set([*portal_permissions, *admin_only])
