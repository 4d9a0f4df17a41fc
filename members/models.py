"""The local mirror of members (passes issued through the portal) and the "Auto fill External ID" setting.

SmartPages has no way to look a pass up by its externalIdentifier, so this mirror is the only place that
can answer "does this holder already have a pass?". That is why `external_id` is unique per template in
the database itself, not only in code: two concurrent claims cannot both insert the same External ID.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper
from django.utils import timezone

from background.models import BackgroundRun
from templates_sync.models import IDENTIFIER_MAX_LENGTH, PassTemplate


class Member(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ISSUED = "issued", "Issued"
        FAILED = "failed", "Failed"
        VOIDED = "voided", "Voided"
        REDEEMED = "redeemed", "Redeemed"

    class Source(models.TextChoices):
        LINK = "link", "SmartPass link"
        MANUAL = "manual", "Added by staff"

    template = models.ForeignKey(PassTemplate, on_delete=models.PROTECT, related_name="members")
    pass_id = models.UUIDField("Pass ID", unique=True, null=True, blank=True)
    # NULL (never '') when there is none: NULLs never collide in the unique constraint below.
    external_id = models.CharField("External ID", max_length=254, null=True, blank=True)  # noqa: DJ001 - NULL on purpose, see above
    values = models.JSONField(default=dict, blank=True, help_text="Holder field values by input-field identifier.")
    # The pass's own values from the link (expirationDate, validFrom, backFields), sent with every create.
    pass_values = models.JSONField(default=dict, blank=True)
    # Normalised copies of what the values hold, for exact search without touching JSON.
    display_name = models.CharField(max_length=500, blank=True)
    email = models.CharField(max_length=254, blank=True)
    phone = models.CharField(max_length=32, blank=True)
    # Name and email folded for substring search (members.search_text): written by every service that writes
    # them, searched through GIN indexes on its anchors (queries with a separator) and its trigrams (one word).
    search_text = models.TextField(blank=True, default="", editable=False)
    source = models.CharField(max_length=16, choices=Source.choices)
    # A plain integer, not a foreign key: links imports members, never the reverse.
    source_batch_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    source_row = models.PositiveIntegerField(null=True, blank=True)
    # The one-time value of the public claim form that made this member: the same form posted twice
    # (double tap, back button) finds this member instead of issuing a second pass. Unique, so two
    # simultaneous posts of one form cannot both insert.
    claim_nonce = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    failure_reason = models.TextField(blank=True)
    # Set when SmartPages answered 409: it already holds a pass with this External ID on this template.
    upstream_conflict = models.BooleanField(default=False)
    upstream = models.JSONField(default=dict, blank=True, help_text="The last reply from SmartPages.")
    # When the refresh job last read this pass from SmartPages (NULL: never); the job reads the stalest first.
    refreshed_at = models.DateTimeField(null=True, blank=True)
    # A manager resolved an autofill conflict and left this member without the shared External ID on purpose:
    # the autofill preview no longer lists it.
    autofill_excluded = models.BooleanField(default=False)
    # Set with its Pass ID still unknown: SmartPages answered 409 for this member's own External ID after an
    # earlier attempt of ours that may have gone out (its reply lost), and the 409 did not name the pass. The
    # pass upstream is most likely this member's; a manager links it by its Pass ID (member detail page).
    pass_link_needed = models.BooleanField(default=False)
    # Attempts that may have reached SmartPages: counted (and saved) before each POST, so a crash after the
    # POST still leaves a member that says an attempt may have gone out.
    issue_attempts = models.PositiveSmallIntegerField(default=0)
    # When the current attempt's POST began; cleared when its outcome is written. Set on a pending member
    # long after that, it means the process making the attempt died.
    send_started_at = models.DateTimeField(null=True, blank=True)
    # When this pending member is due for its next attempt (with backoff), or the end of the current attempt's
    # time budget. The retry waits here, not in a delayed message: the recovery sweep sends it once due
    # (issuing.member_issue_retries_send_due), and tries one overdue by SWEEP_OVERDUE_AFTER itself (its sent
    # retry was lost: issuing.member_issue_retry_stale). Null once finished.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, help_text="The last transient upstream error while pending.")
    # When a holder's claim last showed (or made) this member's pass: the conflict table's "last claimed", which
    # tells staff which of a holder's passes is the one in use.
    last_claimed_at = models.DateTimeField(null=True, blank=True)
    # Set when an autofill conflict was resolved against this member: the holder's pass that replaced this one.
    # Its pass page, once voided, points there instead of ending at "cancelled".
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["template", "external_id"], name="member_external_id_unique_per_template"),
        ]
        indexes = [
            # The list's default order, and the same order within one template (the per-template list).
            models.Index(fields=["-created_at", "-id"], name="member_created_idx"),
            models.Index(fields=["template", "-created_at", "-id"], name="member_template_created_idx"),
            models.Index(fields=["status", "-created_at"], name="member_status_created_idx"),
            # The sweep of pending members whose retry is overdue.
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="member_pending_due_idx"),
            # Exact searches across templates (the unique constraint's index starts with template).
            models.Index(fields=["external_id"], name="member_external_id_idx"),
            models.Index(Upper("external_id"), name="member_external_id_upper_idx"),  # iexact search
            models.Index(fields=["email"], name="member_email_idx"),
            models.Index(fields=["phone"], name="member_phone_idx"),
            # The name order is Icelandic (members.collation): its index, in that collation, is migration 0012's.
            # Substring search on search_text (pg_trgm GIN, migration 0005; its anchors' GIN, migration 0007)
            # and the Pass ID prefix search (pass_id::text, text_pattern_ops, 0005): PostgreSQL only.
        ]
        permissions = [("manage_members", "Can add, edit, void and refresh members")]

    def __str__(self) -> str:
        return self.display_name or self.email or self.phone or self.external_id or f"Member #{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status != self.Status.PENDING

    @property
    def distribution_url(self) -> str:
        """The wallet/distribution page SmartPages gave for this pass, if any."""
        reply = self.upstream or {}
        for key in ("distributionUrl", "distributionURL", "url", "passUrl", "walletUrl"):
            value = reply.get(key)
            if isinstance(value, str) and value.startswith(("https://", "http://")):
                return value
        return ""


class MemberStatusChange(models.Model):
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="status_changes")
    old = models.CharField(max_length=16, blank=True)
    new = models.CharField(max_length=16)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.old or '—'} → {self.new}"


class MemberChange(models.Model):
    """A change of a member's values or External ID: edited by staff, or read from SmartPages by a refresh."""

    class Via(models.TextChoices):
        EDIT = "edit", "Edited by staff"
        REFRESH = "refresh", "Changed on SmartPages"
        AUTOFILL = "autofill", "Autofill conflict resolved"
        ADOPTED = "adopted", "Found by a claim with autofill on"

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="changes")
    via = models.CharField(max_length=16, choices=Via.choices)
    # {"identifier": [old, new], …}; the External ID under EXTERNAL_ID_KEY.
    changes = models.JSONField(default=dict)
    at = models.DateTimeField(auto_now_add=True)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    EXTERNAL_ID_KEY = "External ID"

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.get_via_display()}: {', '.join(self.changes)}"

    @property
    def rows(self) -> list[tuple[str, str, str]]:
        return [(name, str(old or ""), str(new or "")) for name, (old, new) in self.changes.items()]


class TemplateMemberCount(models.Model):
    """How many members a template has, kept by `member_issue` in the transaction that inserts the member, so
    the template list reads one row per template instead of counting a million members. The refresh job
    reconciles it with a real count (members.services.refresh.member_counts_reconcile)."""

    template = models.OneToOneField(
        PassTemplate, primary_key=True, on_delete=models.CASCADE, related_name="member_count_row"
    )
    members = models.PositiveBigIntegerField(default=0)
    reconciled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.template_id}: {self.members}"


class MemberRefreshRun(BackgroundRun):
    """One run of the refresh job: every issued member's pass read again from SmartPages, stalest first, in
    chunks (MemberRefreshChunk) spread over the workers. Recorded like a template sync: counts, errors, who or
    what started it. Its heartbeat is its chunks': the run shows life while any of them works.

    One run at a time: a run is created RUNNING, and a partial unique constraint lets only one such row exist
    (a second trigger is recorded as SKIPPED)."""

    class Trigger(models.TextChoices):
        BEAT = "beat", "Schedule"
        MANUAL = "manual", "Refresh now"
        COMMAND = "command", "Command"

    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    template_id = models.UUIDField(null=True, blank=True)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    total = models.PositiveIntegerField(default=0)
    checked = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    # The first few member errors, [{"member": id, "error": text}], for the history page.
    error_samples = models.JSONField(default=list, blank=True)

    class Meta(BackgroundRun.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="running"), name="one_running_member_refresh"
            ),
        ]

    def __str__(self) -> str:
        return f"Member refresh #{self.pk} ({self.status})"

    def as_json(self) -> dict:
        return {
            **super().as_json(),
            "total": self.total,
            "done": self.checked + self.errors,
            "checked": self.checked,
            "changed": self.changed,
            "errors": self.errors,
        }


class MemberRefreshChunk(models.Model):
    """Some members of a refresh run, read by one task; the run is done when all its chunks are.

    A row, not only a message, so that a chunk whose task was lost (the broker was away, its worker died) is
    found by the recovery sweep and sent again: a chunk queued while its run shows no life, or running without
    a heartbeat. Its counts join the run's once, when it is marked done."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"

    run = models.ForeignKey(MemberRefreshRun, on_delete=models.CASCADE, related_name="chunks")
    member_ids = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # Raised each time a worker takes the chunk: a worker's heartbeat and its final write hold only while the
    # chunk is still its attempt, so a worker the sweep gave up on cannot count the chunk a second time.
    attempt = models.PositiveIntegerField(default=0)
    queued_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="refresh_chunk_status_idx")]

    def __str__(self) -> str:
        return f"Refresh run {self.run_id}, chunk {self.pk} ({self.status})"


class BackgroundJob(BackgroundRun):
    """Work a Celery task does for a staff member (an autofill backfill, a bulk action): a run (status, times,
    heartbeat: see BackgroundRun) with its progress, so pages follow it without a result backend."""

    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta(BackgroundRun.Meta):
        abstract = True


class MemberBulkAction(BackgroundJob):
    """Void or refresh many members at once, run by a Celery task; each member's outcome is a row."""

    class Action(models.TextChoices):
        VOID = "void", "Void"
        REFRESH = "refresh", "Refresh from SmartPages"

    action = models.CharField(max_length=16, choices=Action.choices)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    # Raised each time a worker takes the action, and lowered again when a task hands it back after its slice
    # (RUN_SLICE_SECONDS), so the next take goes on under the same number: above 1, a worker died and the action
    # went on from the members still waiting. The heartbeat tells the recovery sweep the worker is alive.
    attempt = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.get_action_display()} #{self.pk} ({self.status})"

    def as_json(self) -> dict:
        return {
            "id": self.pk,
            "status": self.status,
            "finished": self.is_finished,
            "total": self.total,
            "done": self.done,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "attempt": self.attempt,
            "error": self.error,
        }


class MemberBulkOutcome(models.Model):
    """What a bulk action did to one member; written WAITING when the action is requested."""

    class Outcome(models.TextChoices):
        WAITING = "waiting", "Waiting"
        SUCCEEDED = "succeeded", "Done"
        SKIPPED = "skipped", "Skipped"
        FAILED = "failed", "Failed"

    action = models.ForeignKey(MemberBulkAction, on_delete=models.CASCADE, related_name="outcomes")
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="+")
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.WAITING)
    message = models.TextField(blank=True)
    # When this member's upstream write (a void) was sent. Set on a row still waiting, the worker died during
    # the call: the next attempt reads the pass before it writes again.
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["action", "outcome", "id"], name="bulk_outcome_action_idx")]

    def __str__(self) -> str:
        return f"{self.member_id}: {self.outcome}"


class AutofillSource(models.TextChoices):
    OFF = "off", "Off"
    EMAIL = "email", "Email address"
    PHONE = "phone", "Phone number"


# The input-field format each source reads.
AUTOFILL_FIELD_FORMATS = {AutofillSource.EMAIL: "EMAIL", AutofillSource.PHONE: "PHONE_NUMBER"}


class AutofillSetting(models.Model):
    """The "Auto fill External ID" setting of one template. Owned by the portal: the sync never touches it."""

    template = models.OneToOneField(PassTemplate, on_delete=models.PROTECT, related_name="autofill_setting")
    source = models.CharField(max_length=8, choices=AutofillSource.choices, default=AutofillSource.OFF)
    field_identifier = models.CharField(
        max_length=IDENTIFIER_MAX_LENGTH, blank=True, help_text="The input field the value is read from."
    )
    # Shown to a holder who already has a pass, in their page's language (the other one when that is empty).
    already_enrolled_message = models.TextField("Message (English)", blank=True)
    already_enrolled_message_is = models.TextField("Message (Icelandic)", blank=True)
    # How a holder reaches the issuer when their pass link cannot be sent to them (no SMS): shown on the
    # holder's page; the site's HOLDER_CONTACT_HELP when empty.
    contact_help = models.TextField("How to reach the issuer", blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        permissions = [("change_autofill", "Can change the Auto fill External ID setting and backfill")]

    def __str__(self) -> str:
        return f"{self.template}: {self.get_source_display()}"

    @property
    def is_on(self) -> bool:
        return self.source != AutofillSource.OFF

    def message_for(self, language: str | None) -> str:
        """The "already enrolled" message in `language` ("is" or "en"), else in the other one; '' when none."""
        icelandic = (language or "").lower().startswith("is")
        first, second = (
            (self.already_enrolled_message_is, self.already_enrolled_message)
            if icelandic
            else (self.already_enrolled_message, self.already_enrolled_message_is)
        )
        return first or second


class AutofillChange(models.Model):
    """One change of a template's autofill setting: who, when, old → new."""

    template = models.ForeignKey(PassTemplate, on_delete=models.PROTECT, related_name="autofill_changes")
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_via = models.CharField(max_length=16, default="page")  # page | command
    changed_at = models.DateTimeField(auto_now_add=True)
    old_source = models.CharField(max_length=8)
    new_source = models.CharField(max_length=8)
    old_field_identifier = models.CharField(max_length=IDENTIFIER_MAX_LENGTH, blank=True)
    new_field_identifier = models.CharField(max_length=IDENTIFIER_MAX_LENGTH, blank=True)
    old_message = models.TextField(blank=True)
    new_message = models.TextField(blank=True)
    old_message_is = models.TextField(blank=True)
    new_message_is = models.TextField(blank=True)

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.old_source} → {self.new_source}"

    @property
    def old_summary(self) -> str:
        return _summary(self.old_source, self.old_field_identifier)

    @property
    def new_summary(self) -> str:
        return _summary(self.new_source, self.new_field_identifier)

    @property
    def message_changed(self) -> bool:
        return self.old_message != self.new_message or self.old_message_is != self.new_message_is


def _summary(source: str, field_identifier: str) -> str:
    label = AutofillSource(source).label if source in AutofillSource.values else source
    return f"{label} ({field_identifier})" if source != AutofillSource.OFF and field_identifier else label


class ExternalIdConflict(models.Model):
    """An autofill conflict staff must settle: several members of a template whose autofill value gives one
    External ID. Opened by a claim that adopted one of them (the suggested keeper), by a backfill or by saving
    the setting; closed when a manager resolves it. A row, not only the preview's reading of every member, so
    the dashboard and the template page can count open conflicts cheaply."""

    template = models.ForeignKey(PassTemplate, on_delete=models.PROTECT, related_name="external_id_conflicts")
    external_id = models.CharField(max_length=254)
    opened_at = models.DateTimeField(auto_now_add=True)
    opened_via = models.CharField(max_length=16, default="claim")  # claim | backfill | setting
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kept = models.ForeignKey(Member, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["template", "external_id"],
                condition=Q(resolved_at__isnull=True),
                name="one_open_conflict_per_external_id",
            ),
        ]
        indexes = [
            models.Index(fields=["template"], condition=Q(resolved_at__isnull=True), name="open_conflict_template_idx")
        ]

    def __str__(self) -> str:
        return f"{self.external_id} ({'resolved' if self.resolved_at else 'open'})"


class AutofillBackfill(BackgroundJob):
    """One backfill of External IDs for a template's existing members; the row holds progress and counts."""

    template = models.ForeignKey(PassTemplate, on_delete=models.PROTECT, related_name="autofill_backfills")
    source = models.CharField(max_length=8, choices=AutofillSource.choices)
    field_identifier = models.CharField(max_length=IDENTIFIER_MAX_LENGTH, blank=True)
    filled = models.PositiveIntegerField(default=0)
    conflicts = models.PositiveIntegerField(default=0)
    invalid = models.PositiveIntegerField(default=0)
    empty = models.PositiveIntegerField(default=0)

    class Meta(BackgroundJob.Meta):
        constraints = [
            # One backfill at a time per template: two would race over the same members.
            models.UniqueConstraint(
                fields=["template"],
                condition=Q(status__in=["queued", "running"]),
                name="one_active_backfill_per_template",
            ),
        ]

    def __str__(self) -> str:
        return f"Backfill #{self.pk} ({self.status})"

    def as_json(self) -> dict:
        return {
            "id": self.pk,
            "status": self.status,
            "finished": self.is_finished,
            "total": self.total,
            "done": self.done,
            "filled": self.filled,
            "conflicts": self.conflicts,
            "invalid": self.invalid,
            "empty": self.empty,
            "error": self.error,
        }
