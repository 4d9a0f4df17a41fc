"""The form of a batch's Send links page: channels, the columns with addresses, names and languages, a message
per language, the SMS length allowed, and the manager's own address for a test send."""

from __future__ import annotations

from django import forms

from .messages import DEFAULT_MAX_SEGMENTS, DEFAULT_MESSAGES, LANGUAGES, PLACEHOLDERS, LanguageMessage
from .models import LinkBatch
from .services.sending import CHANNEL_CHOICES, SendColumns, SendOptions, send_columns_guess

CHANNEL_LABELS = {
    "email": "Email (rows with an email address)",
    "sms": "SMS (rows with a phone number)",
    "email,sms": "Both: email, else SMS",
    "sms,email": "Both: SMS, else email",
}
PLACEHOLDER_HELP = "Placeholders: " + ", ".join("{" + name + "} " + what for name, what in PLACEHOLDERS.items()) + "."


class SendForm(forms.Form):
    channels = forms.ChoiceField(label="Send by", choices=[(key, CHANNEL_LABELS[key]) for key in CHANNEL_CHOICES])
    default_language = forms.ChoiceField(
        label="Language of rows without one", choices=list(LANGUAGES.items()), initial="is"
    )
    max_segments = forms.IntegerField(
        label="Longest SMS allowed (parts)",
        min_value=1,
        max_value=10,
        initial=DEFAULT_MAX_SEGMENTS,
        help_text=(
            "A long SMS is sent in parts, and each part costs as one SMS. A row whose SMS would need more parts is "
            "not sent; it is listed with the reason."
        ),
    )
    test_email = forms.EmailField(label="Your email address", required=False)
    test_phone = forms.CharField(label="Your mobile number", required=False, max_length=32)

    def __init__(self, *args, batch: LinkBatch, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch = batch
        guess = send_columns_guess(batch=batch)
        columns = [("", "— none —")] + [(column, column) for column in batch.header]
        for name, label, initial in (
            ("email_column", "Email address column", guess.email),
            ("phone_column", "Phone number column", guess.phone),
            ("name_column", "Name column ({name})", guess.name),
            ("language_column", "Language column (is / en)", guess.language),
        ):
            self.fields[name] = forms.ChoiceField(label=label, choices=columns, required=False, initial=initial)
        for language, language_name in LANGUAGES.items():
            default = DEFAULT_MESSAGES[language]
            self.fields[f"subject_{language}"] = forms.CharField(
                label=f"Email subject ({language_name})", initial=default.subject, max_length=200
            )
            self.fields[f"body_{language}"] = forms.CharField(
                label=f"Email text ({language_name})",
                initial=default.body,
                widget=forms.Textarea(attrs={"rows": 6}),
                help_text=PLACEHOLDER_HELP + " The HTML part is made from this text.",
                max_length=5000,
            )
            self.fields[f"sms_{language}"] = forms.CharField(
                label=f"SMS text ({language_name})",
                initial=default.sms,
                widget=forms.Textarea(attrs={"rows": 2}),
                help_text=PLACEHOLDER_HELP,
                max_length=1600,
            )
        if guess.email and guess.phone:
            self.fields["channels"].initial = "email,sms"
        else:
            self.fields["channels"].initial = "sms" if guess.phone else "email"
        if user is not None and getattr(user, "email", ""):
            self.fields["test_email"].initial = user.email

    AUDIENCE = (
        "channels",
        "email_column",
        "phone_column",
        "name_column",
        "language_column",
        "default_language",
        "max_segments",
    )

    def audience_fields(self):
        return [self[name] for name in self.AUDIENCE]

    def language_fields(self):
        """(language name, subject, body, SMS) bound fields, for the page's layout."""
        return [
            (name, self[f"subject_{code}"], self[f"body_{code}"], self[f"sms_{code}"])
            for code, name in LANGUAGES.items()
        ]

    def options(self) -> SendOptions:
        data = self.cleaned_data
        return SendOptions(
            channels=CHANNEL_CHOICES[data["channels"]],
            columns=SendColumns(
                email=data.get("email_column", ""),
                phone=data.get("phone_column", ""),
                name=data.get("name_column", ""),
                language=data.get("language_column", ""),
            ),
            default_language=data["default_language"],
            messages={
                code: LanguageMessage(
                    subject=data[f"subject_{code}"], body=data[f"body_{code}"], sms=data[f"sms_{code}"]
                )
                for code in LANGUAGES
            },
            max_segments=data["max_segments"],
        )
