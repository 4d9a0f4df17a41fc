"""Campaign CSV uploads: one LinkBatch per uploaded file, turned into one SmartPass link per row.

The batch row is the whole state of the work (status, progress, counts, timings), so the pages and the
command never need a Celery result backend, and a redelivered task can tell what is left to do.
"""

import posixpath
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from background.models import BackgroundRun
from templates_sync.models import PassTemplate

from .csv_files import encoding_name

# The mapping target that puts a column into the link as its explicit External ID, not as a field value.
# Input-field identifiers come from SmartPages and never start with "@".
EXTERNAL_ID_TARGET = "@external_id"


def _input_path(batch: "LinkBatch", filename: str) -> str:
    # One directory per upload, named at random: the output and error files go beside the input, and no
    # name a person chose ever becomes part of a path.
    return f"links/{timezone.now():%Y/%m}/{uuid.uuid4().hex}/input.csv"


class LinkBatch(models.Model):
    class Status(models.TextChoices):
        UPLOADED = "uploaded", "Uploaded"  # waiting for the column mapping to be confirmed
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"  # stopped by a manager; the rows made until then are kept

    class Via(models.TextChoices):
        PAGE = "page", "Upload page"
        COMMAND = "command", "Command"

    template = models.ForeignKey(PassTemplate, on_delete=models.PROTECT, related_name="link_batches")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_via = models.CharField(max_length=16, choices=Via.choices, default=Via.PAGE)
    original_name = models.CharField("file name", max_length=255)
    input_file = models.FileField(upload_to=_input_path, max_length=300)
    output_file = models.FileField(max_length=300, blank=True)
    errors_file = models.FileField(max_length=300, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    # How the stored input is read: detected at upload (the uploader may choose encoding and delimiter).
    encoding = models.CharField(max_length=16)
    # The encoding of the file as it came, when the stored input differs: UTF-16 is stored as UTF-8.
    source_encoding = models.CharField(max_length=16, blank=True)
    delimiter = models.CharField(max_length=1)
    header = models.JSONField(default=list, help_text="The column names of the input, in order.")
    # Column name → input-field identifier or EXTERNAL_ID_TARGET; a column not named here is left out of links.
    mapping = models.JSONField(default=dict, blank=True)
    # Off (the default): a bad value in an optional field costs the row only that value (its link leaves the
    # value out, with a warning). On: such a row gets no link, as a row with a bad mandatory value.
    strict = models.BooleanField(
        default=False, help_text="Refuse rows with an invalid optional value instead of leaving the value out."
    )

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UPLOADED)
    # Incremented by every run; a run only writes while it is still the latest, so a redelivered task and
    # the run it replaces never both finish the same batch.
    attempt = models.PositiveIntegerField(default=0)
    rows_total = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    links = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    warnings = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0, help_text="Rows repeating an earlier row of the file.")
    existing_members = models.PositiveIntegerField(default=0, help_text="Rows whose External ID already has a member.")
    # Claims of this batch's links that found the holder's existing member instead of issuing a second pass
    # (External ID already enrolled, or one claim form posted twice). Members created are counted from Member.
    duplicate_claims = models.PositiveIntegerField(default=0, help_text="Claims that showed an existing pass.")
    # "One pass per row": the first claim of a row issues, every later claim of that row shows that pass. The
    # links carry the flag themselves (tokens.LinkPayload.single_use), so this column only records the choice.
    single_use = models.BooleanField("one pass per row", default=False)

    class OutputFormat(models.TextChoices):
        PORTAL = "portal", "Portal (smartpass_link and error, UTF-8 with BOM, CRLF)"
        PASSKIT = "passkit", "PassKit (smartUrl, error only when a row has one, LF, no BOM)"

    output_format = models.CharField(max_length=8, choices=OutputFormat.choices, default=OutputFormat.PORTAL)
    # Links of the form {PUBLIC_BASE_URL}/s/{code}: each row's code is stored (ShortLink) with its long token.
    short_links = models.BooleanField("short links", default=False)
    error = models.TextField(blank=True, help_text="Why the whole batch failed (a sentence for staff).")
    # Errors and warnings grouped by reason, gathered while the rows are made: see services.RowSummary.
    summary = models.JSONField(default=list, blank=True)
    # Where the chunks of the input start: [byte offset, rows before it], found while the upload is checked.
    plan = models.JSONField(default=list, blank=True)
    # Last sign of life of a worker on this batch; the sweeper takes over a running batch that has none.
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "link batch"
        verbose_name_plural = "link batches"
        indexes = [models.Index(fields=["template", "-created_at"], name="linkbatch_template_created_idx")]
        permissions = [
            ("upload_links", "Can upload campaign CSVs and generate SmartPass links"),
            # A links file is a list of bearer secrets: whoever holds a link can claim its pass.
            ("download_links", "Can download the generated SmartPass links"),
            # Sending links by email and SMS reaches holders in the issuer's name: a manager's act.
            ("send_links", "Can send a batch's links to its holders by email and SMS"),
        ]

    def __str__(self) -> str:
        return f"{self.original_name} (#{self.pk})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED, self.Status.CANCELLED)

    @property
    def status_label(self) -> str:
        """The status as the pages say it: a batch that made links but also errors did not simply succeed."""
        if self.status == self.Status.SUCCEEDED and self.errors:
            return f"completed with {self.errors:,} error{'s' if self.errors != 1 else ''}"
        return self.get_status_display().lower()

    @property
    def status_tone(self) -> str:
        """The badge colour: succeeded only when every row got its link."""
        if self.status == self.Status.SUCCEEDED and self.errors:
            return "partial"
        return self.status

    @property
    def is_processing(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def duration_seconds(self) -> float | None:
        duration = self.duration
        return duration.total_seconds() if duration is not None else None

    @property
    def percent(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        return int(self.rows_done * 100 / self.rows_total) if self.rows_total else 0

    @property
    def encoding_label(self) -> str:
        if self.source_encoding and self.source_encoding != self.encoding:
            return f"{encoding_name(self.source_encoding)}, converted to UTF-8"
        return encoding_name(self.encoding)

    @property
    def delimiter_name(self) -> str:
        return {",": "comma", ";": "semicolon", "\t": "tab"}.get(self.delimiter, repr(self.delimiter))

    def sibling_path(self, name: str) -> str:
        """A path beside the stored input file (the output and error files live there)."""
        return posixpath.join(posixpath.dirname(self.input_file.name), name)

    def as_json(self) -> dict:
        """What the status endpoint returns and portal.js reads (status, finished, total, done)."""
        return {
            "id": self.pk,
            "status": self.status,
            "finished": self.is_finished,
            "total": self.rows_total,
            "done": self.rows_done,
            "percent": self.percent,
            "status_label": self.status_label,
            "rows": self.rows_done,
            "links": self.links,
            "errors": self.errors,
            "warnings": self.warnings,
            "duplicates": self.duplicates,
            "existing_members": self.existing_members,
            "error": self.error,
        }


class LinkChunk(models.Model):
    """One slice of a batch's input (consecutive rows), made by one worker; a batch is done when all are.

    Rows of the database, not a result backend, say how far each chunk got: a chunk whose worker stopped
    beating is handed to another worker by the sweeper and costs only itself.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"

    batch = models.ForeignKey(LinkBatch, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    # The input bytes [start, end) hold the chunk's records (end null: to the end of the file); its first
    # record is row row_before + 1.
    start = models.BigIntegerField()
    end = models.BigIntegerField(null=True)
    row_before = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempt = models.PositiveIntegerField(default=0)
    queued_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    rows_done = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True)
    summary = models.JSONField(default=list, blank=True)
    output_file = models.CharField(max_length=300, blank=True)
    errors_file = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["batch", "index"]
        constraints = [models.UniqueConstraint(fields=["batch", "index"], name="linkchunk_batch_index_unique")]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="linkchunk_status_beat_idx")]

    def __str__(self) -> str:
        return f"chunk {self.index} of batch {self.batch_id}"


class LinkBatchEvent(models.Model):
    """What staff did with an upload: each download of one of its files, a change of its columns, its deletion.

    The batch is named by its id and file name, not by a foreign key, so the record outlives the batch: who
    deleted which upload, and who downloaded its links before that, stays answerable.
    """

    class Action(models.TextChoices):
        DOWNLOADED = "downloaded", "Downloaded"
        REMAPPED = "remapped", "Changed the columns and ran again"
        DELETED = "deleted", "Deleted the upload and its files"

    batch_id = models.BigIntegerField()
    batch_name = models.CharField(max_length=255)
    template = models.ForeignKey(PassTemplate, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=16, choices=Action.choices)
    file = models.CharField(max_length=16, blank=True, help_text="For a download: output, errors or input.")
    detail = models.JSONField(default=dict, blank=True, help_text="What the batch was, for a deletion or a change.")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The user name at the time, so the record still names the person after their account is gone.
    by_name = models.CharField(max_length=150, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["batch_id", "-at"], name="linkbatchevent_batch_idx"),
            models.Index(fields=["action", "-at"], name="linkbatchevent_action_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.by_name or 'command'} {self.action} {self.batch_name} (#{self.batch_id})"


class LinkClaim(models.Model):
    """One claim of a SmartPass link: the press of its button that made a member or found one.

    Only what the charts need (when, which batch, new or found); the member itself is in members. No foreign
    key to the batch: a link outlives its batch, and so does the record of its claims.
    """

    class Outcome(models.TextChoices):
        NEW = "new", "Made a member"
        EXISTING = "existing", "Found the holder's member"

    template = models.ForeignKey(PassTemplate, on_delete=models.PROTECT, related_name="+")
    batch_id = models.BigIntegerField(null=True, blank=True)
    row = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # Claims per day: a range on `at` grouped by day (the dashboard), within one batch (the batch page).
            models.Index(fields=["at"], name="linkclaim_at_idx"),
            models.Index(fields=["batch_id", "at"], name="linkclaim_batch_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.outcome} claim at {self.at:%Y-%m-%d %H:%M}"


class ShortLink(models.Model):
    """A short link's code and the long token it stands for: /s/{code} opens exactly what /p/{token} opens.

    Made with its batch's rows, a COPY per chunk. No foreign key to the batch (nor its check on every row
    copied): like a long link, a short link outlives its batch record.
    """

    # On PostgreSQL the column compares in byte order (COLLATE "C", set by migration 0006): codes are compared
    # on every insert into the index, and a language's collation rules cost several times as much per
    # comparison for nothing here. (Not db_collation: SQLite, the embedded default, has no "C".)
    code = models.CharField(max_length=16, primary_key=True)
    batch_id = models.BigIntegerField()
    row = models.PositiveIntegerField()
    token = models.TextField()

    def __str__(self) -> str:
        return f"short link of batch {self.batch_id} row {self.row}"


class LinkOpen(models.Model):
    """The first time a batch row's claim page was opened (a GET by a browser, not a preview or a HEAD).

    Keyed by batch and row only: the token itself is never stored. One row per (batch, row); later opens
    are not counted.
    """

    batch_id = models.BigIntegerField()
    row = models.PositiveIntegerField()
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["batch_id", "row"], name="linkopen_batch_row_unique")]

    def __str__(self) -> str:
        return f"batch {self.batch_id} row {self.row} opened {self.at:%Y-%m-%d %H:%M}"


class LinkBatchSend(BackgroundRun):
    """One press of "Send to N holders" (or one `manage.py send_links`): what was asked and what came of it.

    Recorded work (background.recovery): the press records it with its options, and a worker queues the
    messages (links.services.sending.batch_send_run), so a batch of any size is sent without holding the page.
    The messages themselves are the outbox's (delivery.Message, keyed `batch:<pk>:row:<n>`); this keeps what
    the outbox never sees: the rows not sent at all (no address, an error, an SMS too long), counted by reason.
    """

    batch = models.ForeignKey(LinkBatch, on_delete=models.CASCADE, related_name="sends")
    channels = models.CharField(max_length=16, help_text="email, sms or email,sms (each row by the first it has)")
    default_language = models.CharField(max_length=2)
    # The send page's choices (links.services.sending.SendOptions), for the worker that queues the messages.
    options = models.JSONField(default=dict, blank=True)
    # Raised each time a worker takes the send (background.recovery.take): above 1, a worker died in it.
    attempt = models.PositiveIntegerField(default=0)
    queued = models.PositiveIntegerField(default=0)
    already = models.PositiveIntegerField(default=0, help_text="Rows sent or queued by an earlier send.")
    skipped = models.PositiveIntegerField(default=0)
    # Rows not sent, grouped by reason (links.services.RowSummary entries, kind "skipped").
    skipped_summary = models.JSONField(default=list, blank=True)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    by_name = models.CharField(max_length=150, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta(BackgroundRun.Meta):
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"send of batch {self.batch_id} by {self.by_name or 'command'} at {self.at:%Y-%m-%d %H:%M}"

    @property
    def channels_label(self) -> str:
        """ "email, else SMS": the channels in the order tried."""
        names = {"email": "email", "sms": "SMS"}
        return ", else ".join(names.get(channel, channel) for channel in self.channels.split(","))


class ClaimDay(models.Model):
    """How many claims each day had (in the portal's time zone), kept by `_record_claim` in the transaction that
    records the claim, so the dashboard's chart reads 30 rows instead of grouping a month of claims (0.35 s at a
    million claims, bench/charts.py). The reconcile job (links.services.claim_days) sets each day to a real
    count, correcting drift from claims written outside the claim flow (an import, a manual fix)."""

    day = models.DateField(primary_key=True)
    claims = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["day"]

    def __str__(self) -> str:
        return f"{self.day}: {self.claims}"
