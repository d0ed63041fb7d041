"""`manage.py pgmigrate_status [--all]`: pg_migrate's jobs, one line each,
with a progress bar and the time left (jobs not ended yet; --all: every
job the role may see)."""

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from pg_migrate_django import history

WIDTH = 20


def bar(percent):
    if percent is None:
        return " " * (WIDTH + 2)
    filled = int(round(float(percent) * WIDTH / 100.0))
    return "[" + "#" * filled + "." * (WIDTH - filled) + "]"


class Command(BaseCommand):
    help = "pg_migrate's jobs with progress bars and the time left."

    def add_arguments(self, parser):
        parser.add_argument("--database", default="default")
        parser.add_argument("--all", action="store_true", help="ended jobs too")

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        try:
            history.require(connection, "pgmigrate_status")
        except history.PgMigrateError as e:
            raise CommandError(str(e))
        ns = history._quote(history.schema(connection))
        where = "" if options["all"] else (
            " WHERE state OPERATOR(pg_catalog.<>) ALL (ARRAY['succeeded', 'failed', 'cancelled'])"
        )
        with connection.cursor() as c:
            c.execute(
                "SELECT job_id, kind, relation, state, percent, rows_per_second, eta::pg_catalog.text, wait_reason, error,"
                f" migration, parent_job FROM {ns}.migrate_progress{where} ORDER BY job_id"
            )
            rows = c.fetchall()
        if not rows:
            self.stdout.write("no pg_migrate job is waiting or running" if not options["all"] else "no pg_migrate job")
            return
        for job, kind, relation, state, percent, rate, eta, reason, error, migration, parent in rows:
            line = f"job {job:<5} {kind:<13} {relation:<30} {state:<9} {bar(percent)} "
            line += f"{percent:>5}%" if percent is not None else "      "
            if rate:
                line += f"  {rate:,} rows/s"
            if eta and state in ("running", "waiting"):
                line += f"  {eta} left"
            if parent:
                line += f"  (slice of job {parent})"
            if migration:
                line += f"  [{migration}]"
            if reason and state not in ("succeeded", "failed", "cancelled"):
                line += f"\n      {reason}"
            if error:
                line += f"\n      error: {error}"
            self.stdout.write(line)
