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
