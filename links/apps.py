from django.apps import AppConfig


class LinksConfig(AppConfig):
    name = "links"
    verbose_name = "SmartPass links"

    def ready(self) -> None:
        from . import checks  # noqa: F401  registers the link key check
