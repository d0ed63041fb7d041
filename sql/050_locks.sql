-- Lock risk.  migrate_analyze (src/api/analyze.rs) reads the parser's
-- output and the catalog and never executes a statement; migrate_trace
-- (src/api/trace.rs) runs them for real in a subtransaction that is always
-- rolled back.  Names in the script resolve as the caller's session
-- resolves them.

-- Who holds or awaits a lock on a relation that conflicts with a request
-- in `lock_mode`: the sessions such a request would queue behind.
CREATE FUNCTION migrate_blockers(relation regclass, lock_mode text DEFAULT 'AccessExclusiveLock')
RETURNS TABLE (
    pid integer,
    usename name,
    application_name text,
    state text,
    mode text,
    granted boolean,
    xact_age interval,
    state_age interval,
    wait_event text,
    query text)
LANGUAGE plpgsql VOLATILE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    wanted text := pgmigrate.lock_mode(lock_mode);
BEGIN
    RETURN QUERY
    SELECT l.pid, a.usename, a.application_name, a.state, l.mode, l.granted,
           pg_catalog.now() - a.xact_start, pg_catalog.now() - a.state_change,
           a.wait_event::text, a.query
      FROM pg_catalog.pg_locks l
      LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'relation' AND l.relation = migrate_blockers.relation
       AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                          WHERE d.datname = pg_catalog.current_database())
       AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
       AND pgmigrate.lock_conflicts(l.mode, wanted)
     ORDER BY l.granted DESC, a.xact_start NULLS LAST, l.pid;
END
$fn$;

-- Statements registered as planned (migrate_plan): each relation they
-- will lock, with the mode, as migrate_analyze found it.
CREATE SEQUENCE pgmigrate.plan_id_seq;
CREATE TABLE pgmigrate.planned (
    plan_id     bigint      NOT NULL,
    statement   integer     NOT NULL,
    sql         text        NOT NULL,
    command     text        NOT NULL,
    relid       oid         NOT NULL,
    lock_mode   text        NOT NULL,
    note        text,
    owner       oid         NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (plan_id, statement, relid)
);

-- Every relation a queued, waiting, paused or running job, or a planned
-- statement, will lock, and what stands in its way right now.
CREATE VIEW migrate_lock_risk AS
WITH needs AS (
    SELECT 'job'::pg_catalog.text AS source, j.job_id AS id, j.kind AS what, j.relid,
           k.table_lock AS lock_mode, j.state, j.driver_pid
      FROM pgmigrate.jobs j
      JOIN pgmigrate.kinds k ON k.kind OPERATOR(pg_catalog.=) j.kind
     WHERE j.state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'waiting', 'paused', 'running']::pg_catalog.text[])
    UNION ALL
    SELECT 'job', j.job_id, j.kind, j.index_oid, k.table_lock, j.state, j.driver_pid
      FROM pgmigrate.jobs j
      JOIN pgmigrate.kinds k ON k.kind OPERATOR(pg_catalog.=) j.kind
     WHERE j.state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'waiting', 'paused', 'running']::pg_catalog.text[])
       AND k.locks_index AND j.index_oid IS NOT NULL
    UNION ALL
    SELECT 'planned', p.plan_id, p.command, p.relid, p.lock_mode, 'planned', NULL::integer
      FROM pgmigrate.planned p
), here AS (
    SELECT l.relation, l.pid, l.mode, l.granted, a.xact_start
      FROM pg_catalog.pg_locks l
      LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) l.pid
     WHERE l.locktype OPERATOR(pg_catalog.=) 'relation'
       AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                          WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
)
SELECT n.source, n.id, n.what, n.relid::pg_catalog.regclass AS relation, n.lock_mode, n.state,
       ARRAY(SELECT DISTINCT h.pid FROM here h
              WHERE h.relation OPERATOR(pg_catalog.=) n.relid AND h.granted AND coalesce(h.pid, 0) OPERATOR(pg_catalog.<>) coalesce(n.driver_pid, 0)
                AND pgmigrate.lock_conflicts(h.mode, n.lock_mode) ORDER BY h.pid) AS blocking_pids,
       ARRAY(SELECT DISTINCT h.pid FROM here h
              WHERE h.relation OPERATOR(pg_catalog.=) n.relid AND NOT h.granted ORDER BY h.pid) AS waiting_pids,
       (SELECT h.pid FROM here h WHERE h.relation OPERATOR(pg_catalog.=) n.relid AND h.xact_start IS NOT NULL
         ORDER BY h.xact_start, h.pid LIMIT 1) AS oldest_xact_pid,
       (SELECT pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.min(h.xact_start) FROM here h
         WHERE h.relation OPERATOR(pg_catalog.=) n.relid) AS oldest_xact_age,
       EXISTS (SELECT 1 FROM here h
                WHERE h.relation OPERATOR(pg_catalog.=) n.relid AND coalesce(h.pid, 0) OPERATOR(pg_catalog.<>) coalesce(n.driver_pid, 0)
                  AND pgmigrate.lock_conflicts(h.mode, n.lock_mode)) AS would_queue
  FROM needs n;

-- migrate_exec: each attempt of each statement.  The role is kept by OID,
-- so that a dropped role's attempts stay (shown as such) and a new role of
-- the same name does not see them.
CREATE SEQUENCE pgmigrate.exec_id_seq;
CREATE TABLE pgmigrate.exec_attempts (
    attempt_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exec_id       bigint      NOT NULL,
    run_id        bigint,
    statement     integer     NOT NULL,
    sql           text        NOT NULL,
    attempt       integer     NOT NULL,
    outcome       text        NOT NULL,
    sqlstate      text,
    error         text,
    blockers      text,
    started_at    timestamptz NOT NULL,
    duration      interval    NOT NULL,
    lock_timeout  interval    NOT NULL,
    role_oid      oid         NOT NULL,
    pid           integer     NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
    CONSTRAINT exec_attempts_outcome_check
        CHECK (outcome OPERATOR(pg_catalog.=) ANY (ARRAY['succeeded', 'lock_timeout', 'deadlock', 'failed']::pg_catalog.text[]))
);
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.exec_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.exec_id_seq', '');

CREATE VIEW migrate_exec_log AS
SELECT e.exec_id, e.statement, e.attempt, e.outcome, e.started_at, e.duration, e.lock_timeout,
       e.sqlstate, e.error, e.blockers, e.sql, e.run_id,
       COALESCE(r.rolname::pg_catalog.text,
                           pg_catalog.format('(dropped role %s)', e.role_oid)) AS role_name,
       e.pid
  FROM pgmigrate.exec_attempts e
  LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) e.role_oid
 WHERE pg_catalog.pg_has_role(e.role_oid, 'MEMBER');
GRANT SELECT ON migrate_exec_log, migrate_lock_risk TO PUBLIC;

-- CALL migrate_exec(sql, ...): run DDL the safe way.  Each statement runs
-- with a short lock_timeout; when it cannot get its lock in time it is
-- retried after a growing, jittered pause, so it never sits in the lock
-- queue blocking everyone behind it.  Each statement commits on its own;
-- every attempt is in migrate_exec_log.  The internal functions check,
-- run and record; this procedure only commits between them (a procedure
-- that commits cannot pin its search_path, so it holds no expression of
-- its own beyond what is qualified here).
CREATE PROCEDURE migrate_exec(sql text, lock_timeout interval DEFAULT '2s',
                              attempts integer DEFAULT 10, retry_delay interval DEFAULT '1s',
                              migration text[] DEFAULT NULL)
LANGUAGE plpgsql AS $proc$
DECLARE
    ids record;
    r record;
    i integer;
BEGIN
    -- Every statement is parsed and checked before anything runs.
    SELECT * INTO ids FROM pgmigrate._exec_begin(sql, lock_timeout, attempts, retry_delay, migration);
    COMMIT;
    FOR i IN 1 .. ids.statements LOOP
        LOOP
            SELECT * INTO r FROM pgmigrate._exec_attempt(ids.exec_id, i);
            COMMIT;
            IF r.failed THEN
                PERFORM pgmigrate._exec_raise(ids.exec_id);
            END IF;
            EXIT WHEN r.done;
            PERFORM pg_catalog.pg_sleep(r.pause);
        END LOOP;
    END LOOP;
    PERFORM pgmigrate._exec_finish(ids.exec_id);
    COMMIT;
END
$proc$;
