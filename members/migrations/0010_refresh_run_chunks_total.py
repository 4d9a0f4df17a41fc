import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """A run's count of chunks is `chunks_total` (beside `chunks_done`); its chunks are `run.chunks`, as a link
    batch's are. No data changes: a column renamed, and a reverse accessor."""

    dependencies = [("members", "0009_background_jobs_are_runs")]

    operations = [
        migrations.RenameField(model_name="memberrefreshrun", old_name="chunks", new_name="chunks_total"),
        migrations.AlterField(
            model_name="memberrefreshchunk",
            name="run",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="chunks", to="members.memberrefreshrun"
            ),
        ),
    ]
