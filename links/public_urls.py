"""Public URLs of the holder's side: the claim page of a SmartPass link and the pass page. No login."""

from django.urls import path

from . import public_views

app_name = "holder"
urlpatterns = [
    path("p/<str:token>", public_views.claim, name="claim"),
    path("s/<str:code>", public_views.short_link, name="short_link"),
    path("pass/<str:key>", public_views.pass_page, name="pass"),
]
