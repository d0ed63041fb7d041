"""Every migration `manage.py migrate` applies or unapplies, recorded in
pg_migrate's history.

A run is opened (`migrate_start`) when Django starts a migration, and closed
(`migrate_finish`) where Django records it as applied: inside the
migration's own transaction when it has one, so the migration, Django's row
and pg_migrate's history commit or roll back together.  A migration that
raises has its run closed as failed, with the error.  An unapplied migration
is recorded with `migrate_unapply`.

Every call names the extension's schema, found in the catalog, so nothing on
the connection's search_path can stand in for pg_migrate's functions.
"""

import hashlib
import re
import sys
import time

from django.db.migrations.recorder import MigrationRecorder

_installed = False
# True while this process runs `manage.py migrate`.
migrating = False
# Open runs: (database alias, app, name) -> run id.
_runs = {}
# Database alias -> the extension's schema (None: not installed there).
_schemas = {}
_warned = set()


class PgMigrateError(Exception):
    """What pg_migrate cannot do here, and what to do instead."""


class PgMigrateDenied(PgMigrateError):
    """The database role may not write pg_migrate's history."""


# The migration Django is applying or unapplying now, per database alias:
# (app, name, {kind: operations of that kind so far}, gate or None).
_current = {}

# The history entry that opens the gate of a post-deploy migration's jobs.
DEPLOYED = "{name}.deployed"


def deploy_gate(migration):
    """(app, name) of the history entry a post-deploy migration's jobs wait
    for, or None for a migration that is not post-deploy."""
    if getattr(migration, "post_deploy", False):
        return (migration.app_label, DEPLOYED.format(name=migration.name))
    return None


def _quote(name):
    return '"' + name.replace('"', '""') + '"'


def schema(connection):
    """The schema pg_migrate is installed in, or None (once warned)."""
    if connection.vendor != "postgresql":
        return None
    alias = connection.alias
    if alias not in _schemas:
        with connection.cursor() as c:
            c.execute(
                "SELECT n.nspname FROM pg_catalog.pg_extension e"
                " JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace"
                " WHERE e.extname OPERATOR(pg_catalog.=) 'pg_migrate'"
            )
            row = c.fetchone()
        _schemas[alias] = row[0] if row else None
    if _schemas[alias] is None and alias not in _warned:
        _warned.add(alias)
        sys.stderr.write(
            f"pg_migrate: the extension is not installed in database {alias!r} "
            f"({connection.settings_dict.get('NAME')}): migrations are not recorded in its history. "
            "Run CREATE EXTENSION pg_migrate there (the server needs shared_preload_libraries = 'pg_migrate').\n"
        )
    return _schemas[alias]


def call(connection, function, args, params, required=False):
    """SELECT schema.function(args) with params; its one value, or None if
    pg_migrate is not installed in that database (an error if `required`)."""
    ns = schema(connection)
    if ns is None:
        if required:
            raise PgMigrateError(
                f"pg_migrate is not installed in database {connection.alias!r} "
                f"({connection.settings_dict.get('NAME')}), and {function} needs it: "
                "run CREATE EXTENSION pg_migrate there (the server needs shared_preload_libraries = 'pg_migrate')."
            )
        return None
    try:
        with connection.cursor() as c:
            c.execute(f"SELECT {_quote(ns)}.{function}({args})", params)
            row = c.fetchone()
    except Exception as e:
        if sqlstate(e) == "42501":
            functions = ["migrate_start", "migrate_finish", "migrate_record", "migrate_unapply"]
            if function not in functions:
                functions.append(function)
            raise PgMigrateDenied(
                f"pg_migrate: role {connection.settings_dict.get('USER')!r} may not record migrations "
                f"in pg_migrate's history ({e}). Grant it, as the extension's owner: GRANT EXECUTE ON FUNCTION "
                + ", ".join(f"{_quote(ns)}.{f}" for f in functions)
                + f" TO {_quote(connection.settings_dict.get('USER') or '')};"
            ) from e
        raise
    return row[0] if row else None


def checksum(migration):
    """sha256 of the migration's file, as pg_migrate keeps it."""
    module = sys.modules.get(type(migration).__module__)
    path = getattr(module, "__file__", None)
    if not path:
        return None
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def description(migration):
    ops = [op.describe() for op in migration.operations]
    text = "; ".join(ops)
    return text[:500] if text else None


def entry(connection, ns, app, name):
    """(status, checksum) of a migration in pg_migrate's history, or
    (None, None)."""
    with connection.cursor() as c:
        c.execute(
            f"SELECT status, checksum FROM {_quote(ns)}.migrate_history"
            " WHERE app OPERATOR(pg_catalog.=) %s AND name OPERATOR(pg_catalog.=) %s",
            [app, name],
        )
        row = c.fetchone()
    return row if row else (None, None)


def started(connection, migration):
    """Django starts applying `migration`: open its run."""
    app, name = migration.app_label, migration.name
    ns = schema(connection)
    if ns is None:
        return
    sha = checksum(migration)
    status, recorded = entry(connection, ns, app, name)
    # Django decides what to apply.  pg_migrate refuses a migration it has
    # as applied, or whose file changed since its last run; when Django
    # runs it all the same (its row was deleted by hand; the file was fixed
    # after a failure or a rollback, as one does), the run goes ahead and
    # the history marks it as forced.
    force = status == "applied" or (
        status in ("failed", "unapplied") and recorded is not None and recorded != sha
    )
    run = call(
        connection,
        "migrate_start",
        "%s, %s, checksum => %s, description => %s, force => %s",
        [app, name, sha, description(migration), force],
    )
    _runs[(connection.alias, app, name)] = run
    _current[connection.alias] = (app, name, {}, deploy_gate(migration))


def require(connection, what):
    """Raise the way out if pg_migrate is not installed in that database."""
    if schema(connection) is None:
        raise PgMigrateError(
            f"{what} needs pg_migrate, which is not installed in database {connection.alias!r} "
            f"({connection.settings_dict.get('NAME')}): run CREATE EXTENSION pg_migrate there "
            "(the server needs shared_preload_libraries = 'pg_migrate')."
        )


def unapplying(connection, migration):
    """Django starts reversing `migration`: its operations run last to
    first, so each kind counts down from how many it has."""
    counts = {}
    for op in migration.operations:
        kind = getattr(op, "pg_migrate_kind", None)
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
    _current[connection.alias] = (migration.app_label, migration.name, {k: -(n + 1) for k, n in counts.items()}, None)


def next_link(connection, kind):
    """The history entry (app, name) of the next operation of this `kind`
    in the migration Django runs now: `<migration>.<kind><n>`, n counting
    the operations of that kind from the first (backwards: from the
    last)."""
    current = _current.get(connection.alias)
    if current is None:
        raise PgMigrateError(
            "pg_migrate's operations run inside manage.py migrate, with pg_migrate_django in INSTALLED_APPS "
            "(its migrate command knows which migration runs)."
        )
    app, name, counts, _ = current
    n = counts.get(kind, 0)
    # Forwards: 1, 2, ...; backwards (stored negative): n, n - 1, ...
    counts[kind] = n + 1
    return (app, f"{name}.{kind}{n + 1 if n >= 0 else -(n + 1)}")


# The jobs a migration may wait for, cancel or roll back: those of roles the
# connection's role is a member of.  Another role's job (on the same table,
# or linked to a look-alike history entry) neither holds nor is touched.
MINE = "pg_catalog.pg_has_role({p}owner::pg_catalog.oid, 'MEMBER')"


def gate(connection):
    """The history entry the jobs of the migration Django applies now wait
    for (a post-deploy migration's), or None."""
    current = _current.get(connection.alias)
    return current[3] if current else None


def pending_jobs(connection, table):
    """Jobs that migrations queued on `table` and that have not ended, in
    the order they were queued: a later step on the table waits for them."""
    ns = schema(connection)
    with connection.cursor() as c:
        c.execute(
            f"SELECT p.job_id FROM {_quote(ns)}.migrate_progress p"
            " WHERE p.parent_job IS NULL AND p.migration IS NOT NULL AND " + MINE.format(p="p.") +
            " AND p.state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'running', 'waiting', 'paused'])"
            " AND p.relation OPERATOR(pg_catalog.=) ("
            "   SELECT pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||) '.'"
            "          OPERATOR(pg_catalog.||) pg_catalog.quote_ident(r.relname)"
            "     FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) r.relnamespace"
            "    WHERE r.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(%s))"
            " ORDER BY p.job_id",
            [table],
        )
        return [r[0] for r in c.fetchall()]


def index_oid(connection, index):
    """The oid of the index named `index` (found on the connection's
    search_path), or None."""
    with connection.cursor() as c:
        c.execute(
            "SELECT i.oid FROM pg_catalog.pg_class i"
            " WHERE i.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(pg_catalog.quote_ident(%s))"
            " AND i.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['i', 'I']::pg_catalog.\"char\"[])",
            [index],
        )
        row = c.fetchone()
    return row[0] if row else None


def drop_index_if_there(connection, index):
    """Queue a drop of the index named `index` if it exists."""
    oid = index_oid(connection, index)
    if oid is None:
        return None
    job = call(connection, "migrate_drop_index", "%s::pg_catalog.oid::pg_catalog.regclass", [oid], required=True)
    note_job(connection, job)
    return job


def has_constraint(connection, table, name):
    with connection.cursor() as c:
        c.execute(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint"
            " WHERE conrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(pg_catalog.quote_ident(%s))"
            " AND conname OPERATOR(pg_catalog.=) %s)",
            [table, name],
        )
        return c.fetchone()[0]


def column_type(connection, table, column):
    """The type of the column (its name, as format_type writes it)."""
    with connection.cursor() as c:
        c.execute(
            "SELECT pg_catalog.format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute a"
            " WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(pg_catalog.quote_ident(%s))"
            " AND a.attname OPERATOR(pg_catalog.=) %s AND NOT a.attisdropped",
            [table, column],
        )
        row = c.fetchone()
    return row[0] if row else None


def type_name(connection, type_sql):
    """A type written in SQL (varchar(20)) as column_type names it."""
    with connection.cursor() as c:
        c.execute("SELECT pg_catalog.format_type(pg_catalog.to_regtype(%s), NULL)", [type_sql])
        return c.fetchone()[0]


def sqlstate(error):
    """The SQLSTATE of a database error Django raised, or None."""
    return getattr(getattr(error, "__cause__", None), "sqlstate", None)


def last_job(connection, migration):
    """The last job queued with this history entry (`app.name`), or None."""
    ns = schema(connection)
    with connection.cursor() as c:
        c.execute(
            f"SELECT pg_catalog.max(job_id) FROM {_quote(ns)}.migrate_progress"
            " WHERE migration OPERATOR(pg_catalog.=) %s AND parent_job IS NULL AND " + MINE.format(p=""),
            [migration],
        )
        return c.fetchone()[0]


def note_job(connection, job):
    sys.stdout.write(f"\n  pg_migrate job {job} queued; manage.py pgmigrate_wait {job} follows it")
    sys.stdout.flush()


def undo_link(connection, kind):
    """Reverse the next operation of this kind: cancel its job if it has
    not ended, and record its history entry as reversed."""
    app, link = next_link(connection, kind)
    ns = schema(connection)
    if ns is None:
        return
    with connection.cursor() as c:
        c.execute(
            f"SELECT job_id FROM {_quote(ns)}.migrate_progress"
            " WHERE migration OPERATOR(pg_catalog.=) %s AND parent_job IS NULL AND " + MINE.format(p="") +
            " AND state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'running', 'waiting', 'paused'])",
            [f"{app}.{link}"],
        )
        jobs = [r[0] for r in c.fetchall()]
    for job in jobs:
        call(connection, "migrate_cancel", "%s", [job])
    unapply_link(connection, app, link)


def unapply_link(connection, app, link):
    """Record an operation's history entry as reversed (if it has one)."""
    ns = schema(connection)
    if ns is not None and entry(connection, ns, app, link)[0] in ("applied", "failed"):
        call(connection, "migrate_unapply", "%s, %s, reason => %s", [app, link, "manage.py migrate"])


FINAL = ("succeeded", "failed", "cancelled")


def progress(connection, jobs):
    """{job: (state, percent, eta, wait_reason, error)} of the jobs."""
    ns = schema(connection)
    with connection.cursor() as c:
        c.execute(
            f"SELECT job_id, state, percent, eta::pg_catalog.text, wait_reason, error, relation, kind"
            f" FROM {_quote(ns)}.migrate_progress WHERE job_id OPERATOR(pg_catalog.=) ANY (%s)",
            [list(jobs)],
        )
        return {r[0]: r[1:] for r in c.fetchall()}


# How migrate_progress.wait_reason begins for a job held by a migration gate
# (a post-deploy migration's jobs, before the deploy).
GATED = "waits for migration "


def wait(connection, jobs, out=sys.stdout, every=1.0, timeout=None, held_ok=False):
    """Follow the jobs until each has ended, a line per job and second;
    the jobs that did not succeed (an unknown job counts as not).  With
    `held_ok`, a job that waits for a migration (a deploy's gate) is not
    waited for, and does not count as not succeeded."""
    jobs = [jobs] if isinstance(jobs, int) else list(jobs)
    require(connection, "pgmigrate_wait")
    start = time.monotonic()
    shown = {}

    def behind(row):
        m = re.match(r"waits for job (\d+)\b", row[3] or "")
        return int(m.group(1)) if m else None

    def held(row, seen=()):
        # Held by a migration gate, or queued behind a job that is.
        if not held_ok or row is None or row[0] != "queued":
            return False
        if (row[3] or "").startswith(GATED):
            return True
        b = behind(row)
        return b in now and b not in seen and held(now[b], seen + (b,))

    def stuck(row, seen=()):
        # Queued behind a job that failed or was cancelled (or behind one
        # that is): it cannot start until someone retries or cancels.
        if row is None or row[0] != "queued":
            return False
        if re.match(r"waits for job \d+, which (failed|was cancelled)", row[3] or ""):
            return True
        b = behind(row)
        return b in now and b not in seen and stuck(now[b], seen + (b,))

    while True:
        now = progress(connection, jobs)
        for job in jobs:
            row = now.get(job)
            if row is None:
                line = f"job {job}: no such job (or not yours to see)"
            else:
                state, percent, eta, reason, error, relation, kind = row
                line = f"job {job} ({kind} of {relation}): {state}"
                if percent is not None and state not in FINAL:
                    line += f" {percent}%"
                if eta and state not in FINAL:
                    line += f", about {eta} left"
                if reason and state not in FINAL:
                    line += f"; {reason}"
                if error and state != "succeeded":
                    line += f": {error}"
                if held(row):
                    line += " (held for a post-deploy gate: not waited for; manage.py pgmigrate_deployed opens it)"
            if shown.get(job) != line:
                out.write(line + "\n")
                out.flush()
                shown[job] = line
        done = [j for j in jobs if now.get(j) is None or now[j][0] in FINAL or held(now[j]) or stuck(now[j])]
        if len(done) == len(jobs) or (timeout is not None and time.monotonic() - start > timeout):
            return [j for j in jobs if now.get(j) is None or (now[j][0] != "succeeded" and not held(now[j]))]
        time.sleep(every)


def failed(connection, error):
    """The migrate command raised: close every run still open as failed."""
    for key in [k for k in _runs if k[0] == connection.alias]:
        run = _runs.pop(key)
        try:
            call(connection, "migrate_finish", "%s, 'failed', %s", [run, str(error)[:2000]])
        except Exception as e:  # the original error matters more
            sys.stderr.write(f"pg_migrate: could not record run {run} as failed: {e}\n")


def _record_applied(self, app, name):
    _original_applied(self, app, name)
    run = _runs.pop((self.connection.alias, app, name), None)
    if run is not None:
        call(self.connection, "migrate_finish", "%s", [run])
    elif schema(self.connection) is not None:
        # Recorded without a start Django announced (a replaced migration
        # of a squash, or a caller of its own).
        if not call(self.connection, "migrate_applied", "%s, %s", [app, name]):
            call(self.connection, "migrate_record", "%s, %s", [app, name])


def _record_unapplied(self, app, name):
    _original_unapplied(self, app, name)
    if schema(self.connection) is None:
        return
    if call(self.connection, "migrate_applied", "%s, %s", [app, name]):
        call(self.connection, "migrate_unapply", "%s, %s, reason => %s", [app, name, "manage.py migrate"])
    # A post-deploy migration reversed: its gate closes again.
    deployed = DEPLOYED.format(name=name)
    if call(self.connection, "migrate_applied", "%s, %s", [app, deployed]):
        call(self.connection, "migrate_unapply", "%s, %s, reason => %s", [app, deployed, "manage.py migrate"])


_original_applied = MigrationRecorder.record_applied
_original_unapplied = MigrationRecorder.record_unapplied


def install():
    """Hook Django's recorder (once)."""
    global _installed
    if _installed:
        return
    MigrationRecorder.record_applied = _record_applied
    MigrationRecorder.record_unapplied = _record_unapplied
    _installed = True
