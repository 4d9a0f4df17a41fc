"""A send of a batch becomes recorded work: a worker queues its messages (links.services.sending).

Sends recorded before this were queued in the request that made them: they are marked succeeded.
"""

import django.utils.timezone
from django.db import migrations, models

STATUS_CHOICES = [
    ("queued", "Queued"),
    ("running", "Running"),
    ("succeeded", "Succeeded"),
    ("failed", "Failed"),
    ("skipped", "Skipped"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("links", "0009_claim_days"),
    ]

    operations = [
        migrations.AddField(
            model_name="linkbatchsend",
            name="status",
            field=models.CharField(choices=STATUS_CHOICES, default="succeeded", max_length=16),
        ),
        migrations.AlterField(
            model_name="linkbatchsend",
            name="status",
            field=models.CharField(choices=STATUS_CHOICES, default="queued", max_length=16),
        ),
        migrations.AddField(
            model_name="linkbatchsend",
            name="error",
            field=models.TextField(blank=True, default=""),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="linkbatchsend",
            name="queued_at",
            field=models.DateTimeField(auto_now_add=True, default=django.utils.timezone.now),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="linkbatchsend",
            name="started_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="linkbatchsend",
            name="finished_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="linkbatchsend",
            name="heartbeat_at",
            field=models.DateTimeField(blank=True, help_text="Last sign of life of a running run.", null=True),
        ),
        migrations.AddField(
            model_name="linkbatchsend",
            name="options",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="linkbatchsend",
            name="attempt",
            field=models.PositiveIntegerField(default=0),
        ),
    ]
