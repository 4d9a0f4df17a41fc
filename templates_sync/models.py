"""The local mirror of the issuer's SmartPages pass templates and the record of each sync run."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from background.models import BackgroundRun


class JSONTextField(models.JSONField):
    """A JSONField kept as JSON text: PostgreSQL's `json` type, not `jsonb`.

    For a document read whole and never queried inside: PostgreSQL checks that it is JSON and stores the
    text, where jsonb would take the document apart into its binary form — two fifths of PostgreSQL's time
    in a first template sync (bench/sync.py). No lookup needs jsonb here (json has no `=` or `@>`).
    """

    def db_type(self, connection):
        return "json" if connection.vendor == "postgresql" else super().db_type(connection)

    def from_db_value(self, value, expression, connection):
        if connection.vendor == "postgresql":
            return value  # psycopg has parsed json already (jsonb Django reads as text and parses itself)
        return super().from_db_value(value, expression, connection)


# The longest input-field identifier the portal keeps: the columns that name a field (the autofill setting's,
# say) hold this many characters, as the mirror's did. A longer one is cut, and so names no field upstream.
IDENTIFIER_MAX_LENGTH = 200

FORMAT_LABELS = {
    "TEXT": "Text",
    "NUMBER": "Number",
    "DATE": "Date",
    "EMAIL": "Email",
    "URL": "Web address",
    "KENNITALA": "Kennitala",
    "PHONE_NUMBER": "Phone number",
}


@dataclass(frozen=True)
class InputField:
    """An input field of a template, as its API object lists it (`inputFields`)."""

    position: int  # in upstream order, from 0
    identifier: str
    label: str = ""
    description: str = ""
    format: str = ""  # TEXT, EMAIL, PHONE_NUMBER … (a format the portal does not know yet is kept)
    type: str = ""  # ISSUER or MEMBER
    is_mandatory: bool = False
    is_unique: bool = False

    def __str__(self) -> str:
        return self.label or self.identifier

    @property
    def format_label(self) -> str:
        """ "Phone number", not PHONE_NUMBER; a format the portal does not know yet, as SmartPages writes it."""
        return FORMAT_LABELS.get(self.format.upper(), self.format)


def _field_text(value) -> str:
    return "" if value is None else str(value)


def is_input_field(entry) -> bool:
    """Whether an entry of an API object's `inputFields` is a field at all: an object with an identifier."""
    return isinstance(entry, dict) and entry.get("identifier") is not None


def input_fields_of(raw) -> tuple[InputField, ...]:
    """The input fields of a template's API object, in upstream order, one per identifier (a repeat is ignored:
    identifiers name the values a pass holds; see IDENTIFIER_MAX_LENGTH). What is not a field at all is passed
    over; the sync refuses such a template anyway (see templates_sync.sync)."""
    entries = raw.get("inputFields") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        return ()
    fields, identifiers = [], set()
    for position, entry in enumerate(entries):
        if not is_input_field(entry):
            continue
        identifier = _field_text(entry["identifier"])[:IDENTIFIER_MAX_LENGTH]
        if identifier in identifiers:
            continue
        identifiers.add(identifier)
        fields.append(
            InputField(
                position=position,
                identifier=identifier,
                label=_field_text(entry.get("label")),
                description=_field_text(entry.get("description")),
                format=_field_text(entry.get("format")),
                type=_field_text(entry.get("type")),
                is_mandatory=bool(entry.get("isMandatory")),
                is_unique=bool(entry.get("isUnique")),
            )
        )
    return tuple(fields)


def allowed_email_domains_of(entries) -> list[str]:
    """`allowedEmailDomains` as a list of domain names, whatever its entries' shape (see
    PassTemplate.allowed_email_domains)."""
    if not isinstance(entries, list):
        return []
    ordered = []
    for position, entry in enumerate(entries):
        if isinstance(entry, dict):
            domain, order = entry.get("emailDomain"), entry.get("sortOrder")
        else:
            domain, order = entry, None
        if not isinstance(domain, str) or not domain.strip():
            continue
        sort_key = order if isinstance(order, int | float) and not isinstance(order, bool) else position
        ordered.append((sort_key, position, domain.strip()))
    return [domain for _order, _position, domain in sorted(ordered)]


class PassTemplate(models.Model):
    """One SmartPages pass template, as last read upstream.

    Typed columns hold what the portal shows and filters on; `raw` keeps the whole API object, so every
    documented field (and any the API adds later) is kept exactly. Never hard-deleted: members point here.
    """

    class Type(models.TextChoices):
        ID = "ID", "ID card"
        COUPON = "COUPON", "Coupon"
        MEMBER = "MEMBER", "Membership card"
        TICKET = "TICKET", "Ticket"
        PUNCH = "PUNCH", "Punch card"
        GIFT = "GIFT", "Gift card"
        MULTI_TICKET = "MULTI_TICKET", "Multi ticket"
        STORAGE = "STORAGE", "Storage card"
        APPOINTMENT_PASS = "APPOINTMENT_PASS", "Appointment pass"

    class Status(models.TextChoices):
        ACTIVE = "ACTIVE", "Active"
        VOIDED = "VOIDED", "Voided"

    id = models.UUIDField(primary_key=True)
    type = models.CharField(max_length=32)
    name = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=16)
    stamps = models.IntegerField(null=True, blank=True)
    pass_price = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    disable_issue = models.BooleanField(default=False)
    pos_distribution_only = models.BooleanField(default=False)
    lock_input_fields = models.BooleanField(default=False)
    deliver_by_kennitala = models.BooleanField(default=False)
    use_email_domain_verification = models.BooleanField(default=False)
    kennitala_age_verification = models.IntegerField(null=True, blank=True)
    has_dynamic_barcode = models.BooleanField(default=False)
    supports_google_wallet = models.BooleanField(default=False)
    delivery_page_url = models.URLField(max_length=1000, blank=True)
    when_last_update_sent = models.DateTimeField(null=True, blank=True)

    raw = JSONTextField()
    content_hash = models.CharField(max_length=64)
    first_seen_at = models.DateTimeField()
    changed_at = models.DateTimeField(help_text="When the upstream content last changed (or first arrived).")
    removed_at = models.DateTimeField(null=True, blank=True, help_text="Set when a clean sync no longer finds it.")

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["name"]), models.Index(fields=["status", "type"])]
        permissions = [("run_sync", "Can run a template sync or refresh a template")]

    def __str__(self) -> str:
        return self.display_name

    @property
    def short_id(self) -> str:
        """The first 8 characters of the id: enough to tell two templates of one name apart."""
        return str(self.id)[:8]

    @property
    def display_name(self) -> str:
        """The name, or a readable stand-in: never a bare UUID where a name is expected."""
        return self.name or f"Unnamed template {self.short_id}"

    @property
    def choice_label(self) -> str:
        """For lists to choose from, where two templates may share a name: "Name · 1a2b3c4d"."""
        return f"{self.display_name} · {self.short_id}" if self.name else self.display_name

    @property
    def type_label(self) -> str:
        """ "Appointment pass", not APPOINTMENT_PASS; a type the portal does not know yet, made readable."""
        if self.type in self.Type.values:
            return self.Type(self.type).label
        return self.type.replace("_", " ").capitalize()

    @property
    def is_removed(self) -> bool:
        return self.removed_at is not None

    @property
    def issue_refusal_reason(self) -> str:
        """Why passes cannot be issued from this template through the portal ('' when they can)."""
        if self.removed_at is not None:
            return "This template no longer exists on SmartPages."
        if self.status == self.Status.VOIDED:
            return "This template is voided on SmartPages."
        if self.status != self.Status.ACTIVE:
            # A status the API reference does not list (DRAFT, say): only ACTIVE templates are known to issue.
            return f"This template's status on SmartPages is “{self.status}”; only ACTIVE templates issue passes."
        if self.disable_issue:
            return "Issuing new passes is disabled for this template on SmartPages."
        if self.pos_distribution_only:
            return "This template is distributed at points of sale only."
        if self.pass_price:
            return "This template's passes are sold (price set on SmartPages); links cannot give them away."
        return ""

    @property
    def allowed_email_domains(self) -> list[str]:
        """The domains in their sort order, read from any shape upstream sends: the reference's objects
        ({sortOrder, emailDomain}), plain strings (["c.is"], seen in reality), and nulls or odd entries, which
        are passed over."""
        return allowed_email_domains_of(self.raw.get("allowedEmailDomains") if isinstance(self.raw, dict) else None)

    @property
    def locations(self) -> list[dict]:
        return list(self.raw.get("locations") or [])

    DEVICE_FLAGS = [
        ("isSharingProhibited", "Sharing prohibited"),
        ("isNFC", "NFC"),
        ("singleDeviceOnly", "Single device only"),
        ("firstDeviceOnly", "First device only"),
        ("oneDeviceAtATime", "One device at a time"),
        ("oncePerDevice", "Once per device"),
        ("onePassOfTemplateTypePerDevice", "One pass of this type per device"),
        ("posDistributionOnly", "Point-of-sale distribution only"),
        ("allowReward", "Rewards allowed"),
        ("hasDynamicBarcode", "Dynamic barcode"),
        ("lockInputFields", "Input fields locked"),
        ("disableIssue", "Issuing disabled"),
        ("deliverByKennitala", "Delivery by kennitala"),
        ("useEmailDomainVerification", "Email domain verification"),
        ("supportsGoogleWallet", "Google Wallet"),
    ]

    @property
    def input_fields(self) -> tuple[InputField, ...]:
        """Read from `raw` whenever asked: a template's fields are always read with it and rewritten with it, so
        they need no table of their own (a first sync wrote ~3 rows and index entries per template for them)."""
        return input_fields_of(self.raw)

    @property
    def flags(self) -> list[tuple[str, bool]]:
        return [(label, bool(self.raw.get(key))) for key, label in self.DEVICE_FLAGS]


class SyncRun(BackgroundRun):
    """One sync of the template mirror: a full run over every page, or a refresh of one template.

    A full run in status RUNNING is also the lock that keeps runs one at a time: a partial unique
    constraint lets only one such row exist, on SQLite (embedded mode) as on PostgreSQL. A running run whose
    heartbeat is older than RUN_STALE_SECONDS lost its worker and is taken over (marked failed,
    which releases the lock).
    """

    class Kind(models.TextChoices):
        FULL = "full", "Full sync"
        SINGLE = "single", "Single template"

    class Trigger(models.TextChoices):
        BEAT = "beat", "Schedule"
        MANUAL = "manual", "Sync now"
        COMMAND = "command", "Command"
        CLAIM = "claim", "Claim refused upstream"
        RECOVERY = "recovery", "Re-run after a stopped worker"
        RETRY = "retry", "Retry after SmartPages could not be reached"

    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.FULL)
    template_id = models.UUIDField(null=True, blank=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    triggered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    pages = models.PositiveIntegerField(default=0)
    total_pages = models.PositiveIntegerField(null=True, blank=True)
    total_items = models.PositiveIntegerField(null=True, blank=True)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    warning = models.TextField(blank=True)
    # A retry of a full sync that failed because SmartPages could not be reached waits in its row until then:
    # the recovery sweep sends it once due (no delayed message: docs/operations.md).
    not_before = models.DateTimeField(null=True, blank=True)

    class Meta(BackgroundRun.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(status="running", kind="full"),
                name="one_running_full_sync",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"

    @staticmethod
    def stale_before() -> datetime:
        """A running run whose last heartbeat is older than this lost its worker."""
        return timezone.now() - timedelta(seconds=settings.RUN_STALE_SECONDS)

    def as_json(self) -> dict:
        return {
            **super().as_json(),
            "kind": self.kind,
            "created_count": self.created_count,
            "updated_count": self.updated_count,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "pages": self.pages,
            "total_pages": self.total_pages,
            "warning": self.warning,
        }
