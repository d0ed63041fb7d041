-- Jobs: work that background workers (or CALL migrate_run) drive in
-- batches, each batch committed together with the job's cursor.

CREATE SEQUENCE pgmigrate.job_id_seq;

CREATE TABLE pgmigrate.jobs (
    job_id          bigint      NOT NULL DEFAULT nextval('pgmigrate.job_id_seq') PRIMARY KEY,
    kind            text        NOT NULL,
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
    batch_size      integer     NOT NULL,
    last_batch_ms   double precision,
    rate            double precision,
    retries         integer     NOT NULL DEFAULT 0,
    ms_per_row      double precision,
    throttled_ms    bigint      NOT NULL DEFAULT 0,
    throttled_batch_ms bigint   NOT NULL DEFAULT 0,
    skipped         bigint      NOT NULL DEFAULT 0,
    error           text,
    error_sqlstate  text,
    error_detail    text,
    migration_app   text,
    migration_name  text,
    migration_run   bigint,
    driver_pid      integer,
    driver_started  timestamptz,
    driver_kind     text,
    run_at          timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT jobs_kind_check CHECK (kind IN ('backfill')),
    CONSTRAINT jobs_state_check
        CHECK (state IN ('queued', 'running', 'paused', 'waiting', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT jobs_wait_check CHECK (state <> 'waiting' OR wait_reason IS NOT NULL),
    CONSTRAINT jobs_driver_kind_check CHECK (driver_kind IN ('worker', 'session')),
    CONSTRAINT jobs_batch_size_check CHECK (batch_size > 0)
);
CREATE INDEX jobs_unfinished_idx ON pgmigrate.jobs (job_id)
    WHERE state IN ('queued', 'running', 'paused', 'waiting');
ALTER SEQUENCE pgmigrate.job_id_seq OWNED BY pgmigrate.jobs.job_id;

COMMENT ON TABLE pgmigrate.jobs IS
    'pg_migrate jobs (backfills): one row per job with its cursor and counters. Read it through migrate_progress.';
COMMENT ON COLUMN pgmigrate.jobs.relid IS 'the table the job works on';
COMMENT ON COLUMN pgmigrate.jobs.relation IS 'the table''s name when the job was submitted';
COMMENT ON COLUMN pgmigrate.jobs.owner IS 'the role that submitted the job; every batch runs as this role';
COMMENT ON COLUMN pgmigrate.jobs.spec IS 'what to do and how: clauses, key, options, the submitter''s session settings';
COMMENT ON COLUMN pgmigrate.jobs.command IS 'the job as one UPDATE statement, as a DBA would write it';
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
    finished_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
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
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_id, key)
);
COMMENT ON TABLE pgmigrate.skipped IS
    'pg_migrate: rows that failed in a job run with on_error => ''skip'', with their error. Read it through migrate_skipped.';
