from django.apps import AppConfig


class TemplatesSyncConfig(AppConfig):
    name = "templates_sync"
    verbose_name = "Pass templates"
