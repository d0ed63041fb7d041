-- What users see of jobs: one row per job, pleasant under \watch 1.
-- The SQL and the error of a job are shown only to its owner, members of
-- that role and superusers (an error can quote a row's values).  Index jobs add the phase of their build, its blocks and
-- tuples, and the backend it waits for (from pg_stat_progress_create_index).
CREATE VIEW migrate_progress AS
SELECT j.job_id,
       j.kind,
       j.relation,
       CASE WHEN o.orphan THEN 'queued'
            WHEN sl.running OPERATOR(pg_catalog.>) 0 AND j.state OPERATOR(pg_catalog.=) 'waiting' THEN 'running'
            ELSE j.state END AS state,
       CASE WHEN o.orphan AND j.driver_kind OPERATOR(pg_catalog.=) 'session'
            THEN pg_catalog.format('its CALL migrate_run session ended; a background worker, CALL migrate_run(%s) or migrate_resume(%s) continues it at the next batch', j.job_id, j.job_id)
            WHEN o.orphan THEN k.orphaned
            WHEN bp.waiting_for IS NOT NULL THEN 'the build waits for ' OPERATOR(pg_catalog.||) bp.waiting_for
            WHEN sl.stopped IS NOT NULL AND j.state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'waiting']::pg_catalog.text[])
                 THEN pg_catalog.format('its slice job %s %s: migrate_resume(%s) or migrate_retry(%s) goes on with it; migrate_cancel(%s) gives up the whole job',
                                        sl.stopped, sl.stopped_state, sl.stopped, sl.stopped, j.job_id)
            WHEN sl.slices IS NOT NULL AND j.state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'waiting']::pg_catalog.text[])
                 THEN pg_catalog.format('%s of %s slices done, %s running (parallel => %s)', sl.done, sl.slices, sl.running,
                                        coalesce(j.spec OPERATOR(pg_catalog.->>) 'parallel', '1'))
            WHEN j.parent_id IS NOT NULL AND j.state OPERATOR(pg_catalog.=) 'queued' AND NOT d.alive
                 AND coalesce(pp.running, 0) OPERATOR(pg_catalog.>=) coalesce((pp.parallel)::integer, 1)
                 THEN pg_catalog.format('waits for a place: %s slices of job %s run at a time', coalesce(pp.parallel, '1'), j.parent_id)
            WHEN gt.reason IS NOT NULL THEN gt.reason
            WHEN blk.job_id IS NOT NULL THEN pg_catalog.format('waits for job %s: one %s per table at a time', blk.job_id, k.one_per_table)
            WHEN j.state OPERATOR(pg_catalog.=) 'queued' AND j.run_at OPERATOR(pg_catalog.>) pg_catalog.now() THEN 'scheduled for ' OPERATOR(pg_catalog.||) j.run_at::pg_catalog.text
            ELSE j.wait_reason END AS wait_reason,
       CASE WHEN k.counts_rows THEN e.rows_done END AS rows_done,
       CASE WHEN k.counts_rows THEN e.rows_total END AS rows_total,
       CASE WHEN j.state OPERATOR(pg_catalog.=) 'succeeded' THEN 100.0
            WHEN NOT k.counts_rows THEN NULL
            WHEN coalesce(e.rows_total, 0) OPERATOR(pg_catalog.<=) 0 THEN 0.0
            ELSE least(99.9, pg_catalog.floor(e.rows_done::pg_catalog.numeric OPERATOR(pg_catalog.*) 1000.0
                                           OPERATOR(pg_catalog./) e.rows_total::pg_catalog.numeric)
                            OPERATOR(pg_catalog./) 10.0)
       END::numeric(5,1) AS percent,
       pg_catalog.round(e.rate)::bigint AS rows_per_second,
       CASE WHEN j.state OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'waiting']::pg_catalog.text[]) AND e.rate OPERATOR(pg_catalog.>) 0
            THEN pg_catalog.make_interval(secs => pg_catalog.ceil(greatest(coalesce(e.rows_total, 0) OPERATOR(pg_catalog.-) e.rows_done, 0)::double precision
                                                          OPERATOR(pg_catalog./) e.rate))
       END AS eta,
       j.batch_size,
       pg_catalog.round(j.last_batch_ms::numeric, 1) AS last_batch_ms,
       CASE WHEN o.alive THEN j.driver_pid END AS worker_pid,
       j.owner::regrole AS owner,
       pg_catalog.date_trunc('second', j.started_at) AS started_at,
       pg_catalog.date_trunc('second', j.updated_at) AS updated_at,
       CASE WHEN j.error IS NULL THEN NULL
            WHEN pg_catalog.pg_has_role(j.owner, 'MEMBER') THEN j.error
            ELSE '(hidden: only the job''s owner, members of that role and superusers see its error)'
       END AS error,
       pg_catalog.make_interval(secs => e.throttled_ms::double precision OPERATOR(pg_catalog./) 1000.0::double precision) AS throttled,
       e.skipped,
       CASE WHEN k.counts_rows THEN e.rows_updated END AS rows_updated,
       j.retries,
       j.migration_app OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) j.migration_name AS migration,
       j.run_at,
       j.finished_at,
       CASE WHEN bp.phase IS NOT NULL AND pt.partitioned AND j.phase IS NOT NULL
            THEN j.phase OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) bp.phase
            ELSE coalesce(bp.phase, CASE WHEN o.alive THEN j.phase END) END AS phase,
       bp.blocks_done,
       bp.blocks_total,
       bp.tuples_done,
       bp.tuples_total,
       bp.waiting_for_pid,
       CASE WHEN k.on_index THEN pg_catalog.format('%I.%I', j.spec OPERATOR(pg_catalog.->>) 'schema', j.spec OPERATOR(pg_catalog.->>) 'name') END AS index_name,
       CASE WHEN pg_catalog.pg_has_role(j.owner, 'MEMBER') THEN j.command END AS command,
       j.parent_id AS parent_job,
       j.slice,
       CASE WHEN pt.partitioned THEN j.rows_done END AS partitions_done,
       CASE WHEN pt.partitioned THEN j.rows_total END AS partitions_total,
       coalesce(sb.done, CASE WHEN k.on_index AND NOT pt.partitioned AND j.rows_total IS NOT NULL THEN j.rows_done END) AS shards_done,
       coalesce(sb.total, CASE WHEN k.on_index AND NOT pt.partitioned THEN j.rows_total END) AS shards_total
  FROM pgmigrate.jobs j
  JOIN pgmigrate.kinds k ON k.kind OPERATOR(pg_catalog.=) j.kind
 CROSS JOIN LATERAL (
       SELECT k.on_index AND coalesce((j.spec OPERATOR(pg_catalog.->>) 'partitioned')::boolean, false) AS partitioned) pt
 CROSS JOIN LATERAL (
       SELECT j.driver_pid IS NOT NULL AND pgmigrate.backend_alive(j.driver_pid, j.driver_started) AS alive) d
 CROSS JOIN LATERAL (
       SELECT CASE WHEN j.state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'waiting']::pg_catalog.text[])
                   THEN pgmigrate.gate_closed(j.job_id) END AS reason) gt
 CROSS JOIN LATERAL (
       SELECT d.alive, j.state OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'waiting']::pg_catalog.text[]) AND j.driver_pid IS NOT NULL AND NOT d.alive AS orphan) o
  LEFT JOIN LATERAL (
       -- (OFFSET 0 keeps the condition a one-time filter in front of the
       -- call: otherwise it becomes a join filter and the function runs for
       -- every job)
       SELECT p.* FROM pgmigrate.build_progress(j.driver_pid, j.driver_started) p
        WHERE k.on_index AND j.state OPERATOR(pg_catalog.=) 'running' AND NOT o.orphan
       OFFSET 0) bp ON true
  -- An index job on a Citus distributed table, running: its shards done,
  -- read on the nodes (kept in the job when it ends).
  LEFT JOIN LATERAL (
       SELECT sb.* FROM pgmigrate.shard_builds(j.job_id) sb
        WHERE k.on_index AND j.state OPERATOR(pg_catalog.=) 'running' AND NOT o.orphan
       OFFSET 0) sb ON true
  LEFT JOIN LATERAL (
       SELECT b.job_id FROM pgmigrate.jobs b
         JOIN pgmigrate.kinds bk ON bk.kind OPERATOR(pg_catalog.=) b.kind
        WHERE k.one_per_table IS NOT NULL AND j.state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'waiting']::pg_catalog.text[])
          AND b.relid OPERATOR(pg_catalog.=) j.relid AND b.job_id OPERATOR(pg_catalog.<>) j.job_id AND bk.one_per_table OPERATOR(pg_catalog.=) k.one_per_table
          AND b.driver_pid IS NOT NULL AND pgmigrate.backend_alive(b.driver_pid, b.driver_started)
        LIMIT 1) blk ON true
  -- A job split into slices: its progress is theirs, summed.
  LEFT JOIN LATERAL (
       SELECT pg_catalog.count(*) AS slices,
              pg_catalog.count(*) FILTER (WHERE s.state OPERATOR(pg_catalog.=) 'succeeded') AS done,
              pg_catalog.count(*) FILTER (WHERE s.driver_pid IS NOT NULL AND pgmigrate.backend_alive(s.driver_pid, s.driver_started)) AS running,
              pg_catalog.min(s.job_id) FILTER (WHERE s.state OPERATOR(pg_catalog.=) ANY (ARRAY['failed', 'cancelled', 'paused']::pg_catalog.text[])) AS stopped,
              (pg_catalog.array_agg(s.state ORDER BY s.job_id) FILTER (WHERE s.state OPERATOR(pg_catalog.=) ANY (ARRAY['failed', 'cancelled', 'paused']::pg_catalog.text[])))[1] AS stopped_state,
              pg_catalog.sum(s.rows_done)::bigint AS rows_done,
              pg_catalog.sum(s.rows_updated)::bigint AS rows_updated,
              pg_catalog.sum(coalesce(s.rows_total, s.rows_estimate, 0))::bigint AS rows_total,
              pg_catalog.sum(s.rate) FILTER (WHERE s.state OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'waiting']::pg_catalog.text[])) AS rate,
              pg_catalog.sum(s.throttled_ms)::bigint AS throttled_ms,
              pg_catalog.sum(s.skipped)::bigint AS skipped
         FROM pgmigrate.jobs s
        WHERE s.parent_id OPERATOR(pg_catalog.=) j.job_id
       HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 0) sl ON true
  -- A slice: how many of its siblings run, and how many may.
  LEFT JOIN LATERAL (
       SELECT p.spec OPERATOR(pg_catalog.->>) 'parallel' AS parallel,
              (SELECT pg_catalog.count(*) FROM pgmigrate.jobs s
                WHERE s.parent_id OPERATOR(pg_catalog.=) p.job_id AND s.driver_pid IS NOT NULL
                  AND pgmigrate.backend_alive(s.driver_pid, s.driver_started)) AS running
         FROM pgmigrate.jobs p
        WHERE p.job_id OPERATOR(pg_catalog.=) j.parent_id) pp ON true
 CROSS JOIN LATERAL (
       SELECT coalesce(sl.rows_done, j.rows_done) AS rows_done,
              coalesce(sl.rows_updated, j.rows_updated) AS rows_updated,
              coalesce(sl.rows_total, j.rows_total, j.rows_estimate) AS rows_total,
              coalesce(sl.rate, j.rate) AS rate,
              coalesce(sl.throttled_ms, j.throttled_ms) AS throttled_ms,
              coalesce(sl.skipped, j.skipped) AS skipped) e;
COMMENT ON VIEW migrate_progress IS
    'pg_migrate: one row per job (backfills and index jobs): state, progress, rate, ETA, build phase and waits; the command and the error only for its owner; a job split into slices shows their progress summed, and each slice has a row of its own; an index job on a partitioned table shows its partitions done and in all, one on a Citus distributed table its shards done and in all';

GRANT SELECT ON migrate_progress TO PUBLIC;

-- Recent batches and skipped rows: they show data (keys, errors), so only
-- to the job's owner, members of that role and superusers.
CREATE VIEW migrate_batches AS
SELECT b.job_id, b.batch_no, b.finished_at, b.after_key, b.last_key, b.rows_covered, b.rows_updated,
       b.batch_size, pg_catalog.round(b.ms::numeric, 1) AS ms, b.wal_bytes, b.retries, b.throttled_ms
  FROM pgmigrate.batches b
  JOIN pgmigrate.jobs j ON j.job_id OPERATOR(pg_catalog.=) b.job_id
 WHERE pg_catalog.pg_has_role(j.owner, 'MEMBER');
COMMENT ON VIEW migrate_batches IS
    'pg_migrate: the most recent batches of each job you own: key range, rows, duration, WAL, retries, time throttled';

CREATE VIEW migrate_skipped AS
SELECT s.job_id, s.key, s.sqlstate, s.error, s.detail, s.at
  FROM pgmigrate.skipped s
  JOIN pgmigrate.jobs j ON j.job_id OPERATOR(pg_catalog.=) s.job_id
 WHERE pg_catalog.pg_has_role(j.owner, 'MEMBER');
COMMENT ON VIEW migrate_skipped IS
    'pg_migrate: rows that jobs you own skipped (on_error => ''skip''), with the error each raised';

GRANT SELECT ON migrate_batches, migrate_skipped TO PUBLIC;

-- Every attempt of every index job.  Errors can show data (a duplicate
-- key), so only to the job's owner, members of that role and superusers.
CREATE VIEW migrate_index_builds AS
SELECT b.job_id, j.kind, b.attempt, j.relation,
       pg_catalog.format('%I.%I', j.spec OPERATOR(pg_catalog.->>) 'schema', j.spec OPERATOR(pg_catalog.->>) 'name') AS index_name,
       b.outcome, b.started_at, b.finished_at,
       pg_catalog.date_trunc('milliseconds', b.finished_at OPERATOR(pg_catalog.-) b.started_at) AS duration,
       b.index_size, pg_catalog.pg_size_pretty(b.index_size) AS size,
       b.waited_for, b.error, b.sqlstate, b.detail, b.note, b.statement
  FROM pgmigrate.builds b
  JOIN pgmigrate.jobs j ON j.job_id OPERATOR(pg_catalog.=) b.job_id
 WHERE pg_catalog.pg_has_role(j.owner, 'MEMBER');
COMMENT ON VIEW migrate_index_builds IS
    'pg_migrate: every attempt of the index jobs you own: statement, outcome, duration, index size, what it waited for, cleanup';

GRANT SELECT ON migrate_index_builds TO PUBLIC;

-- For monitoring (the exporter configurations in monitoring/): numbers,
-- with few labels.  One row per job that has not ended (scope 'job'), the
-- ended ones summed by kind and state ('ended'), one row per recurring job
-- with its last success ('recurring'), and one for the database
-- ('database': invalid indexes, migrations running and the oldest one).
-- A job's id is a label only while the job is active.
CREATE VIEW migrate_metrics AS
SELECT 'job'::pg_catalog.text AS scope, j.job_id, j.kind,
       CASE WHEN j.state OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'waiting']::pg_catalog.text[])
                 AND j.driver_pid IS NOT NULL AND NOT pgmigrate.backend_alive(j.driver_pid, j.driver_started)
            THEN 'queued' ELSE j.state END AS state,
       j.relation,
       CASE WHEN k.counts_rows THEN coalesce(sl.rows_done, j.rows_done) END AS rows_done,
       CASE WHEN k.counts_rows THEN coalesce(sl.rows_total, j.rows_total, j.rows_estimate) END AS rows_total,
       pg_catalog.round(coalesce(sl.rate, j.rate))::bigint AS rows_per_second,
       (j.last_batch_ms OPERATOR(pg_catalog./) 1000.0::double precision)::double precision AS last_batch_seconds,
       (coalesce(sl.throttled_ms, j.throttled_ms, 0)::double precision OPERATOR(pg_catalog./) 1000.0::double precision) AS throttled_seconds,
       j.retries,
       pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) j.started_at) AS running_seconds,
       pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) j.updated_at) AS idle_seconds,
       NULL::bigint AS jobs, NULL::bigint AS jobs_last_hour, NULL::double precision AS last_success,
       NULL::bigint AS invalid_indexes, NULL::bigint AS migrations_running, NULL::double precision AS oldest_migration_seconds
  FROM pgmigrate.jobs j
  JOIN pgmigrate.kinds k ON k.kind OPERATOR(pg_catalog.=) j.kind
  -- A job split into slices: its progress is theirs, summed (as in migrate_progress).
  LEFT JOIN LATERAL (
       SELECT pg_catalog.sum(s.rows_done)::bigint AS rows_done,
              pg_catalog.sum(coalesce(s.rows_total, s.rows_estimate, 0))::bigint AS rows_total,
              pg_catalog.sum(s.rate) FILTER (WHERE s.state OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'waiting']::pg_catalog.text[])) AS rate,
              pg_catalog.sum(s.throttled_ms)::bigint AS throttled_ms
         FROM pgmigrate.jobs s
        WHERE s.parent_id OPERATOR(pg_catalog.=) j.job_id
       HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 0) sl ON true
 WHERE j.parent_id IS NULL
   AND j.state OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'running', 'waiting', 'paused']::pg_catalog.text[])
UNION ALL
SELECT 'ended', NULL, j.kind, j.state, NULL,
       pg_catalog.sum(j.rows_done)::bigint, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       pg_catalog.count(*),
       pg_catalog.count(*) FILTER (WHERE j.finished_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) '1 hour'::pg_catalog.interval)),
       NULL, NULL, NULL, NULL
  FROM pgmigrate.jobs j
 WHERE j.parent_id IS NULL
   AND j.state OPERATOR(pg_catalog.=) ANY (ARRAY['succeeded', 'failed', 'cancelled']::pg_catalog.text[])
 GROUP BY j.kind, j.state
UNION ALL
SELECT 'recurring', j.job_id, j.kind, j.state, j.relation,
       NULL, NULL, NULL, NULL, NULL, j.retries, NULL, NULL, NULL, NULL,
       (SELECT pg_catalog.date_part('epoch', pg_catalog.max(b.finished_at)) FROM pgmigrate.builds b
         WHERE b.job_id OPERATOR(pg_catalog.=) j.job_id AND b.outcome OPERATOR(pg_catalog.=) 'succeeded'),
       NULL, NULL, NULL
  FROM pgmigrate.jobs j
 WHERE (j.spec OPERATOR(pg_catalog.->>) 'schedule') IS NOT NULL
UNION ALL
SELECT 'database', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       -- (an index CREATE INDEX CONCURRENTLY is building now is not left behind)
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_index i
         WHERE NOT i.indisvalid
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_progress_create_index b
                            WHERE b.index_relid OPERATOR(pg_catalog.=) i.indexrelid)),
       (SELECT pg_catalog.count(*) FROM migrate_history h WHERE h.status OPERATOR(pg_catalog.=) 'running'),
       (SELECT coalesce(pg_catalog.max(pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) h.started_at)), 0)
          FROM migrate_history h WHERE h.status OPERATOR(pg_catalog.=) 'running');
COMMENT ON VIEW migrate_metrics IS
    'pg_migrate: numbers for monitoring (Prometheus through postgres_exporter or sql_exporter: see monitoring/ in the repository): active jobs, ended jobs by kind and state, recurring jobs, the database';
GRANT SELECT ON migrate_metrics TO PUBLIC;
