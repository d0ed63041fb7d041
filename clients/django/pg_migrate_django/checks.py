"""The startup check: every migration on disk is applied, according to
pg_migrate's history (it only reads).

As a system check it runs with `manage.py check --database default` (Django
runs database checks only when asked).  A web process does not run system
checks under WSGI or ASGI: call `require_applied()` in wsgi.py / asgi.py.
"""

from django.core import checks
from django.db import connections
from django.db.migrations.loader import MigrationLoader

from . import history

CHECK_ID = "pg_migrate.E001"


def missing(database="default"):
    """(app, name) of the migrations on disk that pg_migrate does not have
    as applied, in order; None if pg_migrate is not installed there."""
    connection = connections[database]
    ns = history.schema(connection)
    if ns is None:
        return None
    with connection.cursor() as c:
        c.execute(
            f"SELECT app, name FROM {history._quote(ns)}.migrate_history"
            " WHERE status OPERATOR(pg_catalog.=) 'applied'"
        )
        applied = set(c.fetchall())
    # Without a connection the loader uses squashed migrations in place of
    # those they replace; either side counts as applied.
    loader = MigrationLoader(None, ignore_no_migrations=True)
    out = []
    for key in sorted(loader.graph.nodes):
        if key in applied:
            continue
        migration = loader.graph.nodes[key]
        replaced = getattr(migration, "replaces", None) or []
        if replaced and all(tuple(r) in applied for r in replaced):
            continue
        out.append(key)
    return out


def _message(keys):
    names = ", ".join(f"{a}.{n}" for a, n in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return f"{len(keys)} migration(s) on disk are not applied according to pg_migrate: {names}"


@checks.register(checks.Tags.database)
def applied_check(app_configs=None, databases=None, **kwargs):
    # `migrate` runs the database checks before it migrates: what it is
    # about to apply is not missing.
    if history.migrating:
        return []
    errors = []
    for database in databases or []:
        keys = missing(database)
        if keys is None:
            errors.append(
                checks.Warning(
                    f"pg_migrate is not installed in database {database!r}: the migrations cannot be checked.",
                    hint="CREATE EXTENSION pg_migrate there (the server needs shared_preload_libraries = 'pg_migrate').",
                    id="pg_migrate.W001",
                )
            )
        elif keys:
            errors.append(
                checks.Error(
                    _message(keys),
                    hint="Run manage.py migrate against this database (or wait for the deploy that runs it) before this version serves.",
                    id=CHECK_ID,
                )
            )
    return errors


def require_applied(database="default"):
    """Raise at process start when a migration on disk is not applied
    (pg_migrate_django.history.PgMigrateError, with the list)."""
    keys = missing(database)
    if keys is None:
        raise history.PgMigrateError(
            f"pg_migrate is not installed in database {database!r}: the migrations cannot be checked."
        )
    if keys:
        raise history.PgMigrateError(_message(keys) + f" ({CHECK_ID})")
