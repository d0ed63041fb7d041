"""`manage.py pgmigrate_lint [app_label ...] [--fail-on medium]`: the CI
step before a deploy.  The SQL of every unapplied migration (what
`sqlmigrate` prints, in the order `migrate` would run them) goes through
pg_migrate's `migrate_analyze` against the live database: its real tables,
sizes and locks.  Each finding at or above `--fail-on` is printed with its
reason and the safer way; the command exits 1 if there is one.

Besides the locks, one rule is Django's own: a NOT NULL AddField without a
db_default on a table that exists.  Django adds the column with a default
and then drops the default, so from then on an INSERT from code that does
not know the field (the release still serving during the deploy) fails."""

import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import NotSupportedError, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.operations.fields import AddField
from django.db.models import NOT_PROVIDED

from pg_migrate_django import history

RANK = {"none": 0, "low": 1, "medium": 2, "unknown": 2, "high": 3}
MARK = "pgmigrate_lint: "
# The operation of this package that does what a recipe's function does.
IN_DJANGO = {
    "migrate_create_index": "AddIndexConcurrently in place of AddIndex",
    "migrate_drop_index": "RemoveIndexConcurrently in place of RemoveIndex",
    "migrate_set_not_null": "SetNotNull in place of AlterField (after a Backfill of the NULLs)",
    "migrate_add_constraint": "AddConstraintSafely in place of AddConstraint",
    "migrate_alter_type": "AlterTypeSafely in place of AlterField",
    "migrate_backfill": "Backfill in place of RunPython or RunSQL UPDATE",
    "migrate_exec": "SafeRunSQL in place of RunSQL (atomic = False)",
}


class Command(BaseCommand):
    help = ("Analyse the SQL of unapplied migrations with pg_migrate's migrate_analyze against the live database; "
            "exit 1 when a finding is at or above --fail-on.")

    def add_arguments(self, parser):
        parser.add_argument("app_label", nargs="*", help="report only these apps' migrations")
        parser.add_argument("--database", default="default")
        parser.add_argument("--fail-on", choices=["low", "medium", "high"], default="medium",
                            help="the lowest risk that fails (default: medium; unknown counts as medium)")

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        apps = set(options["app_label"])
        fail_on = RANK[options["fail_on"]]
        try:
            history.require(connection, "pgmigrate_lint")
            executor = MigrationExecutor(connection)
            for app in apps:
                if app not in executor.loader.migrated_apps:
                    raise CommandError(f"app {app!r} has no migrations")
            plan = [m for m, backwards in executor.migration_plan(executor.loader.graph.leaf_nodes()) if not backwards]
            if not plan:
                self.stdout.write("no unapplied migration")
                return
            script, findings = [], {}
            for m in plan:
                script.append(f"SELECT '{MARK}{m.app_label}.{m.name}';")
                try:
                    # Django's comments (one per line) are left out: the
                    # statements are what is analysed and shown.
                    script.extend(
                        line for line in executor.loader.collect_sql([(m, False)]) if not line.startswith("--")
                    )
                except NotSupportedError as e:
                    raise CommandError(f"{m.app_label}.{m.name}: cannot write its SQL: {e}")
                findings[(m.app_label, m.name)] = self.django_findings(connection, executor, m)
            rows = self.analyze(connection, "\n".join(script))
        except history.PgMigrateError as e:
            raise CommandError(str(e))

        current = None
        for statement, sql, command, relation, lock_mode, risk, reason, recipe in rows:
            if command == "SELECT" and sql.startswith(f"SELECT '{MARK}"):
                app, _, name = sql[len(f"SELECT '{MARK}"):].split("'")[0].partition(".")
                current = (app, name)
                continue
            if current is None or RANK.get(risk, 2) == 0:
                continue
            what = f"{command}" + (f" on {relation}" if relation else "")
            findings[current].append((risk, what + (f" ({lock_mode})" if lock_mode else ""), reason, recipe,
                                      sql.strip()))

        failing = 0
        for m in plan:
            key = (m.app_label, m.name)
            if apps and m.app_label not in apps:
                continue
            shown = [f for f in findings[key] if RANK.get(f[0], 2) >= fail_on]
            worst = max((f[0] for f in findings[key]), key=lambda r: RANK.get(r, 2), default="none")
            if not shown:
                self.stdout.write(f"{m.app_label}.{m.name}: ok (highest risk: {worst})")
                continue
            failing += len(shown)
            self.stdout.write(f"{m.app_label}.{m.name}: {len(shown)} finding(s)")
            for risk, what, reason, recipe, sql in shown:
                self.stdout.write(f"  {risk}: {what}")
                if sql:
                    self.stdout.write(f"    statement: {sql}")
                self.stdout.write(f"    why: {reason}")
                if recipe:
                    self.stdout.write("    instead: " + recipe.replace("\n", "\n      "))
                    hint = next((v for k, v in IN_DJANGO.items() if f"{k}(" in recipe), None)
                    if hint:
                        self.stdout.write(f"    in the migration: {hint}")
        if failing:
            self.stderr.write(f"pgmigrate_lint: {failing} finding(s) at or above {options['fail_on']} risk")
            sys.exit(1)

    def analyze(self, connection, script):
        ns = history.schema(connection)
        with connection.cursor() as c:
            try:
                c.execute(
                    "SELECT statement, statement_sql, command, relation::pg_catalog.text, lock_mode, risk, reason,"
                    f" recipe FROM {history._quote(ns)}.migrate_analyze(%s)"
                    " ORDER BY statement",
                    [script],
                )
            except Exception as e:
                raise CommandError(f"migrate_analyze could not read the migrations' SQL: {e}")
            return c.fetchall()

    def django_findings(self, connection, executor, migration):
        """What Django's own way of doing an operation makes unsafe."""
        out = []
        state = None
        for op in migration.operations:
            if not isinstance(op, AddField):
                continue
            field = op.field
            if field.null or field.many_to_many or getattr(field, "db_default", NOT_PROVIDED) is not NOT_PROVIDED:
                continue
            if state is None:
                state = executor.loader.project_state((migration.app_label, migration.name), at_end=False)
            try:
                table = state.apps.get_model(migration.app_label, op.model_name)._meta.db_table
            except LookupError:
                continue
            with connection.cursor() as c:
                c.execute("SELECT pg_catalog.to_regclass(pg_catalog.quote_ident(%s)) IS NOT NULL", [table])
                exists = c.fetchone()[0]
            if not exists:
                continue
            out.append((
                "high",
                f"AddField {op.model_name}.{op.name} NOT NULL on {table}",
                "Django adds the column with a default and then drops the default, so from then on every INSERT "
                "that does not name the column (the release still serving during the deploy, other clients) fails "
                "with a not-null violation (23502).",
                f"AddField {op.name} with null=True; Backfill({op.model_name!r}, set=...) to fill it; then "
                f"SetNotNull({op.model_name!r}, {op.name!r}, ...) in a post_deploy migration. Or give the field a "
                "db_default, which stays in the database.",
                None,
            ))
        return out
