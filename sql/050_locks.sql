-- Lock risk.  migrate_analyze reads the parser's output and the catalog
-- and never executes a statement; migrate_trace runs them for real in a
-- subtransaction that is always rolled back.  Neither pins search_path:
-- names in the script resolve as the caller's session resolves them, so
-- every name here is qualified.

CREATE FUNCTION migrate_analyze(sql text)
RETURNS TABLE (
    statement integer,
    statement_sql text,
    command text,
    relation regclass,
    lock_mode text,
    blocks_reads boolean,
    blocks_writes boolean,
    rewrites boolean,
    scans boolean,
    in_transaction boolean,
    table_bytes bigint,
    row_estimate bigint,
    estimated_duration interval,
    risk text,
    reason text,
    recipe text)
LANGUAGE sql VOLATILE STRICT PARALLEL SAFE
AS $fn$
    SELECT a.statement, a.sql, a.command, a.relation::pg_catalog.regclass, a.lock_mode,
           a.blocks_reads, a.blocks_writes, a.rewrites, a.scans, a.in_transaction,
           a.table_bytes, a.row_estimate,
           pg_catalog.make_interval(secs => pg_catalog.round(a.estimated_seconds::numeric, 1)::float8),
           a.risk, a.reason, a.recipe
      FROM pgmigrate.analyze_script($1) a
$fn$;

CREATE FUNCTION migrate_trace(sql text, lock_timeout interval DEFAULT '100ms',
                              statement_timeout interval DEFAULT '10s')
RETURNS TABLE (
    statement integer,
    statement_sql text,
    relation regclass,
    lock_mode text,
    modes text[],
    rewrites boolean,
    in_transaction boolean,
    error_sqlstate text,
    error text,
    duration interval)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $fn$
    SELECT t.statement, t.sql, t.relation::pg_catalog.regclass, t.lock_mode, t.modes,
           t.rewrites, t.in_transaction, t.error_sqlstate, t.error,
           pg_catalog.make_interval(secs => t.ms / 1000.0)
      FROM pgmigrate.trace_script($1, $2, $3) t
$fn$;

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
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
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
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_id, statement, relid)
);

-- Every relation a queued, waiting, paused or running job, or a planned
-- statement, will lock, and what stands in its way right now.
CREATE VIEW migrate_lock_risk AS
WITH needs AS (
    SELECT 'job'::text AS source, j.job_id AS id, j.kind AS what, j.relid,
           CASE j.kind WHEN 'backfill' THEN 'RowExclusiveLock' ELSE 'ShareUpdateExclusiveLock' END AS lock_mode,
           j.state, j.driver_pid
      FROM pgmigrate.jobs j
     WHERE j.state IN ('queued', 'waiting', 'paused', 'running')
    UNION ALL
    SELECT 'job', j.job_id, j.kind, j.index_oid, 'ShareUpdateExclusiveLock', j.state, j.driver_pid
      FROM pgmigrate.jobs j
     WHERE j.state IN ('queued', 'waiting', 'paused', 'running')
       AND j.kind IN ('drop_index', 'reindex') AND j.index_oid IS NOT NULL
    UNION ALL
    SELECT 'planned', p.plan_id, p.command, p.relid, p.lock_mode, 'planned', NULL::integer
      FROM pgmigrate.planned p
), here AS (
    SELECT l.relation, l.pid, l.mode, l.granted, a.xact_start
      FROM pg_catalog.pg_locks l
      LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'relation'
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                          WHERE d.datname = pg_catalog.current_database())
)
SELECT n.source, n.id, n.what, n.relid::regclass AS relation, n.lock_mode, n.state,
       ARRAY(SELECT DISTINCT h.pid FROM here h
              WHERE h.relation = n.relid AND h.granted AND h.pid IS DISTINCT FROM n.driver_pid
                AND pgmigrate.lock_conflicts(h.mode, n.lock_mode) ORDER BY h.pid) AS blocking_pids,
       ARRAY(SELECT DISTINCT h.pid FROM here h
              WHERE h.relation = n.relid AND NOT h.granted ORDER BY h.pid) AS waiting_pids,
       (SELECT h.pid FROM here h WHERE h.relation = n.relid AND h.xact_start IS NOT NULL
         ORDER BY h.xact_start, h.pid LIMIT 1) AS oldest_xact_pid,
       (SELECT pg_catalog.now() - min(h.xact_start) FROM here h
         WHERE h.relation = n.relid) AS oldest_xact_age,
       EXISTS (SELECT 1 FROM here h
                WHERE h.relation = n.relid AND h.pid IS DISTINCT FROM n.driver_pid
                  AND pgmigrate.lock_conflicts(h.mode, n.lock_mode)) AS would_queue
  FROM needs n;

-- migrate_exec: each attempt of each statement.
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
    role_name     name        NOT NULL,
    pid           integer     NOT NULL DEFAULT pg_backend_pid(),
    CONSTRAINT exec_attempts_outcome_check
        CHECK (outcome IN ('succeeded', 'lock_timeout', 'deadlock', 'failed'))
);
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.exec_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.exec_id_seq', '');

CREATE VIEW migrate_exec_log AS
SELECT e.exec_id, e.statement, e.attempt, e.outcome, e.started_at, e.duration, e.lock_timeout,
       e.sqlstate, e.error, e.blockers, e.sql, e.run_id, e.role_name, e.pid
  FROM pgmigrate.exec_attempts e
 WHERE pg_catalog.pg_has_role(e.role_name, 'MEMBER');

-- Who holds what a statement needs, in one line (for the attempt log).
CREATE FUNCTION pgmigrate._exec_blockers(stmt text) RETURNS text
LANGUAGE sql VOLATILE
AS $fn$
    SELECT pg_catalog.string_agg(DISTINCT
               pg_catalog.format('pid %s (%s%s, %s on %s%s)', l.pid,
                   coalesce(nullif(a.application_name, ''), 'no application_name'),
                   CASE WHEN a.xact_start IS NOT NULL
                        THEN ', transaction ' || pg_catalog.date_trunc('second', pg_catalog.now() - a.xact_start)::text || ' old'
                        ELSE '' END,
                   l.mode, p.relation::pg_catalog.regclass::text,
                   CASE WHEN l.granted THEN '' ELSE ', waiting' END), '; ')
      FROM pgmigrate.analyze_script(stmt) p
      JOIN pg_catalog.pg_locks l ON l.locktype = 'relation' AND l.relation = p.relation
      LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
     WHERE l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                          WHERE d.datname = pg_catalog.current_database())
       AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
       AND pgmigrate.lock_conflicts(l.mode, p.lock_mode)
$fn$;

-- CALL migrate_exec(sql, ...): run DDL the safe way.  Each statement runs
-- with a short lock_timeout; when it cannot get its lock in time it is
-- retried after a growing, jittered pause, so it never sits in the lock
-- queue blocking everyone behind it.  Each statement commits on its own;
-- every attempt is in migrate_exec_log.
CREATE PROCEDURE migrate_exec(sql text, lock_timeout interval DEFAULT '2s',
                              attempts integer DEFAULT 10, retry_delay interval DEFAULT '1s',
                              migration text[] DEFAULT NULL)
LANGUAGE plpgsql AS $proc$
DECLARE
    ids record;
    s record;
    n integer;
    t0 timestamptz;
    outcome text;
    st text;
    msg text;
    det text;
    hnt text;
    blk text;
    pause float8;
BEGIN
    -- Every statement is parsed and checked before anything runs.
    PERFORM pgmigrate._exec_statements(sql);
    SELECT * INTO ids FROM pgmigrate._exec_begin(lock_timeout, attempts, retry_delay, migration);
    COMMIT;
    FOR s IN SELECT * FROM pgmigrate._exec_statements(sql) LOOP
        n := 0;
        LOOP
            n := n + 1;
            t0 := pg_catalog.clock_timestamp();
            outcome := 'succeeded';
            st := NULL; msg := NULL; det := NULL; hnt := NULL; blk := NULL;
            PERFORM pg_catalog.set_config('lock_timeout',
                (extract(epoch FROM lock_timeout) * 1000)::bigint::text || 'ms', true);
            BEGIN
                EXECUTE s.sql;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                        det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
                outcome := CASE st WHEN '55P03' THEN 'lock_timeout' WHEN '40P01' THEN 'deadlock'
                                   ELSE 'failed' END;
            END;
            PERFORM pg_catalog.set_config('lock_timeout', '0', true);
            IF outcome IN ('lock_timeout', 'deadlock') THEN
                BEGIN
                    blk := pgmigrate._exec_blockers(s.sql);
                EXCEPTION WHEN OTHERS THEN
                    blk := NULL;
                END;
            END IF;
            PERFORM pgmigrate._exec_record(ids.exec_id, ids.run_id, s.statement, s.sql, n, outcome,
                                           st, msg, blk, t0, lock_timeout);
            IF outcome = 'succeeded' THEN
                COMMIT;
                EXIT;
            END IF;
            IF outcome = 'failed' OR n >= attempts THEN
                IF ids.run_id IS NOT NULL THEN
                    PERFORM pgmigrate._exec_finish(ids.run_id, false,
                        pg_catalog.format('statement %s: %s', s.statement, msg));
                END IF;
                COMMIT;
                IF outcome = 'failed' THEN
                    RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg,
                        DETAIL = coalesce(nullif(det, ''), pg_catalog.format('In statement %s of the script.', s.statement)),
                        HINT = coalesce(nullif(hnt, ''), 'Statements before it are committed; see migrate_exec_log.');
                END IF;
                RAISE EXCEPTION USING ERRCODE = st,
                    MESSAGE = pg_catalog.format('statement %s could not get its lock in %s attempts', s.statement, n),
                    DETAIL = pg_catalog.format('Each attempt gave up after lock_timeout %s ms. Last in the way: %s.',
                                               (extract(epoch FROM lock_timeout) * 1000)::bigint,
                                               coalesce(blk, 'nobody by the time it looked')),
                    HINT = 'Statements before it are committed. End the blocking transaction (pg_terminate_backend) or retry later; migrate_exec_log has every attempt.';
            END IF;
            COMMIT;
            -- 1, 2, 4, ... times retry_delay, at most 1 minute, jittered
            -- by +-25% so that two deployments do not retry in step.
            pause := least(extract(epoch FROM retry_delay) * power(2, n - 1), 60)
                     * (0.75 + 0.5 * pg_catalog.random());
            PERFORM pg_catalog.pg_sleep(pause);
        END LOOP;
    END LOOP;
    IF ids.run_id IS NOT NULL THEN
        PERFORM pgmigrate._exec_finish(ids.run_id, true, NULL);
        COMMIT;
    END IF;
END
$proc$;
