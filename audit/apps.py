from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit records"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  records sign-in events from Django's and axes' signals
