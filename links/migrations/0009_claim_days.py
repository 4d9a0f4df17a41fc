"""The daily roll-up of claims the dashboard reads (ClaimDay), filled from the claims recorded so far."""

from django.db import migrations, models


def fill(apps, schema_editor):
    from django.db.models import Count
    from django.db.models.functions import TruncDate

    ClaimDay = apps.get_model("links", "ClaimDay")
    LinkClaim = apps.get_model("links", "LinkClaim")
    days = LinkClaim.objects.order_by().annotate(d=TruncDate("at")).values("d").annotate(n=Count("*"))
    ClaimDay.objects.bulk_create([ClaimDay(day=row["d"], claims=row["n"]) for row in days], batch_size=1000)


class Migration(migrations.Migration):

    dependencies = [
        ('links', '0008_short_link_codes_byte_order'),
    ]

    operations = [
        migrations.CreateModel(
            name='ClaimDay',
            fields=[
                ('day', models.DateField(primary_key=True, serialize=False)),
                ('claims', models.BigIntegerField(default=0)),
            ],
            options={
                'ordering': ['day'],
            },
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
]
