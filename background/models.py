"""The abstract row every kind of recorded background work is kept in (no table of its own)."""

from django.db import models


class BackgroundRun(models.Model):
    """What every recorded run of background work holds, whatever the work (a template sync, a member refresh).

    QUEUED rows are work recorded but not yet picked up by a worker; a RUNNING run beats `heartbeat_at`
    while it works, so a sweep can tell a run whose worker died from one that is slow; on a QUEUED row it is
    when a sweep last sent its task again (recovery.resend_waiting). Subclasses add their trigger choices,
    counts and lock."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of a running run.")

    class Meta:
        abstract = True
        ordering = ["-queued_at", "-id"]

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED, self.Status.SKIPPED)

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    def as_json(self) -> dict:
        """What the status endpoints, the commands' --json and the page scripts read; subclasses add counts."""
        return {"id": self.pk, "status": self.status, "finished": self.is_finished, "error": self.error}
