"""Reading one row by a unique key, on the hot paths of a claim."""

from __future__ import annotations

from django.db.models import Model, QuerySet


def row_or_none(rows: QuerySet) -> Model | None:
    """The row of a lookup by a unique key, or None. What `first()` does, without the ORDER BY it adds: there is
    at most one row to sort, and compiling the ordering (the model's, or the primary key) is about a quarter of
    the query's CPU, which a surge of claims pays on every request."""
    return next(iter(rows.order_by()[:1]), None)
