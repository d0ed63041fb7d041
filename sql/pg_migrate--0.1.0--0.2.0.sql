-- pg_migrate 0.1.0 -> 0.2.0, run by ALTER EXTENSION pg_migrate UPDATE.
--
-- It only adds: nothing is rewritten, and it locks no table of yours (the
-- upgrade test runs this file through migrate_analyze).  History, jobs,
-- their batches and settings are kept; a job running during the update
-- goes on.
\echo Use "ALTER EXTENSION pg_migrate UPDATE TO '0.2.0'" to load this file. \quit

-- Jobs are user data too: pg_dump carries them, their batches, skipped
-- rows, index builds and gates, and the job id sequence.
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.gates', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.batches', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.skipped', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.builds', '');

-- The database the job rows belong to (see the install script).  This
-- database's jobs are its own, so an update records it at once: a job that
-- runs during the update is not taken for one restored from a dump.
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
INSERT INTO pgmigrate.instance (system_identifier, database)
SELECT s.system_identifier, d.oid
  FROM pg_catalog.pg_control_system() s, pg_catalog.pg_database d
 WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database();

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
