"""The claim form: the mandatory MEMBER fields a link lacks, plus the form's one-time nonce.

Values are checked by members.validation, the same rules as the CSV upload and staff's "Add member", but
the holder reads the messages in their own language: validation's sentences are English for staff, so
this module words its own, translated, from what failed.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from members.forms import field_widget
from members.identity import or_list
from members.validation import MAX_LENGTH, FieldSpec, TemplateRules, validate_field

from .claims import is_claim_nonce


class ClaimForm(forms.Form):
    nonce = forms.CharField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args, asked: list[FieldSpec], rules: TemplateRules, **kwargs):
        super().__init__(*args, **kwargs)
        self.rules = rules
        # Field names by position, not identifier: identifiers come from SmartPages and may hold dots or
        # spaces; the holder never sees the name.
        self.specs: dict[str, FieldSpec] = {}
        for position, spec in enumerate(asked):
            name = f"field_{position}"
            self.specs[name] = spec
            widget = field_widget(spec.format)
            hint = field_hint(spec=spec, rules=rules)
            if hint:
                widget.attrs["aria-describedby"] = f"id_{name}_hint"
            self.fields[name] = forms.CharField(
                label=spec.name, required=False, max_length=MAX_LENGTH + 1, widget=widget, help_text=hint
            )
            self.fields[name].widget.attrs.setdefault("required", "required")

    def clean_nonce(self) -> str:
        nonce = self.cleaned_data.get("nonce") or ""
        if not is_claim_nonce(nonce):
            # A form without its nonce was not the one this page rendered (or was scripted): refuse it rather
            # than issue a pass that a second post could duplicate.
            raise forms.ValidationError(_("This form has expired. Please press the button again."))
        return nonce

    def clean(self):
        cleaned = super().clean()
        for name, spec in self.specs.items():
            raw = self.data.get(self.add_prefix(name), "")
            result = validate_field(spec, raw, rules=self.rules, region=settings.PHONE_DEFAULT_REGION)
            if result.error:
                self.add_error(name, holder_message(spec=spec, raw=str(raw or ""), rules=self.rules))
            else:
                cleaned[name] = result.value
        return cleaned

    def answers(self) -> dict[str, str]:
        """The holder's values by input-field identifier (valid form only)."""
        return {spec.identifier: self.cleaned_data.get(name, "") for name, spec in self.specs.items()}

    def add_claim_errors(self, errors: dict[str, str], *, taken: frozenset[str] = frozenset()) -> None:
        """Errors the claim service found in the holder's answers (worded here, in the holder's language);
        `taken`: answers that are valid but already another pass's value of a unique field."""
        by_identifier = {spec.identifier: name for name, spec in self.specs.items()}
        for identifier in errors:
            name = by_identifier.get(identifier)
            if name is None:
                continue
            if identifier in taken:
                self.add_error(name, _("Another pass of this card already has this value."))
            else:
                spec = self.specs[name]
                self.add_error(name, holder_message(spec=spec, raw=str(self.data.get(name, "")), rules=self.rules))


def _allowed_domains(rules: TemplateRules) -> list[str]:
    return [d.strip().lstrip("@").lower() for d in rules.allowed_email_domains if d.strip()]


def field_hint(*, spec: FieldSpec, rules: TemplateRules) -> str:
    """What the holder should know before typing: a template's rule that a well-formed value can still fail
    (the email domains it takes, the age a kennitala must show), in the words of the error it would give."""
    field_format = spec.format.upper()
    if field_format == "EMAIL" and (domains := _allowed_domains(rules)):
        return _("Use an email address at %(domains)s.") % {"domains": or_list(domains, _("or"))}
    if field_format == "KENNITALA" and rules.kennitala_min_age:
        return _("You must be at least %(age)s years old to get this pass.") % {"age": rules.kennitala_min_age}
    return ""


def holder_message(*, spec: FieldSpec, raw: str, rules: TemplateRules) -> str:
    """A translated sentence saying what is wrong with `raw` for `spec` (which failed validation)."""
    text = raw.strip()
    if not text:
        return _("Please fill in this field.")
    if len(text) > MAX_LENGTH:
        return _("This is too long.")
    field_format = spec.format.upper()
    region = settings.PHONE_DEFAULT_REGION
    if field_format == "EMAIL":
        if _allowed_domains(rules) and not validate_field(spec, text, region=region).error:
            return field_hint(spec=spec, rules=rules)
        return _("Enter a valid email address, e.g. name@example.com.")
    if field_format == "KENNITALA":
        if rules.kennitala_min_age and not validate_field(spec, text, region=region).error:
            digits = "".join(ch for ch in text if ch.isdigit())
            if digits[:2].isdigit() and int(digits[:2]) > 40:
                return _("Enter a person's kennitala, not a company's.")
            return field_hint(spec=spec, rules=rules)
        return _("Enter a valid kennitala: 10 digits, e.g. 010130-2989.")
    return str(_FORMAT_MESSAGES.get(field_format, _FORMAT_MESSAGES["TEXT"]))


_FORMAT_MESSAGES = {
    "PHONE_NUMBER": gettext_lazy(
        "Enter a valid phone number. Add the country code (e.g. +44) for a number from abroad."
    ),
    "DATE": gettext_lazy("Enter a date as yyyy-mm-dd or dd.mm.yyyy."),
    "NUMBER": gettext_lazy("Enter a whole number, without spaces or separators."),
    "URL": gettext_lazy("Enter a web address that starts with https://."),
    "TEXT": gettext_lazy("This value cannot be used. Please check it."),
}
