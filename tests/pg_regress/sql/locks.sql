-- Lock risk as psql shows it: migrate_analyze on scripts (what it locks,
-- rewrites, scans, the risk and the recipe), its answers to bad input,
-- migrate_trace, the refusals of migrate_exec, lock modes, plans.
CREATE TABLE accounts (id bigint PRIMARY KEY, email text, balance int, plan varchar(10));
INSERT INTO accounts SELECT g, 'u' || g, g, 'p' FROM generate_series(1, 100) g;
CREATE TABLE payments (id bigint PRIMARY KEY, account_id bigint, amount numeric(10,2));
ALTER TABLE accounts ADD CONSTRAINT accounts_email_nn CHECK (email IS NOT NULL);
ANALYZE accounts;

-- One row per statement and relation; sizes vary, so they are left out.
SELECT statement, statement_sql, command, relation, lock_mode, blocks_reads, blocks_writes,
       rewrites, scans, in_transaction, risk
  FROM migrate_analyze($$
    ALTER TABLE accounts ADD COLUMN created timestamptz DEFAULT now();
    ALTER TABLE accounts ADD COLUMN token uuid DEFAULT gen_random_uuid();
    ALTER TABLE accounts ALTER COLUMN plan TYPE varchar(20);
    ALTER TABLE accounts ALTER COLUMN balance TYPE bigint;
    ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;
    ALTER TABLE accounts ALTER COLUMN balance SET NOT NULL;
    ALTER TABLE payments ADD CONSTRAINT payments_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id);
    ALTER TABLE payments ADD CONSTRAINT payments_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) NOT VALID;
    CREATE INDEX ON accounts (email);
    CREATE INDEX CONCURRENTLY ON accounts (email);
    CREATE TABLE refunds (id bigint PRIMARY KEY, payment_id bigint REFERENCES payments (id));
    CREATE INDEX ON refunds (payment_id);
    UPDATE accounts SET balance = 0;
    SELECT 1;
  $$) ORDER BY statement, relation::text;

-- The reasons and the recipes.
SELECT statement, reason, recipe FROM migrate_analyze($$
    ALTER TABLE accounts ALTER COLUMN balance SET NOT NULL;
    ALTER TABLE accounts ADD COLUMN token uuid NOT NULL DEFAULT gen_random_uuid();
    ALTER TABLE payments ADD CONSTRAINT payments_amount_pos CHECK (amount > 0);
    ALTER TABLE accounts ADD CONSTRAINT accounts_email_key UNIQUE (email);
    CREATE INDEX accounts_plan_idx ON accounts (plan);
    ALTER TABLE accounts ADD COLUMN note text;
  $$) ORDER BY statement;

-- Bad input: nothing to analyse, a syntax error (with its position), a
-- missing table (with its position), a type change PostgreSQL refuses,
-- a script over the size limit.
SELECT count(*) AS rows_for_empty FROM migrate_analyze('');
SELECT count(*) AS rows_for_comment FROM migrate_analyze('-- nothing here');
SELECT count(*) AS rows_for_null FROM migrate_analyze(NULL);
SELECT * FROM migrate_analyze('ALTER TABLE accounts ADD COLUMN x int; ALTER TABEL accounts DROP COLUMN x');
SELECT * FROM migrate_analyze('ALTER TABLE accounts ADD COLUMN x int; ALTER TABLE acounts DROP COLUMN x');
SELECT regress.expect_error($$SELECT * FROM migrate_analyze('ALTER TABLE accounts ALTER COLUMN email TYPE int')$$);
SELECT regress.expect_error($$SELECT * FROM migrate_analyze('ALTER TABLE accounts ALTER COLUMN nosuch SET NOT NULL')$$);
SELECT regress.expect_error($$SELECT * FROM migrate_analyze(repeat('SELECT 1;', 1200000))$$);
-- Statements that lock nothing existing, or that the analysis cannot see.
SELECT statement, command, relation, risk, reason FROM migrate_analyze($$
    SET lock_timeout = '2s';
    BEGIN;
    CREATE TABLE t_new (id int);
    ALTER TABLE t_new ADD COLUMN v int DEFAULT random()::int;
    COMMIT;
    DO $do$ BEGIN PERFORM 1; END $do$;
    ALTER TABLE IF EXISTS nosuch ADD COLUMN x int;
  $$) ORDER BY statement;

-- migrate_trace runs the statements and rolls them back.
SELECT statement, relation, lock_mode, rewrites, in_transaction, error_sqlstate
  FROM migrate_trace($$
    ALTER TABLE accounts ALTER COLUMN balance TYPE bigint;
    CREATE INDEX CONCURRENTLY ON accounts (email);
    ALTER TABLE accounts ADD COLUMN balance int
  $$) WHERE relation IS NULL OR relation::text NOT LIKE 'pg_toast%' AND relation::text NOT LIKE '%_pkey'
  ORDER BY statement, relation::text;
SELECT format_type(atttypid, atttypmod) AS balance_type_after_trace
  FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname = 'balance';
SELECT regress.expect_error($$SELECT * FROM migrate_trace('SELECT 1', lock_timeout => '0')$$);
-- A traced statement runs under the trace's own statement_timeout; what
-- a trace cannot run is refused or reported, never an internal error.
SELECT statement, error_sqlstate, error FROM migrate_trace('SELECT pg_sleep(30)', statement_timeout => '200ms');
SELECT * FROM migrate_trace('ALTER TABLE accounts ADD COLUMN y int;
COMMIT');
SELECT regress.expect_error($$SELECT * FROM migrate_trace('SAVEPOINT s')$$);
SELECT regress.expect_error($$SELECT * FROM migrate_trace('PREPARE TRANSACTION ''x''')$$);
SELECT statement, error_sqlstate FROM migrate_trace('COPY accounts FROM STDIN');
-- Setting the access method a table already has rewrites nothing.
SELECT command, rewrites, risk, reason FROM migrate_analyze('ALTER TABLE accounts SET ACCESS METHOD heap');
-- TRUNCATE and ALTER SEQUENCE ... RESTART give a new file and copy
-- nothing: no rewrite (analysis and trace agree), no time that grows with
-- the table, but TRUNCATE's lock is as strong as it gets.
CREATE SEQUENCE accounts_seq;
SELECT command, relation, lock_mode, rewrites, estimated_duration, risk, reason
  FROM migrate_analyze('TRUNCATE accounts; ALTER SEQUENCE accounts_seq RESTART WITH 10')
 WHERE relation::text NOT LIKE 'pg_toast%' ORDER BY statement;
SELECT statement, relation, lock_mode, rewrites
  FROM migrate_trace('TRUNCATE accounts; ALTER SEQUENCE accounts_seq RESTART WITH 10')
 WHERE relation::text NOT LIKE 'pg_toast%' AND relation::text NOT LIKE '%_pkey' ORDER BY statement, relation::text;
SELECT count(*) > 0 AS rows_still_there FROM accounts;
DROP SEQUENCE accounts_seq;
-- An index statement that names a table.
SELECT regress.expect_error($$SELECT * FROM migrate_analyze('REINDEX INDEX accounts')$$);

-- migrate_exec refuses what it cannot run before it runs anything.
CALL migrate_exec('ALTER TABLE accounts ADD COLUMN y int; CREATE INDEX CONCURRENTLY ON accounts (email)');
CALL migrate_exec('ALTER TABLE accounts ADD COLUMN y int; COMMIT');
CALL migrate_exec('ALTER TABLE accounts ADD COLUMN y int', attempts => 0);
CALL migrate_exec('ALTER TABLE accounts ADD COLUMN y int', lock_timeout => '0');
CALL migrate_exec('');
CALL migrate_exec(NULL, migration => ARRAY['regress', '0001_null']);
SELECT count(*) AS null_script_recorded FROM migrate_history WHERE app = 'regress';
SELECT regress.expect_error($$SELECT * FROM migrate_trace('SELECT 1', lock_timeout => NULL)$$);
SELECT count(*) AS column_y FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname = 'y';

-- Lock modes, either spelling.
SELECT pgmigrate.lock_conflicts('AccessShareLock', 'ACCESS EXCLUSIVE') AS ae_vs_reads,
       pgmigrate.lock_conflicts('RowExclusiveLock', 'share update exclusive') AS sue_vs_writes,
       pgmigrate.lock_conflicts('RowExclusiveLock', 'ShareLock') AS share_vs_writes;
SELECT regress.expect_error($$SELECT * FROM migrate_blockers('accounts', 'exclusive-ish')$$);
SELECT count(*) AS blockers FROM migrate_blockers('accounts');

-- A plan shows in migrate_lock_risk until it is removed.
SELECT migrate_plan('ALTER TABLE accounts ADD COLUMN z int; CREATE INDEX ON payments (account_id)', 'release 12') AS plan \gset
SELECT source, what, relation, lock_mode, state, blocking_pids, waiting_pids, would_queue
  FROM migrate_lock_risk WHERE source = 'planned' ORDER BY relation::text;
SELECT migrate_unplan(:plan) AS removed;
SELECT count(*) AS planned_left FROM migrate_lock_risk WHERE source = 'planned';
DROP TABLE accounts, payments;
