from django.urls import path

from . import views

app_name = "audit"
urlpatterns = [
    path("sign-ins/", views.auth_event_list, name="auth_event_list"),
    path("actions/", views.staff_action_list, name="staff_action_list"),
]
