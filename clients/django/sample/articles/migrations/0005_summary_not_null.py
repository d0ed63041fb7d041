"""Contract, after the deploy: summary becomes NOT NULL.

`post_deploy = True`: `migrate` queues the job with the rest of the plan,
but it starts only when the deploy pipeline says the new release serves
everywhere (`manage.py pgmigrate_deployed`), and only after the backfill
of 0004 has succeeded (a job waits for the jobs queued before it on its
table).  SetNotNull validates without a blocking scan."""

from django.db import migrations, models

from pg_migrate_django.operations import SetNotNull


class Migration(migrations.Migration):
    post_deploy = True
    dependencies = [("articles", "0004_backfill_summary")]
    operations = [
        SetNotNull("article", "summary", models.TextField()),
    ]
