from django.db import migrations


def load(apps, schema_editor):
    from evals.starter import starter_load

    starter_load(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("evals", "0001_initial")]

    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
