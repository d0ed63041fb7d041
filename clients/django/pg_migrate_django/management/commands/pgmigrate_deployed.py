"""`manage.py pgmigrate_deployed [app_label [migration_name]]`: the deploy
is done, open the gates of the post-deploy migrations.

A migration with `post_deploy = True` has its jobs queued by `migrate` like
any other, but they wait (in the database) for the history entry
`<migration>.deployed`.  The deploy pipeline runs this command once the
release that no longer needs the old shape serves everywhere: it records
that entry (`migrate_record`) for each applied post-deploy migration, and
the workers start their jobs within moments."""

from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.db.migrations.loader import MigrationLoader

from pg_migrate_django import history


class Command(BaseCommand):
    help = "Open the gates of applied post-deploy migrations: their pg_migrate jobs start."

    def add_arguments(self, parser):
        parser.add_argument("app_label", nargs="?", help="only this app's post-deploy migrations")
        parser.add_argument("migration_name", nargs="?", help="only this migration")
        parser.add_argument("--database", default="default")

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        app, name = options["app_label"], options["migration_name"]
        try:
            history.require(connection, "pgmigrate_deployed")
            ns = history.schema(connection)
            loader = MigrationLoader(connection, ignore_no_migrations=True)
            if app and app not in loader.migrated_apps:
                raise CommandError(f"app {app!r} has no migrations")
            if app and name:
                try:
                    chosen = [loader.get_migration_by_prefix(app, name)]
                except (KeyError, ValueError) as e:
                    raise CommandError(f"no migration {app}.{name} (or more than one with that prefix): {e}")
            else:
                chosen = [m for (a, _), m in sorted(loader.disk_migrations.items()) if not app or a == app]
            posts = [m for m in chosen if history.deploy_gate(m)]
            if not posts:
                self.stdout.write("no post-deploy migration" + (f" in {app}" if app else ""))
                return
            for m in posts:
                gate_app, gate = history.deploy_gate(m)
                key = (m.app_label, m.name)
                if key not in loader.applied_migrations:
                    self.stdout.write(f"{m.app_label}.{m.name}: not applied yet (manage.py migrate queues its jobs)")
                    continue
                if history.entry(connection, ns, gate_app, gate)[0] == "applied":
                    self.stdout.write(f"{m.app_label}.{m.name}: deployed already")
                    continue
                history.call(connection, "migrate_record", "%s, %s", [gate_app, gate], required=True)
                with connection.cursor() as c:
                    c.execute(
                        f"SELECT job_id FROM {history._quote(ns)}.migrate_progress"
                        " WHERE parent_job IS NULL AND pg_catalog.starts_with(migration, %s) AND "
                        + history.MINE.format(p="") + " ORDER BY job_id",
                        [f"{m.app_label}.{m.name}."],
                    )
                    jobs = [r[0] for r in c.fetchall()]
                self.stdout.write(
                    f"{m.app_label}.{m.name}: deployed; its jobs start now"
                    + (f" ({', '.join(map(str, jobs))}; manage.py pgmigrate_wait follows them)" if jobs else "")
                )
        except history.PgMigrateError as e:
            raise CommandError(str(e))
