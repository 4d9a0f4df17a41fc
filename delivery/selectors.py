"""Reads of the outbox, by subject key: what higher apps count and list (a batch's messages, a member's)."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from .models import Message, Suppression


def messages(key_prefix: str | None = None, subject_key: str | None = None, status: str | None = None) -> QuerySet:
    """Messages, newest first: those whose key starts with `key_prefix`, or have exactly `subject_key`."""
    rows = Message.objects.all()
    if key_prefix is not None:
        rows = rows.filter(subject_key__startswith=key_prefix)
    if subject_key is not None:
        rows = rows.filter(subject_key=subject_key)
    if status is not None:
        rows = rows.filter(status=status)
    return rows.order_by("-queued_at", "-pk")


def status_counts(key_prefix: str) -> dict[str, dict[str, int]]:
    """{channel: {status: n}} for every message whose key starts with `key_prefix`."""
    counts: dict[str, dict[str, int]] = {}
    rows = Message.objects.filter(subject_key__startswith=key_prefix).values("channel", "status")
    for row in rows.annotate(n=Count("pk")).order_by():
        counts.setdefault(row["channel"], {})[row["status"]] = row["n"]
    return counts


def queued_before(key_prefix: str) -> set[tuple[str, str]]:
    """(subject key, channel) of the messages under `key_prefix` that queueing again leaves as they are: every
    one but the skipped (services.queue_messages)."""
    rows = Message.objects.filter(subject_key__startswith=key_prefix).exclude(status=Message.SKIPPED)
    return set(rows.values_list("subject_key", "channel"))


def suppressions(channel: str | None = None, search: str = "") -> QuerySet:
    rows = Suppression.objects.all()
    if channel:
        rows = rows.filter(channel=channel)
    if search:
        rows = rows.filter(address__icontains=search.strip().lower())
    return rows.order_by("-created_at", "-pk")
