-- What users see of jobs: one row per job, pleasant under \watch 1.
-- The SQL of a job is shown only to its owner, members of that role and
-- superusers.
CREATE VIEW migrate_progress AS
SELECT j.job_id,
       j.kind,
       j.relation,
       CASE WHEN o.orphan THEN 'queued' ELSE j.state END AS state,
       CASE WHEN o.orphan THEN 'its worker stopped; it resumes at the next batch'
            WHEN j.state = 'queued' AND j.run_at > now() THEN 'scheduled for ' || j.run_at::text
            ELSE j.wait_reason END AS wait_reason,
       j.rows_done,
       coalesce(j.rows_total, j.rows_estimate) AS rows_total,
       CASE WHEN j.state = 'succeeded' THEN 100.0
            WHEN coalesce(j.rows_total, j.rows_estimate, 0) <= 0 THEN 0.0
            ELSE least(99.9, floor(j.rows_done * 1000.0 / coalesce(j.rows_total, j.rows_estimate)) / 10)
       END::numeric(5,1) AS percent,
       round(j.rate)::bigint AS rows_per_second,
       CASE WHEN j.state IN ('running', 'waiting') AND j.rate > 0
            THEN make_interval(secs => ceil(greatest(coalesce(j.rows_total, j.rows_estimate, 0) - j.rows_done, 0) / j.rate))
       END AS eta,
       j.batch_size,
       round(j.last_batch_ms::numeric, 1) AS last_batch_ms,
       CASE WHEN NOT o.orphan THEN j.driver_pid END AS worker_pid,
       j.owner::regrole AS owner,
       date_trunc('second', j.started_at) AS started_at,
       date_trunc('second', j.updated_at) AS updated_at,
       j.error,
       make_interval(secs => j.throttled_ms / 1000.0) AS throttled,
       j.skipped,
       j.rows_updated,
       j.retries,
       j.migration_app || '.' || j.migration_name AS migration,
       j.run_at,
       j.finished_at,
       CASE WHEN pg_has_role(j.owner, 'MEMBER') THEN j.command END AS command
  FROM pgmigrate.jobs j
 CROSS JOIN LATERAL (
       SELECT j.state IN ('running', 'waiting') AND j.driver_pid IS NOT NULL
              AND NOT pgmigrate.backend_alive(j.driver_pid, j.driver_started) AS orphan) o;
COMMENT ON VIEW migrate_progress IS
    'pg_migrate: one row per job (backfills): state, progress, rate, ETA; the command only for its owner';

GRANT SELECT ON migrate_progress TO PUBLIC;

-- Recent batches and skipped rows: they show data (keys, errors), so only
-- to the job's owner, members of that role and superusers.
CREATE VIEW migrate_batches AS
SELECT b.job_id, b.batch_no, b.finished_at, b.after_key, b.last_key, b.rows_covered, b.rows_updated,
       b.batch_size, round(b.ms::numeric, 1) AS ms, b.wal_bytes, b.retries, b.throttled_ms
  FROM pgmigrate.batches b
  JOIN pgmigrate.jobs j USING (job_id)
 WHERE pg_has_role(j.owner, 'MEMBER');
COMMENT ON VIEW migrate_batches IS
    'pg_migrate: the most recent batches of each job you own: key range, rows, duration, WAL, retries, time throttled';

CREATE VIEW migrate_skipped AS
SELECT s.job_id, s.key, s.sqlstate, s.error, s.detail, s.at
  FROM pgmigrate.skipped s
  JOIN pgmigrate.jobs j USING (job_id)
 WHERE pg_has_role(j.owner, 'MEMBER');
COMMENT ON VIEW migrate_skipped IS
    'pg_migrate: rows that jobs you own skipped (on_error => ''skip''), with the error each raised';

GRANT SELECT ON migrate_batches, migrate_skipped TO PUBLIC;
