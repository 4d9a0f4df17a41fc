from django.db import migrations


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ("viewer", "manager"):
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    """The viewer and manager groups; their permissions are granted by portal.roles after each migrate."""

    dependencies = [("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
