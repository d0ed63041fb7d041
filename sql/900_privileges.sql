-- Who may do what.  Reading is open: the views and the startup check are
-- for every role.  Writing history is a deliberate grant:
--
--     GRANT EXECUTE ON FUNCTION migrate_start, migrate_finish, migrate_record,
--                               migrate_unapply, migrate_import_django TO deployer;
REVOKE EXECUTE ON FUNCTION migrate_start, migrate_finish, migrate_record,
                           migrate_unapply, migrate_import_django FROM PUBLIC;

COMMENT ON FUNCTION migrate_start IS
    'pg_migrate: start a run of migration (app, name); returns the run id for migrate_finish';
COMMENT ON FUNCTION migrate_finish IS
    'pg_migrate: finish a run as applied or failed';
COMMENT ON FUNCTION migrate_record IS
    'pg_migrate: record in one call a migration that was applied by other means';
COMMENT ON FUNCTION migrate_unapply IS
    'pg_migrate: record that an applied migration was reversed';
COMMENT ON FUNCTION migrate_applied IS
    'pg_migrate: true when migration (app, name) is applied';
COMMENT ON FUNCTION migrate_require IS
    'pg_migrate: raise SQLSTATE 55000 unless migration (app, name) is applied (application startup check)';
COMMENT ON FUNCTION migrate_import_django IS
    'pg_migrate: import Django''s django_migrations rows as applied migrations; returns how many were new';

-- Jobs.  Any role may queue a backfill of a table it may update (the job
-- runs with that role's rights); only the job's owner, members of that
-- role and superusers may see its SQL or control it.  The procedures call
-- internal functions in schema pgmigrate, so every role may look the
-- schema up; its tables stay closed.
GRANT USAGE ON SCHEMA pgmigrate TO PUBLIC;

-- Internal functions are closed to PUBLIC, but for two groups that other
-- roles' sessions must be able to call:
--   * the steps of the procedures migrate_run, migrate_wait and
--     migrate_exec, which commit and so run with their caller's rights:
--     each acts only on a job the caller may control, or on a migrate_exec
--     run that this very session began as this role;
--   * what the public views call (functions in a view run as the role
--     reading it): read-only facts (is a backend alive, how far is its
--     index build, do two lock modes conflict, is a role still there).
-- The catalog contract test (tests/pg_regress/sql/catalog.sql) lists who
-- may call what, so that no function slips in open.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgmigrate FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    pgmigrate._run_begin(bigint), pgmigrate._run_step(bigint), pgmigrate._run_interrupted(bigint),
    pgmigrate._run_failed(bigint, text, text), pgmigrate._job_outcome(bigint),
    pgmigrate._wait_poll(bigint, boolean), pgmigrate._wait_timeout(bigint, interval),
    pgmigrate._exec_begin(text, interval, integer, interval, text[]),
    pgmigrate._exec_attempt(bigint, integer), pgmigrate._exec_finish(bigint),
    pgmigrate._exec_raise(bigint), pgmigrate._follow(bigint, integer),
    pgmigrate.backend_alive(integer, timestamptz), pgmigrate.build_progress(integer, timestamptz),
    pgmigrate.gate_closed(bigint), pgmigrate.shard_builds(bigint),
    pgmigrate.lock_conflicts(text, text), pgmigrate.lock_mode(text), pgmigrate.role_label(name, oid)
  TO PUBLIC;

COMMENT ON FUNCTION migrate_backfill IS
    'pg_migrate: queue a chunked backfill (UPDATE in batches, each committed with the job''s cursor); returns the job id';
COMMENT ON FUNCTION migrate_add_constraint IS
    'pg_migrate: queue a job that adds a CHECK, FOREIGN KEY, UNIQUE or PRIMARY KEY constraint without a long lock (NOT VALID then VALIDATE, or a concurrent unique index then USING INDEX); returns the job id';
COMMENT ON FUNCTION migrate_alter_type IS
    'pg_migrate: queue a job that changes a column''s type by expand and contract (shadow column, trigger, backfill, concurrent indexes, a short cut-over, contract); returns the job id';
COMMENT ON FUNCTION migrate_complete IS
    'pg_migrate: let a type change held after its cut-over (complete => ''manual'') drop the old column';
COMMENT ON FUNCTION migrate_rollback IS
    'pg_migrate: undo a type change, before its cut-over (drop what it added) or after it (change the column back the same way)';
COMMENT ON FUNCTION migrate_pause IS 'pg_migrate: stop a job after its current batch';
COMMENT ON FUNCTION migrate_resume IS 'pg_migrate: queue a paused job again';
COMMENT ON FUNCTION migrate_cancel IS 'pg_migrate: end a job for good';
COMMENT ON FUNCTION migrate_retry IS 'pg_migrate: queue a failed or cancelled job again, from the batch that failed';
COMMENT ON PROCEDURE migrate_run IS 'pg_migrate: drive a job in this session, committing after every batch';
COMMENT ON PROCEDURE migrate_wait IS 'pg_migrate: wait for a job to finish, reporting progress';
COMMENT ON FUNCTION migrate_estimate IS
    'pg_migrate: estimate a backfill (rows it would change, duration, WAL) from a sample update that is rolled back';

-- Index jobs.  The caller must own the table (as for CREATE INDEX); the
-- statement runs in a background worker as the caller's role.
COMMENT ON FUNCTION migrate_create_index IS
    'pg_migrate: queue a CREATE INDEX CONCURRENTLY that a background worker runs, cleans up and retries; returns the job id';
COMMENT ON FUNCTION migrate_drop_index IS
    'pg_migrate: queue a DROP INDEX CONCURRENTLY that a background worker runs; returns the job id';
COMMENT ON FUNCTION migrate_reindex IS
    'pg_migrate: queue a REINDEX INDEX CONCURRENTLY, once or on a cron schedule; returns the job id';

-- Lock risk.  Analysis, trace and the views are for every role: they see
-- only what the caller may see (pg_locks, pg_stat_activity), and a trace
-- or migrate_exec runs the caller's statements with the caller's rights.
COMMENT ON FUNCTION migrate_analyze IS
    'pg_migrate: what each statement of a script locks, rewrites and scans, its risk and a safer recipe, without executing anything';
COMMENT ON FUNCTION migrate_trace IS
    'pg_migrate: run a script in a subtransaction that is always rolled back and report the locks each statement took (takes real locks)';
COMMENT ON PROCEDURE migrate_exec IS
    'pg_migrate: run DDL statement by statement with a short lock_timeout, retrying with backoff; every attempt in migrate_exec_log';
COMMENT ON FUNCTION migrate_blockers IS
    'pg_migrate: sessions holding or awaiting locks on a relation that conflict with a lock mode';
COMMENT ON FUNCTION migrate_plan IS
    'pg_migrate: register a planned script; the relations it will lock show in migrate_lock_risk; returns the plan id';
COMMENT ON FUNCTION migrate_unplan IS
    'pg_migrate: remove a planned script from migrate_lock_risk; returns how many relations it had';
