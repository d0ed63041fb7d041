"""Operations for migration files that hand work to pg_migrate's jobs.

Each one queues a job in the migration's transaction (it starts when the
migration commits) with a history entry `<migration>.<kind><n>` that is
applied when the job ends.  A job waits for the jobs earlier migrations
queued on the same table and have not ended, and, in a post-deploy migration
(`post_deploy = True`), for the deploy's gate: one `migrate` queues the whole
plan, and the server runs it in order.  Under `sqlmigrate` (and
`pgmigrate_lint`) each writes the call that queues its job instead.
"""

import inspect

from django.db import router, transaction
from django.db.migrations.operations.base import Operation
from django.db.migrations.operations.fields import AlterField
from django.db.migrations.operations.models import AddConstraint, AddIndex, RemoveIndex
from django.db.migrations.operations.special import RunSQL
from django.db.models import CheckConstraint, UniqueConstraint

from . import history

# The gates every job function takes.
GATES = {"after_jobs", "after_migration"}
# The options of migrate_set_not_null and migrate_add_constraint.
STEP_OPTIONS = {"lock_timeout", "max_retries", "run_at"} | GATES
# migrate_backfill's options a Backfill passes on, by name.
BACKFILL_OPTIONS = {
    "batch_size", "sleep_ms", "lock_timeout", "statement_timeout", "max_retries", "run_at",
    "target_batch_ms", "max_batch_size", "max_replay_lag", "max_slot_wal", "max_rows_per_second",
    "max_wal_per_second", "pause_during_vacuum", "window_start", "window_length", "on_error",
    "parallel",
} | GATES
# migrate_create_index's and migrate_drop_index's.
INDEX_OPTIONS = {"run_at", "window_start", "window_length", "max_wait", "max_retries", "retry_delay"} | GATES
# migrate_alter_type's.
ALTER_TYPE_OPTIONS = {
    "complete", "target_batch_ms", "max_rows_per_second", "max_replay_lag", "max_wal_per_second",
} | STEP_OPTIONS
# CALL migrate_exec's.
EXEC_OPTIONS = {"lock_timeout", "attempts", "retry_delay"}
# Casts for the options that are arrays.
CASTS = {"after_jobs": "::pg_catalog.int8[]", "after_migration": "::pg_catalog.text[]"}


def _check_options(what, options, allowed):
    unknown = sorted(k for k in options if k not in allowed)
    if unknown:
        raise TypeError(f"{what}: unknown option(s) {', '.join(unknown)}; it takes {', '.join(sorted(allowed))}")


def _named(options):
    """`name => %s` for each option, and their values."""
    names, params = [], []
    for k, v in sorted(options.items()):
        names.append(f"{k} => %s{CASTS.get(k, '')}")
        params.append(list(v) if isinstance(v, (list, tuple)) else v)
    return names, params


def _queue(op, schema_editor, function, args, params, table, options):
    """Queue the job of `op` (function(args, options...)) and return its id.

    Its history entry is the next `<migration>.<kind><n>`; it waits for the
    jobs migrations queued on `table` that have not ended and, in a
    post-deploy migration, for the deploy's gate.  Under sqlmigrate the call
    is written out instead (without them) and None returned."""
    connection = schema_editor.connection
    options = dict(options)
    if schema_editor.collect_sql:
        ns = history.schema(connection)
        simple = {k: v for k, v in options.items() if k not in GATES}
        names, extra = _named(simple)
        schema_editor.collected_sql.append(
            "-- pg_migrate runs this as a job, in the background; migrate queues it"
            " (with its history entry, and after earlier jobs on the table) with:"
        )
        prefix = f"{history._quote(ns)}." if ns else ""
        schema_editor.execute(f"SELECT {prefix}{function}({', '.join([args] + names)})", params + extra)
        return None
    history.require(connection, type(op).__name__)
    link = history.next_link(connection, op.pg_migrate_kind)
    after = list(options.pop("after_jobs", None) or [])
    after += [j for j in history.pending_jobs(connection, table) if j not in after]
    if after:
        options["after_jobs"] = after
    gate = history.gate(connection)
    if gate is not None and "after_migration" not in options:
        options["after_migration"] = list(gate)
    names, extra = _named(options)
    job = history.call(
        connection,
        function,
        ", ".join([args, "migration => %s::pg_catalog.text[]"] + names),
        params + [list(link)] + extra,
        required=True,
    )
    history.note_job(connection, job)
    return job


def _backwards_sql(schema_editor, what):
    """Under `sqlmigrate --backwards`: say what reversing does."""
    schema_editor.collected_sql.append(f"-- pg_migrate: {what}")


class _Options:
    """An operation whose keyword options go to its job function (and stay
    in the migration file); an unknown one is a TypeError when it loads.

    Django's migration writer (makemigrations, squashmigrations) writes only
    the arguments __init__ names, so its signature names each option."""

    allowed = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            sig = inspect.signature(cls.__init__)
            params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
            params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
                       for n in sorted(cls.allowed)]
            cls.__init__.__signature__ = sig.replace(parameters=params)

    def _take(self, options):
        _check_options(type(self).__name__, options, self.allowed)
        self.options = options

    def deconstruct(self):
        name, args, kwargs = super().deconstruct()
        kwargs.update(self.options)
        return name, args, kwargs


class Backfill(_Options, Operation):
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
    reduces_to_sql = True
    pg_migrate_kind = "backfill"
    allowed = BACKFILL_OPTIONS

    def __init__(self, model_name, set, where=None, wait=False, **options):
        self._take(options)
        self.model_name = model_name
        self.set = set
        self.where = where
        self.wait = wait

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
        if not self.allow_migrate_model(connection.alias, model):
            return
        table = model._meta.db_table
        if self.wait and connection.in_atomic_block and not schema_editor.collect_sql:
            raise history.PgMigrateError(
                f"Backfill of {table} with wait=True: the job starts only when the migration commits, "
                "so it cannot be waited for inside it. Set atomic = False on the migration, or leave out wait=True "
                "and wait with manage.py pgmigrate_wait."
            )
        job = _queue(
            self, schema_editor, "migrate_backfill",
            "%s::pg_catalog.regclass, set_clause => %s, where_clause => %s",
            [table, self.set, self.where], table, self.options,
        )
        if self.wait and job is not None:
            if history.wait(connection, job):
                raise history.PgMigrateError(
                    f"pg_migrate job {job} (backfill of {table}) did not succeed: "
                    f"SELECT * FROM migrate_progress WHERE job_id = {job} says why."
                )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.collect_sql:
            return _backwards_sql(schema_editor, "cancel the backfill job if it has not ended")
        history.undo_link(schema_editor.connection, self.pg_migrate_kind)


class AddIndexConcurrently(_Options, AddIndex):
    """AddIndex, built by pg_migrate's worker with CREATE INDEX
    CONCURRENTLY (`migrate_create_index`): no `atomic = False` needed, no
    lock that blocks writes.  The job is queued in the migration's
    transaction and builds after it commits; its history entry
    `<migration>.index<n>` is applied when the index is built (what the
    application or a later step can wait for).  Reversing cancels the build
    if it has not ended, and queues a drop of the index if it exists."""

    pg_migrate_kind = "index"
    allowed = INDEX_OPTIONS | {"maintenance_work_mem"}

    def __init__(self, model_name, index, **options):
        self._take(options)
        super().__init__(model_name, index)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        sql = str(self.index.create_sql(model, schema_editor))
        _queue(self, schema_editor, "migrate_create_index", "%s", [sql], model._meta.db_table, self.options)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        if schema_editor.collect_sql:
            return _backwards_sql(schema_editor, f"cancel the build if it has not ended; drop index {self.index.name} (CONCURRENTLY)")
        history.undo_link(connection, self.pg_migrate_kind)
        history.drop_index_if_there(connection, self.index.name)

    def describe(self):
        return super().describe() + " (CONCURRENTLY, by pg_migrate)"


class RemoveIndexConcurrently(_Options, RemoveIndex):
    """RemoveIndex, dropped by pg_migrate's worker with DROP INDEX
    CONCURRENTLY (`migrate_drop_index`).  Reversing queues the build of the
    index again (CONCURRENTLY)."""

    pg_migrate_kind = "dropindex"
    allowed = INDEX_OPTIONS

    def __init__(self, model_name, name, **options):
        self._take(options)
        super().__init__(model_name, name)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        if not schema_editor.collect_sql and history.index_oid(connection, self.name) is None:
            # Already gone: nothing to queue, but the entry counts.
            history.next_link(connection, self.pg_migrate_kind)
            return
        _queue(
            self, schema_editor, "migrate_drop_index",
            "pg_catalog.to_regclass(pg_catalog.quote_ident(%s))", [self.name], model._meta.db_table, self.options,
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        index = to_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
        sql = str(index.create_sql(model, schema_editor))
        if schema_editor.collect_sql:
            return _backwards_sql(schema_editor, f"cancel the drop if it has not ended; build again: {sql}")
        history.undo_link(connection, self.pg_migrate_kind)
        job = history.call(connection, "migrate_create_index", "%s", [sql], required=True)
        history.note_job(connection, job)

    def describe(self):
        return super().describe() + " (CONCURRENTLY, by pg_migrate)"


def _fields(op, app_label, from_state, to_state):
    """(model, old field, new field) of an AlterField-like operation."""
    model = to_state.apps.get_model(app_label, op.model_name)
    old = from_state.apps.get_model(app_label, op.model_name)._meta.get_field(op.name)
    new = model._meta.get_field(op.name)
    return model, old, new


class SetNotNull(_Options, AlterField):
    """AlterField that makes a nullable column NOT NULL without a blocking
    scan: `migrate_set_not_null` (a NOT VALID check, validated under SHARE
    UPDATE EXCLUSIVE, then SET NOT NULL with no scan).  Written as the
    AlterField makemigrations writes, with the class name changed:
    `SetNotNull("article", "summary", models.TextField())`.  It waits for
    the jobs queued on the table before it (the Backfill that fills the
    column).  Reversing cancels the job if it has not ended and drops NOT
    NULL (a moment's lock)."""

    pg_migrate_kind = "notnull"
    allowed = STEP_OPTIONS

    def __init__(self, model_name, name, field, preserve_default=True, **options):
        self._take(options)
        super().__init__(model_name, name, field, preserve_default)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model, old, new = _fields(self, app_label, from_state, to_state)
        if not self.allow_migrate_model(connection.alias, model):
            return
        same = old.column == new.column and old.db_parameters(connection)["type"] == new.db_parameters(connection)["type"]
        if not (old.null and not new.null and same):
            raise history.PgMigrateError(
                f"SetNotNull on {model._meta.label}.{self.name} only turns a nullable column NOT NULL, "
                "keeping its name and type; this change "
                + ("does not make it NOT NULL" if not (old.null and not new.null) else "also changes its name or type")
                + ". Split it: AlterField (or AlterTypeSafely) for the rest, then SetNotNull."
            )
        _queue(
            self, schema_editor, "migrate_set_not_null", "%s::pg_catalog.regclass, %s",
            [model._meta.db_table, new.column], model._meta.db_table, self.options,
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        column = model._meta.get_field(self.name).column
        q = schema_editor.quote_name
        if not schema_editor.collect_sql:
            history.undo_link(connection, self.pg_migrate_kind)
        schema_editor.execute(f"ALTER TABLE {q(model._meta.db_table)} ALTER COLUMN {q(column)} DROP NOT NULL")

    def describe(self):
        return f"Set NOT NULL on {self.model_name}.{self.name} (by pg_migrate, without a blocking scan)"


class AlterTypeSafely(_Options, AlterField):
    """AlterField that changes a column's type the expand/contract way:
    `migrate_alter_type` (a shadow column kept in step by a trigger, filled
    by a backfill, its indexes and constraints built concurrently, one short
    cut-over).  Written as makemigrations' AlterField with the class name
    changed, plus `using=` (an SQL expression of the old column) when
    PostgreSQL's cast is not the one you want.  Reversing rolls the change
    back (`migrate_rollback`, no write lost) while the old column is kept,
    and after that queues the change back to the old type."""

    pg_migrate_kind = "altertype"
    allowed = ALTER_TYPE_OPTIONS

    def __init__(self, model_name, name, field, preserve_default=True, using=None, **options):
        self._take(options)
        super().__init__(model_name, name, field, preserve_default)
        self.using = using

    def deconstruct(self):
        name, args, kwargs = super().deconstruct()
        if self.using is not None:
            kwargs["using"] = self.using
        return name, args, kwargs

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model, old, new = _fields(self, app_label, from_state, to_state)
        if not self.allow_migrate_model(connection.alias, model):
            return
        old_type = old.db_parameters(connection)["type"]
        new_type = new.db_parameters(connection)["type"]
        if old.column != new.column or old.null != new.null or old_type == new_type or new_type is None:
            raise history.PgMigrateError(
                f"AlterTypeSafely on {model._meta.label}.{self.name} changes only the column's type "
                f"(now {old_type}, in this migration {new_type}); a new name or NULL-ness goes in its own "
                "operation (RenameField, SetNotNull), and an unchanged type needs no AlterTypeSafely."
            )
        _queue(
            self, schema_editor, "migrate_alter_type", "%s::pg_catalog.regclass, %s, %s, using_expr => %s",
            [model._meta.db_table, new.column, new_type, self.using], model._meta.db_table, self.options,
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        # Backwards, to_state has the type to go back to.
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        back_to = model._meta.get_field(self.name)
        old_type = back_to.db_parameters(connection)["type"]
        if schema_editor.collect_sql:
            return _backwards_sql(
                schema_editor, f"migrate_rollback of the job while the old column is kept; after that, back to {old_type}"
            )
        app, link = history.next_link(connection, self.pg_migrate_kind)
        job = history.last_job(connection, f"{app}.{link}")
        back = job is None
        if job is not None:
            try:
                with transaction.atomic(using=connection.alias):
                    history.call(connection, "migrate_rollback", "%s", [job], required=True)
            except Exception as e:
                if history.sqlstate(e) != "55000":
                    raise
                back = True  # the old column is gone: change the type back
        now = history.column_type(connection, model._meta.db_table, back_to.column)
        if back and now != history.type_name(connection, old_type):
            job = history.call(
                connection, "migrate_alter_type", "%s::pg_catalog.regclass, %s, %s",
                [model._meta.db_table, back_to.column, old_type], required=True,
            )
            history.note_job(connection, job)
        history.unapply_link(connection, app, link)

    def describe(self):
        return f"Alter the type of {self.model_name}.{self.name} (by pg_migrate, expand/contract)"


class AddConstraintSafely(_Options, AddConstraint):
    """AddConstraint without a blocking scan or index build:
    `migrate_add_constraint` (CHECK: NOT VALID, then VALIDATE; UNIQUE: a
    concurrent unique index, then ADD CONSTRAINT ... USING INDEX).  A
    UniqueConstraint with a condition, expressions or INCLUDE is a unique
    index in PostgreSQL, built concurrently by an index job.  Reversing
    cancels the job if it has not ended and drops the constraint."""

    pg_migrate_kind = "constraint"
    allowed = STEP_OPTIONS

    def __init__(self, model_name, constraint, **options):
        self._take(options)
        super().__init__(model_name, constraint)

    def _as_index(self):
        c = self.constraint
        return isinstance(c, UniqueConstraint) and bool(c.condition or c.include or c.expressions or c.opclasses)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        table = model._meta.db_table
        c = self.constraint
        if not isinstance(c, (CheckConstraint, UniqueConstraint)) or getattr(c, "deferrable", None):
            raise history.PgMigrateError(
                f"AddConstraintSafely takes a CheckConstraint or a UniqueConstraint that is not deferrable, "
                f"not {c!r}: use AddConstraint for it (it takes a blocking lock while it builds or scans)."
            )
        if self._as_index():
            sql = str(c.create_sql(model, schema_editor))
            options = {k: v for k, v in self.options.items() if k in INDEX_OPTIONS}
            _queue(self, schema_editor, "migrate_create_index", "%s", [sql], table, options)
        else:
            definition = str(c.constraint_sql(model, schema_editor))
            _queue(self, schema_editor, "migrate_add_constraint", "%s::pg_catalog.regclass, %s",
                   [table, definition], table, self.options)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        name = self.constraint.name
        if schema_editor.collect_sql:
            return _backwards_sql(schema_editor, f"cancel the job if it has not ended; drop {name}")
        history.undo_link(connection, self.pg_migrate_kind)
        q = schema_editor.quote_name
        if history.has_constraint(connection, model._meta.db_table, name):
            schema_editor.execute(f"ALTER TABLE {q(model._meta.db_table)} DROP CONSTRAINT {q(name)}")
        history.drop_index_if_there(connection, name)

    def describe(self):
        return super().describe() + " (by pg_migrate, without a blocking scan)"


class SafeRunSQL(_Options, RunSQL):
    """RunSQL through `CALL migrate_exec`: each statement with a short
    lock_timeout, retried with backoff, so that a statement waiting for its
    lock never queues the traffic behind it; every attempt is in
    `migrate_exec_log`, the whole is the history entry `<migration>.sql<n>`.
    migrate_exec commits after each statement, so the migration needs
    `atomic = False`.  It runs while `migrate` runs: a post-deploy migration
    (whose jobs wait for the deploy) cannot hold it."""

    pg_migrate_kind = "sql"
    allowed = EXEC_OPTIONS

    def __init__(self, sql, reverse_sql=None, state_operations=None, hints=None, elidable=False, **options):
        self._take(options)
        for script in (sql, reverse_sql):
            if script is not None and not isinstance(script, str):
                raise TypeError("SafeRunSQL takes its sql and reverse_sql as one string each (a script), without params")
        super().__init__(sql, reverse_sql, state_operations, hints, elidable)

    def _exec(self, schema_editor, script, link):
        connection = schema_editor.connection
        if connection.in_atomic_block:
            raise history.PgMigrateError(
                "SafeRunSQL runs its statements with CALL migrate_exec, which commits after each one and cannot run "
                "inside the migration's transaction: set atomic = False on the migration."
            )
        options = dict(self.options)
        names, params = _named(options)
        if link is not None:
            names.insert(0, "migration => %s::pg_catalog.text[]")
            params.insert(0, list(link))
        ns = history.schema(connection)
        with connection.cursor() as c:
            c.execute(f"CALL {history._quote(ns)}.migrate_exec({', '.join(['%s'] + names)})", [script] + params)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if not router.allow_migrate(schema_editor.connection.alias, app_label, **self.hints):
            return
        if schema_editor.collect_sql:
            schema_editor.collected_sql.append("-- pg_migrate runs this with CALL migrate_exec (short lock_timeout, retries):")
            return self._run_sql(schema_editor, self.sql)
        connection = schema_editor.connection
        history.require(connection, "SafeRunSQL")
        if history.gate(connection) is not None:
            raise history.PgMigrateError(
                "SafeRunSQL runs while migrate runs, but this migration is post-deploy: its jobs wait for the deploy, "
                "and a statement cannot. Put the statement in a migration of the next release, or queue it as a job."
            )
        link = history.next_link(connection, self.pg_migrate_kind)
        self._exec(schema_editor, self.sql, link)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if self.reverse_sql is None:
            raise NotImplementedError("You cannot reverse this operation")
        if not router.allow_migrate(schema_editor.connection.alias, app_label, **self.hints):
            return
        if schema_editor.collect_sql:
            schema_editor.collected_sql.append("-- pg_migrate runs this with CALL migrate_exec (short lock_timeout, retries):")
            return self._run_sql(schema_editor, self.reverse_sql)
        connection = schema_editor.connection
        history.require(connection, "SafeRunSQL")
        app, link = history.next_link(connection, self.pg_migrate_kind)
        self._exec(schema_editor, self.reverse_sql, None)
        history.unapply_link(connection, app, link)

    def describe(self):
        return "SQL by CALL migrate_exec"
