"""Member counts per template and status (MemberStatusCount), kept by triggers on members_member
(members.status_count_triggers) and filled from the members there are."""

import django.db.models.deletion
from django.db import migrations, models

from members.status_count_triggers import COUNTS, POSTGRESQL, SQLITE, postgresql_statements


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in postgresql_statements() if vendor == "postgresql" else SQLITE if vendor == "sqlite" else []:
        schema_editor.execute(statement, params=None)
    # The counts of the members there are (in the same transaction as the triggers, on both databases).
    schema_editor.execute(
        f"INSERT INTO {COUNTS} (template_id, status, members) "
        "SELECT template_id, status, count(*) FROM members_member GROUP BY template_id, status",
        params=None,
    )


def backwards(apps, schema_editor):
    for operation in POSTGRESQL:
        function = f"members_status_count_{operation}"
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {function} ON members_member", params=None)
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"DROP FUNCTION IF EXISTS {function}()", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("members", "0015_passkit_columns"),
        ("templates_sync", "0009_syncrun_retry_not_before"),
    ]

    operations = [
        migrations.CreateModel(
            name="MemberStatusCount",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("issued", "Issued"),
                            ("failed", "Failed"),
                            ("voided", "Voided"),
                            ("redeemed", "Redeemed"),
                        ],
                        max_length=16,
                    ),
                ),
                ("members", models.BigIntegerField(default=0)),
                (
                    "template",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="templates_sync.passtemplate",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("template", "status"), name="member_status_count_unique")
                ],
            },
        ),
        migrations.RunPython(forwards, backwards),
    ]
