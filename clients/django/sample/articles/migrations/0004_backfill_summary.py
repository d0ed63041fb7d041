"""The seeds' scenario: the new nullable summary is filled from the body by
pg_migrate's workers, in batches, after this migration commits."""

from django.db import migrations

from pg_migrate_django.operations import Backfill


class Migration(migrations.Migration):
    dependencies = [("articles", "0003_check")]
    operations = [
        Backfill("article", set="summary = left(body, 100)", where="summary IS NULL"),
    ]
