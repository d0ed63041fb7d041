"""`manage.py pgmigrate_wait [job ...]`: follow pg_migrate's jobs until they
end; exit 0 only when every one succeeded.  Without ids: every job not
ended yet that the role may see, except those a post-deploy migration's gate
holds (they wait for the deploy, not for time)."""

import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from pg_migrate_django import history


class Command(BaseCommand):
    help = "Wait for pg_migrate jobs to end, with their progress; exit 0 only when all succeeded."

    def add_arguments(self, parser):
        parser.add_argument("jobs", nargs="*", type=int, help="job ids (default: every job not ended yet)")
        parser.add_argument("--database", default="default")
        parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        jobs = options["jobs"]
        try:
            if not jobs:
                history.require(connection, "pgmigrate_wait")
                ns = history.schema(connection)
                with connection.cursor() as c:
                    c.execute(
                        f"SELECT job_id FROM {history._quote(ns)}.migrate_progress WHERE parent_job IS NULL AND "
                        + history.MINE.format(p="")
                        + " AND state OPERATOR(pg_catalog.<>) ALL (ARRAY['succeeded', 'failed', 'cancelled'])"
                        " ORDER BY job_id"
                    )
                    jobs = [r[0] for r in c.fetchall()]
                if not jobs:
                    self.stdout.write("no pg_migrate job is waiting or running")
                    return
            failed = history.wait(
                connection, jobs, out=self.stdout, timeout=options["timeout"], held_ok=not options["jobs"]
            )
        except history.PgMigrateError as e:
            raise CommandError(str(e))
        if failed:
            ids = ", ".join(map(str, failed))
            self.stderr.write(
                f"not succeeded: job(s) {ids}. Its line above has the error (migrate_progress.error); once the cause "
                f"is fixed, SELECT migrate_retry(job) queues a failed or cancelled job again, and it resumes where it "
                f"stopped."
            )
            sys.exit(1)
