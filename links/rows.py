"""One row of a campaign CSV: check its values against the template, and make its link.

Pure per-row logic, apart from the batch orchestration in links.services (reading, chunks, duplicates,
files, progress): RowRules reads what every row needs from the template once, then `check` and `link`
run once per row.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from hashlib import blake2b
from itertools import chain
from operator import itemgetter

from django.conf import settings

from members.identity import InvalidIdentity, external_id_for
from members.models import AUTOFILL_FIELD_FORMATS
from members.selectors import (
    autofill_field_identifier,
    autofill_setting_for,
    explicit_external_id,
    template_field_specs,
    template_rules,
    unique_value_clashes_many,
)
from members.validation import MAX_LENGTH, ValuesValidator

from . import passkit
from .csv_files import is_empty
from .keyring import link_keys
from .models import EXTERNAL_ID_TARGET, LinkBatch
from .tokens import LinkEncoder


class Row:
    """One checked row. A plain class rather than a dataclass: one is made per CSV row, and the generated
    __init__ with a default factory costs about a microsecond."""

    __slots__ = ("number", "cells", "error", "notes", "fields", "explicit_external_id", "external_id", "digest")

    def __init__(self, number: int, cells: list[str]) -> None:
        self.number = number
        self.cells = cells
        self.error = ""
        self.notes: list[str] = []
        self.fields: dict[str, str] | None = None
        self.explicit_external_id: str | None = None
        self.external_id: str | None = None  # explicit or derived by autofill: what makes two rows the same holder
        self.digest = ""


_AUTOFILL_VALUE_KINDS = {"email": "email address", "phone": "phone number"}


def _no_autofill_value_note(specs, *, field: str | None, source: str, single_use: bool) -> str:
    """The warning for a row whose link cannot recognise its holder: the row leaves empty the field autofill reads,
    and the claim page will not ask for it. Empty when every link can (autofill off: the batch page says so once;
    one pass per row; a required value the holder enters, which the claim page asks for)."""
    spec = next((spec for spec in specs if spec.identifier == field), None)
    if spec is None or single_use or spec.asked_of_holder:
        return ""
    return (
        f"Warning: no {_AUTOFILL_VALUE_KINDS[source]} in “{spec.name}”, which autofill reads to recognise the "
        "holder: each time this link is opened and claimed, it makes another pass."
    )


class RowRules:
    """Everything about the template that every row needs, read once per batch rather than once per row."""

    def __init__(self, batch: LinkBatch) -> None:
        template = batch.template
        self.template = template
        specs = template_field_specs(template=template)
        rules = template_rules(template=template)
        self.validator = ValuesValidator(
            specs, rules=rules, region=settings.PHONE_DEFAULT_REGION, today=date.today(), require_types={"ISSUER"}
        )
        self.region = settings.PHONE_DEFAULT_REGION
        # What members.selectors.external_id_for_values does for one holder, resolved once here: it would
        # cost two queries per row.
        self.autofill_setting = autofill_setting_for(template=template)
        self.autofill_source = self.autofill_setting.source
        self.autofill_field = autofill_field_identifier(setting=self.autofill_setting)
        # Fields whose bad value costs the row only that value (the link leaves it out, with a warning):
        # optional ones, unless the upload is strict. Never the field autofill reads (a row without its
        # External ID could enrol the same holder twice), nor one under a template rule (allowed email
        # domains, minimum age): leaving out the value would give a link to a row the rule refuses.
        forgivable = (
            spec.identifier
            for spec in specs
            if not spec.is_mandatory and not rules.applies_to(spec) and spec.identifier != self.autofill_field
        )
        # A pass date that is not a date costs the row that date, as an optional field's value would.
        forgivable = chain(forgivable, passkit.PASS_DATE_KEYS)
        self.forgiven = frozenset() if batch.strict else frozenset(forgivable)
        self.no_autofill_value_note = _no_autofill_value_note(
            specs, field=self.autofill_field, source=self.autofill_source, single_use=batch.single_use
        )
        header = batch.header
        self.width = len(header)
        self.field_columns: list[tuple[int, str]] = []
        self.external_id_column: int | None = None
        # PassKit's other columns (links.passkit), read only when mapped: a row of a file without them costs
        # nothing more.
        self.person_external_id_column: int | None = None
        self.date_columns: list[tuple[int, str, str]] = []  # (index, column, target)
        self.back_columns: list[tuple[int, str]] = []  # (index, the token key: "@back:" + label)
        parts: dict[str, list[tuple[int, int]]] = {}  # field → [(part's order, column index)]
        for index, column in enumerate(header):
            target = batch.mapping.get(column)
            if not target:
                continue
            if target == EXTERNAL_ID_TARGET:
                self.external_id_column = index
            elif target == passkit.PERSON_EXTERNAL_ID_TARGET:
                self.person_external_id_column = index
            elif target in passkit.PASS_DATE_KEYS:
                self.date_columns.append((index, column, target))
            elif target == passkit.BACK_FIELD_TARGET:
                self.back_columns.append((index, passkit.BACK_FIELD_KEY + passkit.back_field_label(column)))
            elif part := passkit.name_part(target):
                parts.setdefault(part[1], []).append((passkit.NAME_PART_PREFIXES.index(part[0]), index))
            else:
                self.field_columns.append((index, target))
        # Each validated field's column (None: not mapped), so a row's values are picked in the validator's order.
        by_identifier = {identifier: index for index, identifier in self.field_columns}
        self.value_columns = [by_identifier.get(identifier) for identifier in self.validator.identifiers]
        # Fields made of name parts, for rows whose own column for the field is empty or absent:
        # (the field's place among the validator's values, the parts' columns in order).
        self.name_parts = [
            (position, [index for _, index in sorted(parts[identifier])])
            for position, identifier in enumerate(self.validator.identifiers)
            if identifier in parts
        ]
        self.has_pass_columns = bool(
            self.name_parts or self.date_columns or self.back_columns or self.person_external_id_column is not None
        )
        self.now = datetime.now(UTC)
        # The link's fields in the order of the columns; when that is the validator's order, they are taken
        # straight from its clean values.
        self.field_order = [identifier for _, identifier in self.field_columns]
        self.field_order += [identifier for identifier in parts if identifier not in by_identifier]
        self.fields_in_clean_order = self.field_order == self.validator.identifiers
        # The duplicate key of a row with a value in every field, as a format: the names sorted, values between.
        self.sorted_fields = sorted(set(self.field_order) & set(self.validator.identifiers))
        self.full_key = "v" + "".join(
            "\x00" + identifier.replace("{", "{{").replace("}", "}}") + "\x00{}" for identifier in self.sorted_fields
        )
        # check_many's fast path: every field mapped, each with a fast check, no External ID column, and
        # autofill (if on) reading a field of its own format — whose clean value is then the External ID
        # external_id_for would derive (normalising a normalised address or number gives it back); otherwise
        # it checks row by row.
        validator = self.validator
        formats = {spec.identifier: spec.format.upper() for spec, _, _ in validator.fields}
        self.autofill_position: int | None = None
        if self.autofill_field is not None and formats.get(self.autofill_field) == AUTOFILL_FIELD_FORMATS.get(
            self.autofill_source
        ):
            self.autofill_position = validator.identifiers.index(self.autofill_field)
        self.fast_fields = (
            self.fields_in_clean_order
            and None not in self.value_columns
            and None not in validator.fast
            and self.external_id_column is None
            and not self.has_pass_columns
            and (self.autofill_field is None or self.autofill_position is not None)
        )
        self.encoder = LinkEncoder(
            link_keys(), template_id=uuid.UUID(str(template.pk)), batch_id=batch.pk, single_use=batch.single_use
        )
        self.base_url = settings.PUBLIC_BASE_URL.rstrip("/") + "/p/"

    def check(self, number: int, cells: list[str]) -> Row:
        row = Row(number, cells)
        if len(cells) > self.width:
            # smartpass_link and error sit right after the header's columns, so the extra values cannot get
            # columns of their own: they go into the error, whole, so that nothing the file held is lost.
            extra = cells[self.width :]
            row.cells = cells[: self.width]
            many = f"{len(extra)} more cells" if len(extra) > 1 else "1 more cell"
            quoted = ", ".join(f"“{value}”" for value in extra)
            row.error = (
                f"This row has {many} than the header: {quoted}. "
                "Check it for a stray delimiter or a missing quotation mark."
            )
            return row
        values = [None if index is None else cells[index] for index in self.value_columns]
        for position, indexes in self.name_parts:
            if not (values[position] or "").strip():
                values[position] = " ".join(part for index in indexes if (part := cells[index].strip()))
        clean, errors, warnings = self.validator.validate_in_order(values)
        if self.fields_in_clean_order:
            fields = {identifier: value for identifier, value in clean.items() if value}
        else:
            fields = {identifier: clean[identifier] for identifier in self.field_order if clean.get(identifier)}
        # A row with a value in a field is not empty; only one without is looked at whole.
        if (errors or not fields) and is_empty(cells):
            row.error = "This row is empty."
            return row
        explicit = None
        if self.external_id_column is not None:
            try:
                explicit = explicit_external_id(
                    template=self.template,
                    raw=cells[self.external_id_column],
                    setting=self.autofill_setting,
                    issuer_ids=True,
                )
            except InvalidIdentity as exc:
                errors[EXTERNAL_ID_TARGET] = f"External ID: {exc}"
        pass_values: dict[str, str] = {}
        if self.has_pass_columns:
            explicit = self._pass_columns(cells, explicit, errors, warnings, pass_values)
        if errors:
            if not errors.keys() <= self.forgiven:
                row.error = " ".join(errors.values())  # every problem of the row, forgivable ones too
                return row
            row.notes.extend(f"Warning: {error} The link was made without it." for error in errors.values())
        if warnings:
            row.notes.extend(f"Warning: {warning}" for warning in warnings.values())
        row.fields = fields
        row.explicit_external_id = explicit
        external_id = explicit
        if external_id is None and self.autofill_field is not None:
            try:
                external_id = external_id_for(self.autofill_source, clean.get(self.autofill_field), region=self.region)
            except InvalidIdentity as exc:  # already validated as a field; kept for a field of another format
                row.error = f"External ID: {exc}"
                return row
        row.external_id = external_id
        if external_id is None and self.no_autofill_value_note:
            row.notes.append(self.no_autofill_value_note)
        # Two rows are the same holder when they share an External ID; without one, when every value matches.
        if external_id:
            key = "x\x00" + external_id
        elif len(fields) == len(self.sorted_fields):  # every field has a value: the key's layout is known
            key = self.full_key.format(*[fields[identifier] for identifier in self.sorted_fields])
        else:
            key = "v\x00" + "\x00".join(chain.from_iterable(sorted(fields.items())))
        row.digest = blake2b(key.encode("utf-8"), digest_size=16).hexdigest()
        if pass_values:  # after the key: two rows are the same holder whatever their pass dates and back fields
            fields.update(pass_values)
        return row

    def _pass_columns(
        self,
        cells: list[str],
        explicit: str | None,
        errors: dict[str, str],
        warnings: dict[str, str],
        pass_values: dict[str, str],
    ) -> str | None:
        """The row's PassKit columns besides input fields: person.externalId (when the program's External ID
        is empty), the pass's dates and back fields, into `pass_values` by token key. Returns the External ID."""
        if self.person_external_id_column is not None and EXTERNAL_ID_TARGET not in errors:
            try:
                person = explicit_external_id(
                    template=self.template,
                    raw=cells[self.person_external_id_column],
                    setting=self.autofill_setting,
                    issuer_ids=True,
                )
            except InvalidIdentity as exc:
                errors[EXTERNAL_ID_TARGET] = f"External ID: {exc}"
                person = None
            if explicit is None:
                explicit = person
            elif person is not None and person != explicit:
                warnings["@person_external_id"] = (
                    f"the program's External ID “{explicit}” and person.externalId “{person}” differ; "
                    f"the link uses “{explicit}”."
                )
        for index, column, target in self.date_columns:
            text = cells[index].strip()
            if not text:
                continue
            value, error, warning = passkit.pass_date_problem(
                column, text, end_of_day=target == passkit.EXPIRATION_TARGET, now=self.now
            )
            if error:
                errors[target] = error
                continue
            pass_values[target] = value
            if warning:
                warnings[target] = warning
        for index, key in self.back_columns:
            if value := cells[index].strip():
                pass_values[key] = value
        return explicit

    def check_many(self, items: list[tuple[int, list[str]]]) -> list[Row]:
        """check() for many rows, the same Rows: the values of each field are first put through the format's
        fast path a column at a time, and a row whose every value passed it skips validation. Any other row
        (a value the fast path is unsure of, a required value missing, too many cells) goes through check()."""
        if not self.fast_fields:
            return self._refuse_held_unique_values([self.check(number, cells) for number, cells in items])
        region, limit = self.region, MAX_LENGTH
        columns = []
        validator = self.validator
        for index, (_, _, required), fast, fast_column in zip(
            self.value_columns, validator.fields, validator.fast, validator.fast_column, strict=True
        ):
            texts = [cells[index].strip() for _, cells in items]  # read_chunk pads every row to the header's width
            if fast_column is not None and (values := fast_column(texts)) is not None:
                columns.append(values)
                continue
            # A blank optional value is "" as check() makes it; None sends the row to check().
            columns.append(
                [
                    fast(text, region) if text and len(text) <= limit else (None if text or required else "")
                    for text in texts
                ]
            )
        identifiers, width = self.validator.identifiers, self.width
        full_key, check = self.full_key, self.check
        # The key's values in its sorted names' order, picked from the values (which are in the validator's order).
        key_positions = [identifiers.index(identifier) for identifier in self.sorted_fields]
        if len(key_positions) > 1:
            key_values = itemgetter(*key_positions)
        else:  # itemgetter of one position gives the value itself, not a tuple
            key_values = lambda values: tuple(values[position] for position in key_positions)  # noqa: E731

        autofill, no_autofill_value_note = self.autofill_position, self.no_autofill_value_note
        rows: list[Row] = []
        for (number, cells), values in zip(items, zip(*columns, strict=True), strict=True):
            if None in values or len(cells) > width:
                rows.append(check(number, cells))
                continue
            row = Row(number, cells)
            if "" not in values:  # a value in every field (the usual row): its key's layout is known
                row.fields = dict(zip(identifiers, values, strict=True))
                key = full_key.format(*key_values(values))
            else:
                fields = {identifier: value for identifier, value in zip(identifiers, values, strict=True) if value}
                if not fields:  # perhaps an empty row: check() says so
                    rows.append(check(number, cells))
                    continue
                row.fields = fields
                key = "v\x00" + "\x00".join(chain.from_iterable(sorted(fields.items())))
            if autofill is not None and values[autofill]:
                row.external_id = values[autofill]
                key = "x\x00" + row.external_id
            elif no_autofill_value_note:
                row.notes.append(no_autofill_value_note)
            row.digest = blake2b(key.encode("utf-8"), digest_size=16).hexdigest()
            rows.append(row)
        return self._refuse_held_unique_values(rows)

    def _refuse_held_unique_values(self, rows: list[Row]) -> list[Row]:
        """Rows whose value of a unique (isUnique) field another member already holds get no link (the rule
        lives in members.selectors)."""
        checked = [row for row in rows if not row.error]
        clashes = unique_value_clashes_many(
            template=self.template, rows=[(row.fields, row.external_id) for row in checked]
        )
        for position, message in clashes.items():
            checked[position].error = message
        return rows

    def link(self, row: Row) -> str:
        token = self.encoder.encode(row.fields or {}, row=row.number, external_id=row.explicit_external_id)
        return self.base_url + token
