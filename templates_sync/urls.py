from django.urls import path

from . import views

app_name = "templates_sync"
urlpatterns = [
    path("", views.run_list, name="run_list"),
    path("now/", views.sync_now, name="sync_now"),
    path("template/<uuid:template_id>/refresh/", views.refresh, name="refresh"),
    path("runs/<int:run_id>/status.json", views.run_status, name="run_status"),
]
