from django.db import migrations


class Migration(migrations.Migration):
    """SyncRun.created/updated are counts, not timestamps: say so in their names."""

    dependencies = [("templates_sync", "0002_sync_trigger_claim")]

    operations = [
        migrations.RenameField(model_name="syncrun", old_name="created", new_name="created_count"),
        migrations.RenameField(model_name="syncrun", old_name="updated", new_name="updated_count"),
    ]
