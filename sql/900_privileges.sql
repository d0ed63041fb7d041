-- Who may do what.  Reading is open: the views and the startup check are
-- for every role.  Writing history is a deliberate grant:
--
--     GRANT EXECUTE ON FUNCTION migrate_start, migrate_finish, migrate_record,
--                               migrate_unapply, migrate_import_django TO deployer;
REVOKE EXECUTE ON FUNCTION migrate_start, migrate_finish, migrate_record,
                           migrate_unapply, migrate_import_django FROM PUBLIC;

COMMENT ON FUNCTION migrate_start IS
    'pg_migrate: start a run of migration (app, name); returns the run id for migrate_finish';
COMMENT ON FUNCTION migrate_finish IS
    'pg_migrate: finish a run as applied or failed';
COMMENT ON FUNCTION migrate_record IS
    'pg_migrate: record in one call a migration that was applied by other means';
COMMENT ON FUNCTION migrate_unapply IS
    'pg_migrate: record that an applied migration was reversed';
COMMENT ON FUNCTION migrate_applied IS
    'pg_migrate: true when migration (app, name) is applied';
COMMENT ON FUNCTION migrate_require IS
    'pg_migrate: raise SQLSTATE 55000 unless migration (app, name) is applied (application startup check)';
COMMENT ON FUNCTION migrate_import_django IS
    'pg_migrate: import Django''s django_migrations rows as applied migrations; returns how many were new';
