"""The outbox: one Message row per (subject key, channel), the runs of workers that send them, and the
suppression list.

A message is recorded work (background.recovery's rule): the row is the truth, a task only a nudge. Its
status moves queued → sending → sent → delivered | bounced | complained, or failed | skipped with a reason.
`sending` is committed before the provider is called, so a message is never handed to a provider twice by
two workers; only a worker that died between that commit and the next one leaves a row in `sending`, and
the sweep puts exactly that row back (docs/architecture.md, "Delivery").
"""

from __future__ import annotations

from django.db import models

EMAIL, SMS = "email", "sms"
CHANNELS = [(EMAIL, "Email"), (SMS, "SMS")]


class Message(models.Model):
    QUEUED, SENDING, SENT = "queued", "sending", "sent"
    DELIVERED, BOUNCED, COMPLAINED = "delivered", "bounced", "complained"
    FAILED, SKIPPED = "failed", "skipped"
    STATUSES = [
        (QUEUED, "Queued"),
        (SENDING, "Sending"),
        (SENT, "Sent"),
        (DELIVERED, "Delivered"),
        (BOUNCED, "Bounced"),
        (COMPLAINED, "Complained"),
        (FAILED, "Failed"),
        (SKIPPED, "Skipped"),
    ]
    # Handed to the provider (or further): never sent again by the outbox.
    HANDED_OVER = (SENT, DELIVERED, BOUNCED, COMPLAINED)

    # Opaque to this app: "member:42", "batch:7:row:15"; higher apps find and count their messages by it.
    subject_key = models.CharField(max_length=200)
    channel = models.CharField(max_length=8, choices=CHANNELS)
    to = models.CharField(max_length=254)
    language = models.CharField(max_length=8, default="is")
    subject = models.CharField(max_length=300, blank=True)
    text = models.TextField()
    html = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=STATUSES, default=QUEUED)
    reason = models.CharField(max_length=500, blank=True)
    # The provider's id (Twilio's message SID, an email service's message id, or our Message-ID for SMTP):
    # how status webhooks find the row.
    provider_id = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    not_before = models.DateTimeField(null=True, blank=True)
    run = models.ForeignKey("SendingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    queued_at = models.DateTimeField(auto_now_add=True)
    sending_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-queued_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["subject_key", "channel"], name="delivery_one_per_subject")]
        indexes = [
            models.Index(fields=["channel", "status", "not_before"], name="delivery_due"),
            # The worker's take (the oldest queued message of a channel) reads only queued rows in id order:
            # without it, each take walked past every row already sent, slower with every message of a send.
            models.Index(fields=["channel", "id"], condition=models.Q(status="queued"), name="delivery_queued"),
            models.Index(fields=["subject_key"], name="delivery_subject", opclasses=["varchar_pattern_ops"]),
            models.Index(fields=["provider_id"], name="delivery_provider_id"),
            models.Index(fields=["run", "status"], name="delivery_run"),
        ]
        permissions = [("send_messages", "Send messages to holders")]

    def __str__(self) -> str:
        return f"{self.channel} to {self.to} ({self.status})"


class SendingRun(models.Model):
    """One task's run of messages on one worker: the heartbeat that shows the worker alive while it sends
    (background.recovery.Heartbeat). A run silent for RUN_STALE_SECONDS died; the message it had in
    `sending` (at most one: a run sends one at a time) goes back to the queue."""

    QUEUED, RUNNING, FINISHED, DIED = "queued", "running", "finished", "died"
    channel = models.CharField(max_length=8, choices=CHANNELS)
    status = models.CharField(max_length=10, default=RUNNING)
    attempt = models.PositiveSmallIntegerField(default=1)
    sent = models.PositiveIntegerField(default=0)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="delivery_run_live")]

    def __str__(self) -> str:
        return f"{self.channel} sending run {self.pk} ({self.status})"


class Suppression(models.Model):
    """An address later sends skip: a hard bounce, a complaint, or an SMS opt-out (STOP)."""

    HARD_BOUNCE, COMPLAINT, OPT_OUT = "hard_bounce", "complaint", "opt_out"
    REASONS = [(HARD_BOUNCE, "Hard bounce"), (COMPLAINT, "Spam complaint"), (OPT_OUT, "Opted out (STOP)")]

    channel = models.CharField(max_length=8, choices=CHANNELS)
    address = models.CharField(max_length=254)  # normalised: lower-case email, E.164 phone
    reason = models.CharField(max_length=20, choices=REASONS)
    detail = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["channel", "address"], name="delivery_one_suppression")]
        permissions = [("remove_suppression", "Remove an address from the suppression list")]

    def __str__(self) -> str:
        return f"{self.channel} {self.address}"
