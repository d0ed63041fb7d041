-- Reading is open to every role; writing history is granted on purpose.
CREATE ROLE pgm_app;
CREATE ROLE pgm_deployer;
GRANT EXECUTE ON FUNCTION migrate_start, migrate_finish, migrate_record,
                          migrate_unapply, migrate_import_django TO pgm_deployer;

SET ROLE pgm_deployer;
SELECT migrate_start('inventory', '0001_initial') AS run \gset
SELECT migrate_finish(:run);
SELECT current_user AS still_me;
RESET ROLE;

SET ROLE pgm_app;
SELECT migrate_applied('inventory', '0001_initial');
SELECT migrate_require('inventory', '0001_initial');
SELECT app, name, status, applied_by FROM migrate_history WHERE app = 'inventory';
SELECT app, applied FROM migrate_status WHERE app = 'inventory';
SELECT regress.expect_error($$SELECT migrate_start('inventory', '0002')$$);
SELECT regress.expect_error($$SELECT migrate_record('inventory', '0002')$$);
SELECT regress.expect_error($$SELECT * FROM pgmigrate.events$$);
SELECT regress.expect_error($$INSERT INTO pgmigrate.events (run_id, app, name, seq, event, status, role_name) VALUES (1, 'x', 'y', 1, 'recorded', 'applied', 'me')$$);
RESET ROLE;

-- History functions pin their search_path with SET.  Job functions do not:
-- a backfill's clauses are resolved with the caller's search_path on purpose
-- (and the job keeps it); their own statements on pgmigrate tables run with
-- search_path pinned inside the function.
SELECT p.proname, p.proconfig, p.prosecdef
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_migrate') AND d.deptype = 'e'
 ORDER BY 1;

DROP OWNED BY pgm_app, pgm_deployer;
DROP ROLE pgm_app;
DROP ROLE pgm_deployer;
