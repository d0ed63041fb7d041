-- Migration history as a deploy tool and an application see it.
-- Timestamps vary, so rows show what is stable: status, checksum, runs.

-- A deploy: start, do the work, finish.  The run id ties the two together.
SELECT migrate_start('shop', '0001_initial', checksum => 'sha256:aa11', description => 'create orders') AS run \gset
SELECT app, name, status, checksum, description, finished_at IS NULL AS unfinished
  FROM migrate_history;
SELECT migrate_finish(:run);
SELECT app, name, status, checksum, duration >= '0' AS timed, applied_by = current_user AS by_me
  FROM migrate_history;

-- The application's startup check: quiet when applied ...
SELECT migrate_applied('shop', '0001_initial');
SELECT migrate_require('shop', '0001_initial');
-- ... and an error that says what is missing when not.
SELECT regress.expect_error($$SELECT migrate_require('shop', '0002_add_status')$$);

-- Running it again is refused: it is applied, and a changed file is noticed.
SELECT regress.expect_error($$SELECT migrate_start('shop', '0001_initial', 'sha256:aa11')$$);
SELECT migrate_start('shop', '0002_add_status', 'sha256:bb22') AS run \gset
SELECT migrate_finish(:run, 'failed', 'column "status" already exists');
SELECT regress.expect_error($$SELECT migrate_start('shop', '0002_add_status', 'sha256:bb23')$$);
SELECT regress.expect_error($$SELECT migrate_require('shop', '0002_add_status')$$);
-- force => true reruns on purpose, and the log keeps that it was forced.
SELECT migrate_start('shop', '0002_add_status', 'sha256:bb23', force => true) AS run \gset
SELECT regress.expect_error($$SELECT migrate_start('shop', '0002_add_status', 'sha256:bb23', force => true)$$);
SELECT migrate_finish(:run);
SELECT name, event, status, checksum, forced, error FROM migrate_events WHERE name = '0002_add_status' ORDER BY event_id;

-- A migration started inside a transaction that rolls back leaves no trace.
BEGIN;
SELECT migrate_start('shop', '0003_rolled_back') > 0 AS started;
ROLLBACK;
SELECT count(*) AS rows_for_0003 FROM migrate_events WHERE name = '0003_rolled_back';

-- A tool that ran the migration itself records it in one call.
SELECT migrate_record('billing', '0001_initial', 'md5:cc33', 'invoices', duration => '2 min 5 s') > 0 AS recorded;
SELECT app, name, status, duration, finished_at - started_at AS span FROM migrate_history WHERE app = 'billing';

-- Reversing a migration is recorded too; afterwards it can be applied again.
SELECT migrate_unapply('billing', '0001_initial', reason => 'release 41 rolled back');
SELECT migrate_applied('billing', '0001_initial');
SELECT regress.expect_error($$SELECT migrate_require('billing', '0001_initial')$$);
SELECT regress.expect_error($$SELECT migrate_unapply('billing', '0001_initial')$$);
SELECT migrate_record('billing', '0001_initial', 'md5:cc33') > 0 AS recorded_again;

-- Adopting pg_migrate in a Django project keeps the past.
CREATE TABLE django_migrations (id serial PRIMARY KEY, app varchar(255) NOT NULL,
                                name varchar(255) NOT NULL, applied timestamptz NOT NULL);
INSERT INTO django_migrations (app, name, applied) VALUES
    ('contenttypes', '0001_initial', '2024-03-01 09:00:00+00'),
    ('auth', '0001_initial', '2024-03-01 09:00:01+00'),
    ('shop', '0001_initial', '2024-03-02 10:00:00+00');
SELECT migrate_import_django();
SELECT migrate_import_django() AS second_import;
SELECT app, name, status, finished_at FROM migrate_history WHERE app IN ('auth', 'contenttypes') ORDER BY app;

-- Where each application stands.
SELECT app, last_applied, applied, failed, running, unapplied, total FROM migrate_status ORDER BY app;

-- The log is append-only.
SELECT regress.expect_error($$UPDATE pgmigrate.events SET status = 'applied'$$);
SELECT regress.expect_error($$DELETE FROM pgmigrate.events$$);

-- The history keeps roles by OID: once a role is dropped its runs say so,
-- and a new role of the same name is not taken for it.
CREATE ROLE regress_deployer;
GRANT EXECUTE ON FUNCTION migrate_record TO regress_deployer;
SET ROLE regress_deployer;
SELECT migrate_record('roles', '0001_by_old_role') > 0 AS recorded;
RESET ROLE;
SELECT applied_by = 'regress_deployer' AS named FROM migrate_history WHERE app = 'roles';
REVOKE EXECUTE ON FUNCTION migrate_record FROM regress_deployer;
DROP ROLE regress_deployer;
CREATE ROLE regress_deployer;
SELECT applied_by LIKE 'regress_deployer (dropped role %)' AS marked_dropped,
       applied_by LIKE '%' || (SELECT e.role_oid::text FROM migrate_events e WHERE e.app = 'roles') || ')' AS with_its_oid
  FROM migrate_history WHERE app = 'roles';
SELECT role_name LIKE 'regress_deployer (dropped role %)' AS event_marked,
       role_oid <> 'regress_deployer'::regrole::oid AS not_the_new_role
  FROM migrate_events WHERE app = 'roles';
DROP ROLE regress_deployer;
