-- Pacing a backfill: the settings, the options and their refusals, the
-- estimate, batch history, skipped rows.  Jobs are paused in the
-- transaction that queues them and run with CALL migrate_run, so the
-- output is the same on every run.
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'pg_migrate.%' ORDER BY name;

CREATE TABLE readings (id bigint PRIMARY KEY, raw int NOT NULL, celsius numeric);
INSERT INTO readings SELECT g, g % 400 FROM generate_series(1, 20000) g;
ANALYZE readings;

-- Every option is checked at submit.
SELECT regress.expect_error($$SELECT migrate_backfill('readings', 'celsius = raw / 10.0', window_start => '0 1 * * *')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('readings', 'celsius = raw / 10.0', window_start => '0 1 * *', window_length => '4 hours')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('readings', 'celsius = raw / 10.0', window_start => '0 1 * * *', window_length => '10 seconds')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('readings', 'celsius = raw / 10.0', on_error => 'ignore')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('readings', 'celsius = raw / 10.0', target_batch_ms => 1)$$);
SELECT regress.expect_error($$SELECT migrate_backfill('readings', 'celsius = raw / 10.0', max_slot_wal => 'a lot')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('readings', 'celsius = raw / 10.0', max_slot_wal => '-1GB')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('readings', 'celsius = raw / 10.0', max_wal_per_second => '-5MB')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('readings', 'celsius = raw / 10.0', run_at => 'infinity')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('readings', 'celsius = raw / 10.0', run_at => '-infinity')$$);
SELECT regress.expect_error($$CALL migrate_wait(NULL)$$);
SELECT regress.expect_error($$SELECT migrate_backfill('readings', 'celsius = raw / 10.0', max_replay_lag => '-5 s')$$);
SELECT count(*) AS nothing_queued FROM migrate_progress WHERE relation = 'public.readings';

-- The estimate: its stable columns.
SELECT rows_total, sample_rows BETWEEN 1000 AND 10000 AS sampled, rows_to_update = rows_total AS every_row,
       estimated_wal_bytes > 0 AS writes_wal, batches >= 1 AS has_batches
  FROM migrate_estimate('readings', 'celsius = raw / 10.0');
SELECT count(*) FILTER (WHERE celsius IS NOT NULL) AS estimate_left_nothing FROM readings;

-- A job with a fixed batch size, and its batches.
BEGIN;
SELECT migrate_backfill('readings', 'celsius = raw / 10.0', batch_size => 6000) AS job \gset
SELECT migrate_pause(:job);
COMMIT;
SET client_min_messages = warning;
CALL migrate_run(:job);
RESET client_min_messages;
SELECT batch_no, after_key, last_key, rows_covered, rows_updated, batch_size, retries, throttled_ms
  FROM migrate_batches WHERE job_id = :job ORDER BY batch_no;

-- on_error => 'skip': failing rows are recorded and the job goes on.
UPDATE readings SET raw = -1, celsius = NULL WHERE id IN (7, 15000);
ALTER TABLE readings ADD CONSTRAINT not_below_zero CHECK (celsius >= 0) NOT VALID;
BEGIN;
SELECT migrate_backfill('readings', 'celsius = raw / 10.0', 'celsius IS NULL', batch_size => 5000, on_error => 'skip') AS skipping \gset
SELECT migrate_pause(:skipping);
COMMIT;
SET client_min_messages = warning;
CALL migrate_run(:skipping);
RESET client_min_messages;
SELECT state, rows_done, rows_updated, skipped FROM migrate_progress WHERE job_id = :skipping;
SELECT key, sqlstate, error FROM migrate_skipped WHERE job_id = :skipping ORDER BY key[1]::int;

-- Batches and skipped rows show data: only to the job's owner, its members
-- and superusers.
CREATE ROLE pgm_onlooker;
SET ROLE pgm_onlooker;
SELECT count(*) AS batches_seen FROM migrate_batches;
SELECT count(*) AS skipped_seen FROM migrate_skipped;
SELECT count(*) AS jobs_seen FROM migrate_progress WHERE relation = 'public.readings';
RESET ROLE;
DROP ROLE pgm_onlooker;
