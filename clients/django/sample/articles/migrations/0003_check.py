"""A data check the tests can make fail (PGM_SAMPLE_FAIL=1): a migration
that raises after it changed something, inside its transaction."""
import os

from django.db import migrations


def check(apps, schema_editor):
    schema_editor.execute("UPDATE articles_article SET summary = NULL WHERE false")
    if os.environ.get("PGM_SAMPLE_FAIL"):
        raise RuntimeError("sample check failed on purpose")


class Migration(migrations.Migration):
    dependencies = [("articles", "0002_article_summary")]
    operations = [migrations.RunPython(check, migrations.RunPython.noop)]
