"""`manage.py pgmigrate_import`: adopt pg_migrate in a project that already
has migrations: django_migrations imported into pg_migrate's history
(`migrate_import_django`); a second run imports nothing."""

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from pg_migrate_django import history


class Command(BaseCommand):
    help = "Import django_migrations into pg_migrate's history (once; a second run imports nothing)."

    def add_arguments(self, parser):
        parser.add_argument("--database", default="default")

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        table = connection.ops.quote_name("django_migrations")
        try:
            history.require(connection, "pgmigrate_import")
            n = history.call(connection, "migrate_import_django", "%s::pg_catalog.regclass", [table])
        except history.PgMigrateError as e:
            raise CommandError(str(e))
        self.stdout.write(f"imported {n} migration(s) from django_migrations into pg_migrate's history")
