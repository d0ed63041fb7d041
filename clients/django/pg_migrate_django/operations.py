"""Operations for migration files that hand work to pg_migrate's jobs."""

from django.db.migrations.operations.base import Operation
from django.db.migrations.operations.models import AddIndex, RemoveIndex

from . import history

# migrate_backfill's options a Backfill passes on, by name.
BACKFILL_OPTIONS = {
    "batch_size", "sleep_ms", "lock_timeout", "statement_timeout", "max_retries", "run_at",
    "target_batch_ms", "max_batch_size", "max_replay_lag", "max_slot_wal", "max_rows_per_second",
    "max_wal_per_second", "pause_during_vacuum", "window_start", "window_length", "on_error",
    "after_jobs", "after_migration", "parallel",
}


class Backfill(Operation):
    """UPDATE a model's table in batches, in the server: `migrate_backfill`.

    The job is queued in the migration's transaction and starts when it
    commits; `migrate` returns at once.  Its history entry is
    `<migration name>.backfill<n>` in the app, applied when the job ends,
    so a later migration or the application can wait for it.  `wait=True`
    (in a migration with `atomic = False`) waits for the job instead, with
    its progress.  Reversing cancels the job if it has not ended; rows it
    updated stay as they are.
    """

    reversible = True
    reduces_to_sql = False
    pg_migrate_kind = "backfill"

    def __init__(self, model_name, set, where=None, wait=False, **options):
        unknown = sorted(k for k in options if k not in BACKFILL_OPTIONS)
        if unknown:
            raise TypeError(
                f"Backfill: unknown option(s) {', '.join(unknown)}; migrate_backfill takes {', '.join(sorted(BACKFILL_OPTIONS))}"
            )
        self.model_name = model_name
        self.set = set
        self.where = where
        self.wait = wait
        self.options = options

    def deconstruct(self):
        kwargs = {"model_name": self.model_name, "set": self.set}
        if self.where is not None:
            kwargs["where"] = self.where
        if self.wait:
            kwargs["wait"] = True
        kwargs.update(self.options)
        return (self.__class__.__name__, [], kwargs)

    def state_forwards(self, app_label, state):
        pass

    def describe(self):
        return f"Backfill {self.model_name}: SET {self.set}" + (f" WHERE {self.where}" if self.where else "")

    @property
    def migration_name_fragment(self):
        return f"backfill_{self.model_name.lower()}"

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model = to_state.apps.get_model(app_label, self.model_name)
        history.require(connection, "Backfill")
        link = history.next_link(connection, self.pg_migrate_kind)
        if self.wait and connection.in_atomic_block:
            raise history.PgMigrateError(
                f"Backfill of {model._meta.db_table} with wait=True: the job starts only when the migration commits, "
                "so it cannot be waited for inside it. Set atomic = False on the migration, or leave out wait=True "
                "and wait with manage.py pgmigrate_wait."
            )
        names = ["set_clause => %s", "where_clause => %s", "migration => %s"]
        params = [self.set, self.where, list(link)]
        for k, v in sorted(self.options.items()):
            names.append(f"{k} => %s")
            params.append(v)
        job = history.call(
            connection,
            "migrate_backfill",
            "%s::pg_catalog.regclass, " + ", ".join(names),
            [model._meta.db_table] + params,
            required=True,
        )
        history.note_job(connection, job)
        if self.wait:
            if history.wait(connection, job):
                raise history.PgMigrateError(
                    f"pg_migrate job {job} (backfill of {model._meta.db_table}) did not succeed: "
                    f"SELECT * FROM migrate_progress WHERE job_id = {job} says why."
                )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        history.undo_link(schema_editor.connection, self.pg_migrate_kind)


class AddIndexConcurrently(AddIndex):
    """AddIndex, built by pg_migrate's worker with CREATE INDEX
    CONCURRENTLY (`migrate_create_index`): no `atomic = False` needed, no
    lock that blocks writes.  The job is queued in the migration's
    transaction and builds after it commits; its history entry
    `<migration>.index<n>` is applied when the index is built (what the
    application or a later step can wait for).  Reversing cancels the build
    if it has not ended, and queues a drop of the index if it exists."""

    pg_migrate_kind = "index"

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        history.require(connection, "AddIndexConcurrently")
        link = history.next_link(connection, self.pg_migrate_kind)
        sql = str(self.index.create_sql(model, schema_editor))
        job = history.call(connection, "migrate_create_index", "%s, migration => %s", [sql, list(link)], required=True)
        history.note_job(connection, job)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        history.undo_link(connection, self.pg_migrate_kind)
        history.drop_index_if_there(connection, self.index.name)

    def describe(self):
        return super().describe() + " (CONCURRENTLY, by pg_migrate)"


class RemoveIndexConcurrently(RemoveIndex):
    """RemoveIndex, dropped by pg_migrate's worker with DROP INDEX
    CONCURRENTLY (`migrate_drop_index`).  Reversing queues the build of the
    index again (CONCURRENTLY)."""

    pg_migrate_kind = "dropindex"

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        history.require(connection, "RemoveIndexConcurrently")
        link = history.next_link(connection, self.pg_migrate_kind)
        history.drop_index_if_there(connection, self.name, link=link)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        history.undo_link(connection, self.pg_migrate_kind)
        index = to_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
        sql = str(index.create_sql(model, schema_editor))
        job = history.call(connection, "migrate_create_index", "%s", [sql], required=True)
        history.note_job(connection, job)

    def describe(self):
        return super().describe() + " (CONCURRENTLY, by pg_migrate)"
