"""`manage.py migrate`, Django's own, with each migration recorded in
pg_migrate's history (see pg_migrate_django.history)."""

from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import connections

from pg_migrate_django import history


class Command(DjangoMigrate):
    def handle(self, *args, **options):
        self._pgm_connection = connections[options["database"]]
        try:
            return super().handle(*args, **options)
        except Exception as e:
            history.failed(self._pgm_connection, e)
            raise

    def execute(self, *args, **options):
        # Django runs the system checks, the database ones included, before
        # handle(): pg_migrate's startup check is not for migrate itself.
        history.migrating = True
        try:
            return super().execute(*args, **options)
        finally:
            history.migrating = False

    def migration_progress_callback(self, action, migration=None, fake=False):
        if action == "apply_start":
            history.started(self._pgm_connection, migration)
        elif action == "unapply_start":
            history.unapplying(self._pgm_connection, migration)
        super().migration_progress_callback(action, migration, fake)
