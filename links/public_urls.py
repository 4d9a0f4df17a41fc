"""Public URLs of the holder's side (claim a SmartPass link, see the pass). Filled by the claim flow."""
from django.urls import path  # noqa: F401

urlpatterns: list = []
