"""What the portal keeps about a staff account beyond Django's user: when its sessions were last ended."""

from django.conf import settings
from django.db import models


class StaffAccount(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_account")
    # Every session that logged in before this moment is over (password, role or account change; second factor
    # reset). Checked on every request by portal.middleware.StaffSessionLifetimeMiddleware, so it works for any
    # session backend without finding the sessions themselves.
    sessions_valid_from = models.DateTimeField(null=True, blank=True)

    class Meta:
        permissions = [("manage_staff", "Manage staff accounts: invite, role, disable, reset second factor")]

    def __str__(self) -> str:
        return f"staff account of {self.user}"
