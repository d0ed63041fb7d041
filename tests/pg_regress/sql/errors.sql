-- Every refusal: SQLSTATE, message, detail, hint.  Nothing is written.
SELECT count(*) AS events_before FROM migrate_events;

-- missing or malformed names
SELECT regress.expect_error($$SELECT migrate_start(NULL, '0001')$$);
SELECT regress.expect_error($$SELECT migrate_start('errtest', NULL)$$);
SELECT regress.expect_error($$SELECT migrate_start('', '0001')$$);
SELECT regress.expect_error($$SELECT migrate_start('errtest', '   ')$$);
SELECT regress.expect_error($$SELECT migrate_start('errtest', repeat('n', 256))$$);
SELECT regress.expect_error($$SELECT migrate_start(repeat('a', 300), '0001')$$);
SELECT regress.expect_error($$SELECT migrate_start('errtest', E'0001\ninitial')$$);
SELECT regress.expect_error($$SELECT migrate_start('errtest', '0001', checksum => '')$$);
SELECT regress.expect_error($$SELECT migrate_start('errtest', '0001', description => repeat('d', 10001))$$);
SELECT regress.expect_error($$SELECT migrate_start('errtest', '0001', force => NULL)$$);
SELECT regress.expect_error($$SELECT migrate_applied(NULL, NULL)$$);
SELECT regress.expect_error($$SELECT migrate_require('errtest', '')$$);
SELECT regress.expect_error($$SELECT migrate_unapply('errtest', NULL)$$);
SELECT regress.expect_error($$SELECT migrate_record('errtest', '0001', duration => '-1 minute')$$);

-- finishing
SELECT regress.expect_error($$SELECT migrate_finish(NULL)$$);
SELECT regress.expect_error($$SELECT migrate_finish(9999)$$);
SELECT regress.expect_error($$SELECT migrate_finish(9999, 'done')$$);
SELECT regress.expect_error($$SELECT migrate_finish(9999, NULL)$$);
SELECT regress.expect_error($$SELECT migrate_finish(9999, 'applied', 'but with an error')$$);

-- unapplying what was never recorded
SELECT regress.expect_error($$SELECT migrate_unapply('errtest', 'never_ran')$$);

-- importing from something that is not Django's table
SELECT regress.expect_error($$SELECT migrate_import_django()$$);
CREATE TABLE not_django (app text, name text);
SELECT regress.expect_error($$SELECT migrate_import_django('not_django')$$);
SELECT regress.expect_error($$SELECT migrate_import_django(NULL)$$);

SELECT count(*) AS events_after FROM migrate_events;

-- A finished run cannot be finished again.
SELECT migrate_start('errtest', '0001') AS run \gset
SELECT migrate_finish(:run);
SELECT regress.expect_error(format('SELECT migrate_finish(%s, %L)', :run, 'failed'));

-- Writing history needs a read-write transaction on a primary.
BEGIN READ ONLY;
SELECT regress.expect_error($$SELECT migrate_start('errtest', '0002')$$);
SELECT migrate_applied('errtest', '0001') AS reading_works;
ROLLBACK;

-- migrate_set_not_null checks everything before it queues anything.
CREATE TABLE nn_err (id int PRIMARY KEY, v int);
CREATE TABLE nn_parted (id int, v int) PARTITION BY RANGE (id);
CREATE VIEW nn_view AS SELECT * FROM nn_err;
SELECT regress.expect_error($$SELECT migrate_set_not_null('nn_err', 'nosuch')$$);
SELECT regress.expect_error($$SELECT migrate_set_not_null('nn_parted', 'v')$$);
SELECT regress.expect_error($$SELECT migrate_set_not_null('nn_view', 'v')$$);
SELECT regress.expect_error($$SELECT migrate_set_not_null('nn_err', 'v', lock_timeout => '0')$$);
CREATE ROLE nn_stranger;
GRANT SELECT, UPDATE ON nn_err TO nn_stranger;
SET ROLE nn_stranger;
SELECT regress.expect_error($$SELECT migrate_set_not_null('nn_err', 'v')$$);
RESET ROLE;
SELECT count(*) AS queued FROM pgmigrate.jobs WHERE kind = 'set_not_null';
-- migrate_add_constraint: one constraint, checked by PostgreSQL as the
-- caller before anything is queued; nothing else smuggled in.
CREATE TABLE nn_ref (id int PRIMARY KEY);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'CHECK (nosuch > 0)')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'FOREIGN KEY (v) REFERENCES nosuch (id)')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'CHECK (v > 0); DROP TABLE nn_ref')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'CHECK (v > 0), DROP COLUMN v')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'CHECK (v > 0) /*')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'COLUMN w int')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'EXCLUDE USING btree (v WITH =)')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'PRIMARY KEY (v)')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'UNIQUE (nosuch)')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'CONSTRAINT nn_err_pkey UNIQUE (v)')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'UNIQUE USING INDEX nosuch_idx')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'UNIQUE (v) WITH (fillfactor = 70)')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', '')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_parted', 'CHECK (v > 0)')$$);
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_view', 'CHECK (v > 0)')$$);
SET ROLE nn_stranger;
SELECT regress.expect_error($$SELECT migrate_add_constraint('nn_err', 'CHECK (v > 0)')$$);
RESET ROLE;
-- Gates name jobs that exist and migrations as ARRAY['app', 'name'].
SELECT regress.expect_error($$SELECT migrate_set_not_null('nn_err', 'v', after_jobs => ARRAY[987654321::bigint])$$);
SELECT regress.expect_error($$SELECT migrate_set_not_null('nn_err', 'v', after_jobs => ARRAY[NULL::bigint])$$);
SELECT regress.expect_error($$SELECT migrate_set_not_null('nn_err', 'v', after_migration => ARRAY['only_app'])$$);
SELECT count(*) AS queued FROM pgmigrate.jobs WHERE kind IN ('set_not_null', 'add_constraint');
-- What is stored is what PostgreSQL printed back, every name qualified:
-- the job runs the same whatever search_path its driver has.
CREATE SCHEMA nn_s;
CREATE FUNCTION nn_s.positive(int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 > 0';
SET search_path = nn_s, public;
SELECT migrate_add_constraint('nn_err', 'CHECK (positive(v)) -- a comment', run_at => '2100-01-01') AS nn_job \gset
RESET search_path;
SELECT spec->>'name' AS name, spec->>'definition' AS definition, command
  FROM pgmigrate.jobs WHERE job_id = :nn_job;
SELECT count(*) AS constraints_now FROM pg_constraint WHERE conrelid = 'nn_err'::regclass AND contype = 'c';
SELECT migrate_cancel(:nn_job);
DROP SCHEMA nn_s CASCADE;
DROP TABLE nn_ref;
DROP OWNED BY nn_stranger;
DROP ROLE nn_stranger;
DROP VIEW nn_view;
DROP TABLE nn_err, nn_parted;
-- migrate_alter_type checks everything before it queues anything, and
-- lists what is in the way of a type change.
CREATE TABLE at_err (id int PRIMARY KEY, v int, w int GENERATED ALWAYS AS (v * 2) STORED,
                     n int GENERATED BY DEFAULT AS IDENTITY, c int CHECK (c > 0), e text, f text, g text, h int);
CREATE VIEW at_view AS SELECT v FROM at_err;
CREATE INDEX at_err_e_idx ON at_err (lower(e));
CREATE INDEX at_err_f_idx ON at_err (f) WHERE f IS NOT NULL;
CREATE TABLE at_parted (id int, v int) PARTITION BY RANGE (id);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'nosuch', 'bigint')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'v', 'nosuchtype')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'v', 'int4')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'v', 'bigint')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'w', 'bigint')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'c', 'bigint')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'e', 'varchar(20)')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'f', 'varchar(20)')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'h', 'point')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'g', 'int', using_expr => 'g::int; DROP TABLE at_err')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'g', 'int', using_expr => 'nosuch + 1')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'g', 'int', complete => 'later')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_parted', 'v', 'bigint')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_view', 'v', 'bigint')$$);
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', NULL, 'bigint')$$);
CREATE ROLE at_stranger;
GRANT SELECT, UPDATE ON at_err TO at_stranger;
SET ROLE at_stranger;
SELECT regress.expect_error($$SELECT migrate_alter_type('at_err', 'g', 'varchar(20)')$$);
RESET ROLE;
SELECT count(*) AS queued FROM pgmigrate.jobs WHERE kind = 'alter_type';
-- Queued, it says what it will do; migrate_complete refuses a job that is
-- not held after its cut-over.
SELECT migrate_alter_type('at_err', 'id', 'bigint', run_at => '2100-01-01') AS at_job \gset
SELECT command, spec->>'shadow' AS shadow, spec->>'new_type' AS new_type FROM pgmigrate.jobs WHERE job_id = :at_job;
SELECT regress.expect_error($$SELECT migrate_complete($$ || :at_job || $$)$$);
SET ROLE at_stranger;
SELECT regress.expect_error($$SELECT migrate_rollback($$ || :at_job || $$)$$);
RESET ROLE;
SELECT migrate_rollback(:at_job);
SELECT state, error FROM pgmigrate.jobs WHERE job_id = :at_job;
DROP OWNED BY at_stranger;
DROP ROLE at_stranger;
DROP VIEW at_view;
DROP TABLE at_err, at_parted;
