"""A template with its autofill setting, as a claim reads it on every request: from a copy this process keeps,
checked against the database each time by the versions of the two rows.

Why: building the ORM's SELECT of a template (36 columns with the setting's) costs ~0.6–0.9 ms of CPU, more
than anything else a claim page does, and a surge of holders reads the same few templates hundreds of times a
second. A check of the two rows' versions is one short statement (~0.08 ms). What the check compares is
PostgreSQL's own identity of the row version, `(xmin, ctid)`: every UPDATE, however it is made (the sync's
bulk writes, staff's setting form, a migration), writes a new version with a new ctid, and within one
transaction the ctid alone tells two versions apart; across transactions xmin does. So a copy is used only
while its rows are exactly the ones the database holds now, with nothing to invalidate by hand. (On SQLite,
the embedded default, every read goes to the database: there is no surge there to serve.)

Each caller gets its own shallow copies, so no attribute one request sets reaches another; the JSON values
inside (`raw`) are shared, to be read and never changed in place (no code does).
"""

from __future__ import annotations

import copy
import threading
import uuid

from django.db import connection
from django.db.models.expressions import RawSQL

from templates_sync.models import PassTemplate

from .models import AutofillSetting
from .rows import row_or_none

# Templates kept per process. A campaign claims a handful; past this many the copies are dropped and read again.
TEMPLATES_KEPT = 256


def _version_sql(table: str) -> str:
    """A row's version as text ('' for no row, as a LEFT JOIN leaves a missing setting)."""
    return f"coalesce({table}.xmin::text || ':' || {table}.ctid::text, '')"


_TEMPLATES, _SETTINGS = PassTemplate._meta.db_table, AutofillSetting._meta.db_table
_VERSIONS_SQL = (
    f"SELECT {_version_sql(_TEMPLATES)}, {_version_sql(_SETTINGS)} FROM {_TEMPLATES}"
    f" LEFT JOIN {_SETTINGS} ON {_SETTINGS}.template_id = {_TEMPLATES}.id WHERE {_TEMPLATES}.id = %s"
)


class _Kept:
    """The copies this process keeps: template id → ((template version, setting version), template with its
    setting)."""

    def __init__(self):
        self.rows: dict[uuid.UUID, tuple[tuple[str, str], PassTemplate]] = {}
        self.lock = threading.Lock()


_kept = _Kept()


def template_and_saved_setting(*, template_id) -> tuple[PassTemplate, AutofillSetting | None] | None:
    """The template and its saved autofill setting (None when none was ever saved), or None when the template
    is not in the mirror. Both are as the database holds them at this call."""
    template_id = template_id if isinstance(template_id, uuid.UUID) else uuid.UUID(str(template_id))
    if connection.vendor != "postgresql":
        found = _read(template_id, versioned=False)
        return None if found is None else (found[1], _saved_setting(found[1]))
    with connection.cursor() as cursor:
        cursor.execute(_VERSIONS_SQL, [template_id])
        versions = cursor.fetchone()
    if versions is None:
        return None
    kept = _kept.rows.get(template_id)
    if kept is None or kept[0] != tuple(versions):
        kept = _read(template_id, versioned=True)
        if kept is None:  # deleted since the check
            return None
        with _kept.lock:
            if len(_kept.rows) >= TEMPLATES_KEPT:
                _kept.rows.clear()
            _kept.rows[template_id] = kept
    template = copy.copy(kept[1])
    setting = _saved_setting(kept[1])
    if setting is not None:
        setting = copy.copy(setting)
        setting.template = template
        # The copy's own setting, not the kept one, for a caller that reads `template.autofill_setting`.
        PassTemplate.autofill_setting.related.set_cached_value(template, setting)
    return template, setting


def _read(template_id: uuid.UUID, *, versioned: bool) -> tuple[tuple[str, str], PassTemplate] | None:
    """The template with its setting (select_related) and, when `versioned`, the two rows' versions read by
    the same statement, so from the same snapshot."""
    rows = PassTemplate.objects.select_related("autofill_setting").filter(pk=template_id)
    if versioned:
        rows = rows.annotate(
            template_version=RawSQL(_version_sql(_TEMPLATES), ()),
            setting_version=RawSQL(_version_sql(_SETTINGS), ()),
        )
    template = row_or_none(rows)
    if template is None:
        return None
    versions = (template.template_version, template.setting_version) if versioned else ("", "")
    return versions, template


def _saved_setting(template: PassTemplate) -> AutofillSetting | None:
    try:
        return template.autofill_setting
    except AutofillSetting.DoesNotExist:
        return None


def forget_all() -> None:
    """Drop every kept copy (a test that compares reads with and without them)."""
    with _kept.lock:
        _kept.rows.clear()
