from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "SmartPass Portal"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  registers the start-up checks
            receivers,
        )
        from .roles import sync_role_permissions

        # Permissions appear as apps gain models; keep the two roles' grants current after every migrate.
        post_migrate.connect(sync_role_permissions, dispatch_uid="portal.sync_role_permissions")
        receivers.connect()
