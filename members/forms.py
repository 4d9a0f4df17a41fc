"""Forms for the member pages. They collect input; the services validate it against the template."""

from django import forms

from templates_sync.models import FORMAT_LABELS, PassTemplate

from . import selectors
from .models import AUTOFILL_FIELD_FORMATS, AutofillSource

# An input per input-field format, for the staff "Add member" form and the holder's claim form alike.
_WIDGETS = {
    "EMAIL": lambda: forms.EmailInput(attrs={"autocomplete": "email"}),
    "PHONE_NUMBER": lambda: forms.TextInput(attrs={"type": "tel", "autocomplete": "tel"}),
    "DATE": lambda: forms.DateInput(attrs={"type": "date"}),
    "NUMBER": lambda: forms.TextInput(attrs={"inputmode": "numeric"}),
    "KENNITALA": lambda: forms.TextInput(attrs={"inputmode": "numeric", "placeholder": "010130-2989"}),
    "URL": lambda: forms.URLInput(attrs={"placeholder": "https://"}),
}


def field_widget(field_format: str) -> forms.Widget:
    return _WIDGETS.get(field_format.upper(), forms.TextInput)()


class MemberAddForm(forms.Form):
    """One text input per template input field; formats are checked by members.validation in the service."""

    def __init__(self, *args, template: PassTemplate, **kwargs):
        super().__init__(*args, **kwargs)
        self.template = template
        for spec in selectors.template_field_specs(template=template):
            widget = field_widget(spec.format)
            # A plain CharField: the shared validation gives the same messages as links and claims.
            self.fields[f"field_{spec.identifier}"] = forms.CharField(
                label=spec.name,
                required=spec.is_mandatory,
                widget=widget,
                max_length=1000,
                help_text=spec.format.replace("_", " ").lower(),
            )
        setting = selectors.autofill_setting_for(template=template)
        help_text = "Optional; unique within this template."
        if setting.is_on:
            help_text += f" Leave empty to use the {setting.get_source_display().lower()} (autofill is on)."
        self.fields["external_id"] = forms.CharField(
            label="External ID", required=False, max_length=254, help_text=help_text
        )

    def values(self) -> dict[str, str]:
        return {
            name.removeprefix("field_"): value for name, value in self.cleaned_data.items() if name.startswith("field_")
        }

    def add_value_errors(self, errors: dict[str, str]) -> None:
        for identifier, message in errors.items():
            name = f"field_{identifier}"
            self.add_error(name if name in self.fields else None, message)


class MemberEditForm(MemberAddForm):
    """The add form, filled with the member's values. An External ID once set is shown, never editable."""

    def __init__(self, *args, member, **kwargs):
        initial = {f"field_{key}": value for key, value in (member.values or {}).items()}
        initial["external_id"] = member.external_id or ""
        super().__init__(*args, template=member.template, initial=initial, **kwargs)
        field = self.fields["external_id"]
        if member.external_id is not None:
            field.disabled = True
            field.help_text = "Set once, never changed (as in PassKit)."
        else:
            field.help_text = "Empty now: you may set it once; it cannot be changed afterwards."


class AutofillSettingForm(forms.Form):
    source = forms.ChoiceField(choices=AutofillSource.choices, widget=forms.RadioSelect, label="Auto fill External ID")
    field_identifier = forms.ChoiceField(required=False, label="Input field it reads")
    already_enrolled_message_is = forms.CharField(
        required=False,
        label="Message for a holder who is already enrolled, in Icelandic",
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2, "lang": "is"}),
        help_text="Optional. Shown above the pass when a holder who already has it claims it again, on an "
        "Icelandic page; the English message when this is empty.",
    )
    already_enrolled_message = forms.CharField(
        required=False,
        label="… in English",
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2, "lang": "en"}),
        help_text="Shown on an English page; the Icelandic message when this is empty.",
    )
    contact_help = forms.CharField(
        required=False,
        label="How a holder reaches you",
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Optional. Shown to a holder whose pass was cancelled, and to one who typed an address that "
        "already has a pass when the pass cannot be sent to them (no email on file, and text messages are not set "
        "up): a phone number, an email address or opening hours. Empty: the portal's standard text, set for every "
        "template by whoever runs it.",
    )

    def __init__(self, *args, template: PassTemplate, **kwargs):
        super().__init__(*args, **kwargs)
        self.template = template
        choices = [("", "(chosen for you when the template has only one)")]
        self.unavailable: dict[str, str] = {}
        for source, fmt in AUTOFILL_FIELD_FORMATS.items():
            fields = selectors.autofill_candidate_fields(template=template, source=source)
            kind = FORMAT_LABELS[fmt].lower()
            # A field by its label, as staff see it on the pass; its identifier only to tell apart two of one label.
            labels = [f.label or f.identifier for f in fields]
            choices += [
                (f.identifier, label if labels.count(label) == 1 else f"{label} ({f.identifier})")
                for f, label in zip(fields, labels, strict=True)
            ]
            if not fields:
                self.unavailable[source] = f"This template has no {kind} input field, so it cannot use this source."
        self.fields["field_identifier"].choices = choices
