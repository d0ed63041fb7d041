-- Index jobs as psql shows them: statements checked at submit (with the
-- position of a mistake), what is queued, the progress view.  Jobs are
-- paused in the transaction that queues them, so no worker runs them and
-- the output is the same on every run.
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, country text, created date);
CREATE INDEX customers_country_idx ON customers (country);
ALTER TABLE customers ADD CONSTRAINT customers_email_key UNIQUE (email);

-- Mistakes are found at submit, pointing into index_sql.
SELECT migrate_create_index('CREATE INDEX ON customers (lower(emial))');
SELECT migrate_create_index('CREATE INDEX ON customers (country');
SELECT regress.expect_error($$SELECT migrate_create_index('SELECT * FROM customers')$$);
SELECT regress.expect_error($$SELECT migrate_create_index('CREATE INDEX ON customers (id); DROP TABLE customers')$$);
SELECT regress.expect_error($$SELECT migrate_create_index('CREATE INDEX ON customers (emial)')$$);
SELECT regress.expect_error($$SELECT migrate_create_index('CREATE INDEX ON customers (email) TABLESPACE pg_global')$$);
SELECT regress.expect_error($$SELECT migrate_create_index('CREATE INDEX ON customers (email)', run_at => 'infinity')$$);
SELECT regress.expect_error($$SELECT migrate_create_index('CREATE INDEX customers_country_idx ON customers (created)')$$);
SELECT regress.expect_error($$SELECT migrate_create_index('CREATE INDEX ON customers ((created + random()::int))')$$);
SELECT regress.expect_error($$SELECT migrate_create_index('CREATE INDEX ON customers (country) WHERE created > current_date - 30')$$);
SELECT regress.expect_error($$SELECT migrate_create_index('CREATE UNIQUE INDEX ON customers USING hash (email)')$$);
CREATE TABLE events (id bigint, at date) PARTITION BY RANGE (at);
SELECT regress.expect_error($$SELECT migrate_create_index('CREATE INDEX ON ONLY events (at)')$$);
SELECT regress.expect_error($$SELECT migrate_create_index('CREATE INDEX ON customers (created)', retry_delay => '10 ms')$$);
SELECT regress.expect_error($$SELECT migrate_drop_index('customers')$$);
SELECT regress.expect_error($$SELECT migrate_drop_index('customers_email_key')$$);
SELECT regress.expect_error($$SELECT migrate_reindex('customers_country_idx', schedule => 'nightly')$$);
CREATE ROLE pgm_index_stranger;
GRANT SELECT, UPDATE ON customers TO pgm_index_stranger;
SET ROLE pgm_index_stranger;
SELECT regress.expect_error($$SELECT migrate_create_index('CREATE INDEX ON customers (created)')$$);
RESET ROLE;
SELECT count(*) AS nothing_queued FROM migrate_progress WHERE relation = 'public.customers';

-- Queued: CONCURRENTLY added, a name chosen as PostgreSQL would.
BEGIN;
SELECT migrate_create_index('create index on customers (lower(email)) where country is not null',
                            window_start => '0 1 * * *', window_length => '4 hours',
                            max_wait => '10 min', migration => ARRAY['crm', '0012_email_lookup']) AS build \gset
SELECT migrate_pause(:build);
SELECT migrate_drop_index('customers_country_idx') AS dropper \gset
SELECT migrate_pause(:dropper);
SELECT migrate_reindex('customers_email_key', run_at => '2030-01-01 03:00+00', schedule => '0 3 * * 0') AS rebuild \gset
SELECT migrate_pause(:rebuild);
COMMIT;
SELECT job_id - :build AS job, kind, relation, state, wait_reason, index_name, rows_done, percent, migration, command
  FROM migrate_progress WHERE job_id >= :build ORDER BY job_id;
SELECT status FROM migrate_history WHERE app = 'crm' AND name = '0012_email_lookup';
SELECT count(*) AS attempts FROM migrate_index_builds WHERE job_id >= :build;

-- Cancelling a linked job fails its migration run.
SELECT migrate_cancel(:build);
SELECT status FROM migrate_history WHERE app = 'crm' AND name = '0012_email_lookup';
SELECT migrate_cancel(:dropper), migrate_cancel(:rebuild);
SELECT state, count(*) FROM migrate_progress WHERE job_id >= :build GROUP BY state;

DROP OWNED BY pgm_index_stranger;
DROP ROLE pgm_index_stranger;
