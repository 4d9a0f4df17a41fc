from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat

from . import selectors
from .csv_files import ENCODINGS
from .models import LinkBatch

DELIMITER_CHOICES = [("", "Detect automatically"), (",", "Comma ( , )"), (";", "Semicolon ( ; )"), ("\t", "Tab")]
ENCODING_CHOICES = [("", "Detect automatically")] + list(ENCODINGS.items())


class UploadForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.txt,text/csv"}),
        error_messages={"required": "Choose a CSV file to upload.", "empty": "The file is empty."},
    )
    delimiter = forms.ChoiceField(label="Delimiter", choices=DELIMITER_CHOICES, required=False)
    encoding = forms.ChoiceField(
        label="Encoding",
        choices=ENCODING_CHOICES,
        required=False,
        help_text="Detected from the file (Excel for Mac and old DOS files included); the next page shows the "
        "first rows as read, and lets you choose again.",
    )
    passkit_format = forms.BooleanField(
        label="PassKit-compatible result file",
        required=False,
        help_text="The link column is called smartUrl (as PassKit's generator names it), an error column only "
        "when some row has one, LF line ends, no BOM: for mail merges written for PassKit.",
    )
    single_use = forms.BooleanField(
        label="One pass per row",
        required=False,
        help_text="The first claim of a row's link issues its pass; every later claim of that link shows the same "
        "pass. For campaigns without an email or phone to recognise the holder by.",
    )
    short_links = forms.BooleanField(
        label="Short links",
        required=False,
        help_text="Links like https://example.is/s/Ab3dE6gH9jK (about 40 characters) instead of ~190: one SMS "
        "holds a greeting and the link. They open exactly what the long links open.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text = (
            f"Any encoding below, a header row (Excel's sep= line first is fine), one row per pass holder. "
            f"At most {filesizeformat(settings.LINKS_MAX_UPLOAD_BYTES)}, {settings.LINKS_MAX_ROWS:,} rows and "
            f"{settings.LINKS_MAX_COLUMNS:,} columns."
        )


class MappingForm(forms.Form):
    """One choice per column of the upload: which input field (or the External ID) it fills, if any."""

    def __init__(self, *args, batch: LinkBatch, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch = batch
        choices = [("", "— not in the links —")] + selectors.mapping_targets(template=batch.template)
        for index, column in enumerate(batch.header):
            self.fields[f"col_{index}"] = forms.ChoiceField(
                label=column, choices=choices, required=False, initial=batch.mapping.get(column, "")
            )
        self.fields["strict"] = forms.BooleanField(
            label="Strict: no link for a row with an invalid optional value",
            help_text="Without it, such a row gets its link without that value, and a warning naming the field "
            "and the value. Mandatory values are always checked strictly.",
            required=False,
            initial=batch.strict,
        )

    def current_mapping(self) -> dict[str, str]:
        """Column → target as the page shows it: what was posted, else the saved mapping."""
        if not self.is_bound:
            return dict(self.batch.mapping)
        return {column: self[f"col_{index}"].value() or "" for index, column in enumerate(self.batch.header)}

    def columns(self):
        """(column name, bound field) pairs for the template's table."""
        return [(column, self[f"col_{index}"]) for index, column in enumerate(self.batch.header)]

    def clean(self):
        cleaned = super().clean()
        mapping = {column: cleaned.get(f"col_{index}") or "" for index, column in enumerate(self.batch.header)}
        mapping = {column: target for column, target in mapping.items() if target}
        problems = selectors.link_mapping_problems(
            template=self.batch.template, header=self.batch.header, mapping=mapping
        )
        if problems:
            raise forms.ValidationError(problems)
        cleaned["mapping"] = mapping
        return cleaned


class EncodingForm(forms.Form):
    """Read an upload again in another encoding, before its columns are confirmed."""

    encoding = forms.ChoiceField(
        label="Read the file as", choices=[(key, name) for key, name in ENCODINGS.items() if key != "utf-16"]
    )
