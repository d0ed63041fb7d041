-- Jobs: work that background workers drive.  A backfill runs in batches,
-- each committed together with the job's cursor (CALL migrate_run can
-- drive it too); an index job runs one CREATE INDEX, DROP INDEX or REINDEX
-- CONCURRENTLY as a top-level statement of a worker.

-- Every kind of job this version runs, with what the views and the claim
-- queries need to know of it: copied from the kinds the extension's code
-- registers (pgmigrate.job_kinds()), so that no view names a kind.
CREATE TABLE pgmigrate.kinds (
    kind           text    PRIMARY KEY,
    noun           text    NOT NULL,
    session        boolean NOT NULL,
    table_lock     text    NOT NULL,
    locks_index    boolean NOT NULL,
    one_per_table  text,
    counts_rows    boolean NOT NULL,
    on_index       boolean NOT NULL,
    orphaned       text    NOT NULL
);
INSERT INTO pgmigrate.kinds SELECT * FROM pgmigrate.job_kinds();
COMMENT ON TABLE pgmigrate.kinds IS
    'pg_migrate: the kinds of job this version runs and what the views know of each (filled from the extension''s code at install and update)';
COMMENT ON COLUMN pgmigrate.kinds.session IS 'CALL migrate_run can drive it (otherwise only a background worker)';
COMMENT ON COLUMN pgmigrate.kinds.table_lock IS 'the lock its work takes on the table';
COMMENT ON COLUMN pgmigrate.kinds.locks_index IS 'its work also locks the index it works on';
COMMENT ON COLUMN pgmigrate.kinds.one_per_table IS 'jobs of the kinds that name the same group here run one at a time on a table (NULL: any number)';
COMMENT ON COLUMN pgmigrate.kinds.counts_rows IS 'its progress is counted in rows';
COMMENT ON COLUMN pgmigrate.kinds.on_index IS 'it works on one index (its name and build progress show)';
COMMENT ON COLUMN pgmigrate.kinds.orphaned IS 'what migrate_progress says when the worker that drove it is gone';

CREATE SEQUENCE pgmigrate.job_id_seq;

CREATE TABLE pgmigrate.jobs (
    job_id          bigint      NOT NULL DEFAULT pg_catalog.nextval('pgmigrate.job_id_seq'::pg_catalog.regclass) PRIMARY KEY,
    kind            text        NOT NULL REFERENCES pgmigrate.kinds,
    relid           oid         NOT NULL,
    relation        text        NOT NULL,
    owner           oid         NOT NULL,
    state           text        NOT NULL DEFAULT 'queued',
    wait_reason     text,
    wait_until      timestamptz,
    spec            jsonb       NOT NULL,
    command         text        NOT NULL,
    cursor          text[],
    lower_bound     text[],
    upper_bound     text[],
    rows_done       bigint      NOT NULL DEFAULT 0,
    rows_updated    bigint      NOT NULL DEFAULT 0,
    rows_total      bigint,
    rows_estimate   bigint,
    batches         integer     NOT NULL DEFAULT 0,
    batch_size      integer,
    last_batch_ms   double precision,
    rate            double precision,
    retries         integer     NOT NULL DEFAULT 0,
    ms_per_row      double precision,
    throttled_ms    bigint      NOT NULL DEFAULT 0,
    throttled_batch_ms bigint   NOT NULL DEFAULT 0,
    skipped         bigint      NOT NULL DEFAULT 0,
    phase           text,
    index_oid       oid,
    error           text,
    error_sqlstate  text,
    error_detail    text,
    migration_app   text,
    migration_name  text,
    migration_run   bigint,
    driver_pid      integer,
    driver_started  timestamptz,
    driver_kind     text,
    run_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at     timestamptz,
    parent_id       bigint      REFERENCES pgmigrate.jobs ON DELETE CASCADE,
    slice           text,
    CONSTRAINT jobs_state_check
        CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'running', 'paused', 'waiting', 'succeeded', 'failed', 'cancelled']::pg_catalog.text[])),
    CONSTRAINT jobs_wait_check CHECK (state OPERATOR(pg_catalog.<>) 'waiting' OR wait_reason IS NOT NULL),
    CONSTRAINT jobs_driver_kind_check CHECK (driver_kind OPERATOR(pg_catalog.=) ANY (ARRAY['worker', 'session']::pg_catalog.text[])),
    CONSTRAINT jobs_batch_size_check CHECK (batch_size OPERATOR(pg_catalog.>) 0)
);
CREATE INDEX jobs_unfinished_idx ON pgmigrate.jobs (job_id)
    WHERE state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'running', 'paused', 'waiting']::pg_catalog.text[]);
CREATE INDEX jobs_parent_idx ON pgmigrate.jobs (parent_id) WHERE parent_id IS NOT NULL;
ALTER SEQUENCE pgmigrate.job_id_seq OWNED BY pgmigrate.jobs.job_id;

-- Gates: a job does not start before every gate of its own is open: the
-- job it waits for has succeeded, the migration it waits for is applied
-- (as migrate_require sees it).  So a whole plan (expand, backfill,
-- contract) is queued in one deploy and runs by itself, in order.  A gate
-- given at submit names only jobs queued before its own job; a job that
-- queues jobs of its own (a type change: its backfill, its index builds)
-- waits behind them, and they wait for nothing: gates never form a cycle.
CREATE TABLE pgmigrate.gates (
    job_id      bigint  NOT NULL REFERENCES pgmigrate.jobs ON DELETE CASCADE,
    gate_no     integer NOT NULL,
    after_job   bigint  REFERENCES pgmigrate.jobs,
    after_app   text,
    after_name  text,
    PRIMARY KEY (job_id, gate_no),
    CONSTRAINT gates_one_check CHECK (
        (after_job IS NOT NULL AND after_app IS NULL AND after_name IS NULL)
        OR (after_job IS NULL AND after_app IS NOT NULL AND after_name IS NOT NULL)),
    CONSTRAINT gates_order_check CHECK (after_job OPERATOR(pg_catalog.<>) job_id)
);
CREATE INDEX gates_after_job_idx ON pgmigrate.gates (after_job);
COMMENT ON TABLE pgmigrate.gates IS
    'pg_migrate: what a job waits for before it starts (another job''s success, a migration applied). Read it through migrate_progress.wait_reason.';

-- Why job `job` may not start yet: its first closed gate, in words; NULL
-- when every gate is open.  Security definer so that every role reads the
-- same answer (job states and migration states are public through
-- migrate_progress and migrate_history).
CREATE FUNCTION pgmigrate.gate_closed(job bigint) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
             WHEN g.after_job IS NOT NULL AND d.state = ANY (ARRAY['failed', 'cancelled']) THEN
               format('waits for job %s, which %s: migrate_retry(%s) runs it again, or migrate_cancel(%s) gives up this one',
                      g.after_job, CASE d.state WHEN 'failed' THEN 'failed' ELSE 'was cancelled' END, g.after_job, job)
             WHEN g.after_job IS NOT NULL THEN
               format('waits for job %s (%s %s) to succeed', g.after_job, k.noun, d.state)
             ELSE
               format('waits for migration %s.%s to be applied (now: %s)', g.after_app, g.after_name,
                      coalesce(m.status, 'not recorded'))
           END
      FROM pgmigrate.gates g
      LEFT JOIN pgmigrate.jobs d ON d.job_id = g.after_job
      LEFT JOIN pgmigrate.kinds k ON k.kind = d.kind
      LEFT JOIN LATERAL (
            SELECT e.status FROM pgmigrate.events e
             WHERE e.app = g.after_app AND e.name = g.after_name
             ORDER BY e.seq DESC LIMIT 1) m ON g.after_app IS NOT NULL
     WHERE g.job_id = gate_closed.job
       AND CASE WHEN g.after_job IS NOT NULL THEN d.state IS DISTINCT FROM 'succeeded'
                ELSE m.status IS DISTINCT FROM 'applied' END
     ORDER BY g.gate_no
     LIMIT 1
$$;

COMMENT ON TABLE pgmigrate.jobs IS
    'pg_migrate jobs (backfills and index builds): one row per job with its cursor and counters. Read it through migrate_progress.';
COMMENT ON COLUMN pgmigrate.jobs.relid IS 'the table the job works on (for an index job, the index''s table)';
COMMENT ON COLUMN pgmigrate.jobs.relation IS 'the table''s name when the job was submitted';
COMMENT ON COLUMN pgmigrate.jobs.owner IS 'the role that submitted the job; every batch runs as this role';
COMMENT ON COLUMN pgmigrate.jobs.spec IS 'what to do and how: clauses, key, options, the submitter''s session settings';
COMMENT ON COLUMN pgmigrate.jobs.command IS 'the job as one statement, as a DBA would write it (a backfill as one UPDATE)';
COMMENT ON COLUMN pgmigrate.jobs.cursor IS 'the last key done (text of each key column); NULL before the first batch';
COMMENT ON COLUMN pgmigrate.jobs.lower_bound IS 'the smallest key when the job started (for progress)';
COMMENT ON COLUMN pgmigrate.jobs.upper_bound IS 'the largest key when the job started: rows above it are not the job''s';
COMMENT ON COLUMN pgmigrate.jobs.rows_done IS 'rows the batches have covered (matching the where clause or not)';
COMMENT ON COLUMN pgmigrate.jobs.rows_updated IS 'rows the batches changed';
COMMENT ON COLUMN pgmigrate.jobs.rate IS 'recent rows per second (moving average over batches)';
COMMENT ON COLUMN pgmigrate.jobs.ms_per_row IS 'moving average of batch milliseconds per row: what adaptive batch sizing aims with';
COMMENT ON COLUMN pgmigrate.jobs.throttled_ms IS 'time the job waited for throttles and budgets, in all';
COMMENT ON COLUMN pgmigrate.jobs.throttled_batch_ms IS 'time waited for throttles since the last batch';
COMMENT ON COLUMN pgmigrate.jobs.skipped IS 'rows skipped because they failed (on_error => ''skip'')';
COMMENT ON COLUMN pgmigrate.jobs.phase IS 'index jobs: what the worker does now (building, cleaning up); the build''s own phase comes from pg_stat_progress_create_index';
COMMENT ON COLUMN pgmigrate.jobs.index_oid IS 'index jobs: the index dropped or rebuilt, or the index built once it exists';
COMMENT ON COLUMN pgmigrate.jobs.parent_id IS 'a slice of a parallel or partitioned backfill: the job it is part of (pause, resume, cancel and retry of that job act on its slices)';
COMMENT ON COLUMN pgmigrate.jobs.slice IS 'a slice: what part of the job it does (a key range, a partition)';
COMMENT ON COLUMN pgmigrate.jobs.driver_pid IS 'backend running the job now (a worker or a session in migrate_run)';

-- Is backend `pid`, started at `started`, still there?  The start time
-- tells a live driver from a new backend that reused its pid.  Security
-- definer so that every role sees the same answer (pg_stat_activity hides
-- other roles' backend_start from ordinary roles).
CREATE FUNCTION pgmigrate.backend_alive(pid integer, started timestamptz) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(pid) a WHERE a.backend_start = started)
$$;
GRANT EXECUTE ON FUNCTION pgmigrate.backend_alive(integer, timestamptz) TO PUBLIC;

-- One row per batch, the most recent pg_migrate.batch_history of each job.
CREATE TABLE pgmigrate.batches (
    job_id        bigint      NOT NULL REFERENCES pgmigrate.jobs ON DELETE CASCADE,
    batch_no      integer     NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    after_key     text[],
    last_key      text[],
    rows_covered  bigint      NOT NULL,
    rows_updated  bigint      NOT NULL,
    batch_size    integer     NOT NULL,
    ms            double precision NOT NULL,
    wal_bytes     bigint      NOT NULL,
    retries       integer     NOT NULL,
    throttled_ms  bigint      NOT NULL,
    PRIMARY KEY (job_id, batch_no)
);
COMMENT ON TABLE pgmigrate.batches IS
    'pg_migrate: recent batches of each job (key range, rows, time, WAL, retries, throttling). Read it through migrate_batches.';
COMMENT ON COLUMN pgmigrate.batches.after_key IS 'the batch began after this key (NULL: at the start)';

-- Rows a job skipped because they failed (on_error => 'skip').
CREATE TABLE pgmigrate.skipped (
    job_id    bigint      NOT NULL REFERENCES pgmigrate.jobs ON DELETE CASCADE,
    key       text[]      NOT NULL,
    sqlstate  text        NOT NULL,
    error     text        NOT NULL,
    detail    text,
    at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (job_id, key)
);
COMMENT ON TABLE pgmigrate.skipped IS
    'pg_migrate: rows that failed in a job run with on_error => ''skip'', with their error. Read it through migrate_skipped.';

-- Every attempt of every index job: what ran, how it ended, how long it
-- took, the index's size, what it waited for, what else the worker did.
CREATE TABLE pgmigrate.builds (
    job_id       bigint      NOT NULL REFERENCES pgmigrate.jobs ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    statement    text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at  timestamptz,
    outcome      text        NOT NULL DEFAULT 'running',
    index_size   bigint,
    waited_for   text,
    error        text,
    sqlstate     text,
    detail       text,
    note         text,
    PRIMARY KEY (job_id, attempt),
    CONSTRAINT builds_outcome_check
        CHECK (outcome OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'succeeded', 'failed', 'retrying', 'paused', 'cancelled', 'interrupted']::pg_catalog.text[]))
);
COMMENT ON TABLE pgmigrate.builds IS
    'pg_migrate: every attempt of every index job (statement, times, outcome, index size, waits, cleanup). Read it through migrate_index_builds.';
COMMENT ON COLUMN pgmigrate.builds.outcome IS
    'running; succeeded; failed (the job failed); retrying (a transient error, tried again later); paused or cancelled (by migrate_pause or migrate_cancel); interrupted (its worker stopped)';

-- Jobs are user data too: pg_dump carries them, their batches, skipped
-- rows, index builds and gates, and the job id sequence.
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.gates', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.batches', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.skipped', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.builds', '');

-- The database the job rows belong to (its cluster's system identifier and
-- its oid), written by the first worker to run there.  It is not dumped:
-- in a database restored from a dump it is empty, and the first worker
-- there pauses the jobs that were running when the dump was taken, saying
-- so, instead of carrying on with them (migrate_resume goes on).
CREATE TABLE pgmigrate.instance (
    one                boolean     NOT NULL DEFAULT true PRIMARY KEY CHECK (one),
    system_identifier  bigint      NOT NULL,
    database           oid         NOT NULL,
    since              timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    purged_at          timestamptz
);
COMMENT ON TABLE pgmigrate.instance IS
    'pg_migrate: the cluster and database whose workers run these jobs; empty in a restored copy until its first worker pauses what was running at dump time.';
COMMENT ON COLUMN pgmigrate.instance.purged_at IS
    'when the workers last purged what pg_migrate.retention no longer keeps';
COMMENT ON COLUMN pgmigrate.builds.waited_for IS 'the backend the statement was waiting for when it ended (pid, application, transaction age)';
COMMENT ON COLUMN pgmigrate.builds.note IS 'what the worker did besides the statement: an invalid index it dropped (or could not), an index that already existed';

-- The progress of the index build a job's worker runs now, and what it
-- waits for.  Security definer so that every role that may see the job
-- sees the same (pg_stat_progress_create_index and pg_stat_activity show
-- other roles' backends only to privileged roles); it answers only for a
-- backend that drives a pg_migrate job.
CREATE FUNCTION pgmigrate.build_progress(pid integer, started timestamptz,
    OUT phase text, OUT blocks_done bigint, OUT blocks_total bigint,
    OUT tuples_done bigint, OUT tuples_total bigint,
    OUT waiting_for_pid integer, OUT waiting_for text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.phase, p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total,
           nullif(p.current_locker_pid, 0)::integer,
           CASE WHEN p.current_locker_pid > 0 THEN
                format('pid %s', p.current_locker_pid)
                || coalesce(format(', application %L', nullif(w.application_name, '')), '')
                || coalesce(format(', %s', w.backend_type), '')
                || coalesce(', transaction open ' || date_trunc('second', now() - w.xact_start)::text, '')
                || coalesce(format(', %s', w.state), '')
           END
      FROM pg_stat_progress_create_index p
      JOIN pg_stat_activity a ON a.pid = p.pid AND a.backend_start = started
      LEFT JOIN pg_stat_activity w ON w.pid = p.current_locker_pid
     WHERE p.pid = build_progress.pid
       AND EXISTS (SELECT 1 FROM pgmigrate.jobs j
                    WHERE j.driver_pid = build_progress.pid AND j.driver_started = started)
$$;
GRANT EXECUTE ON FUNCTION pgmigrate.build_progress(integer, timestamptz) TO PUBLIC;
