//! pg_migrate: zero-downtime migrations inside PostgreSQL.
//!
//! Layout, from the bottom up (a module uses only those below it):
//! `engine` is pure logic; `sys` and `ffi` wrap PostgreSQL's C API; `error`
//! maps every failure to a SQLSTATE with detail and hint; `catalog` reads
//! and writes the extension's tables; `kinds` holds every kind of job (its
//! SQL function, checks, work, progress and facts); `runner` drives a job of
//! any kind; `worker` is the clock (launcher, per-database workers, shared
//! memory); `api` is the rest of the SQL surface (history, analysis, trace,
//! migrate_exec, job control).  SQL objects live in `sql/*.sql`.

use pgrx::prelude::*;

pgrx::pg_module_magic!();

pub mod api;
pub mod catalog;
pub mod engine;
pub mod error;
pub mod ffi;
pub mod gucs;
pub mod kinds;
pub mod runner;
pub mod sys;
pub mod worker;

extension_sql_file!("../sql/001_schema.sql", name = "schema", bootstrap);

/// The internal schema, created by sql/001_schema.sql; declared here so that
/// internal functions can be placed in it (`schema = "pgmigrate"`).
#[pg_schema]
mod pgmigrate {}
extension_sql_file!(
    "../sql/010_history_views.sql",
    name = "history_views",
    requires = ["schema"]
);
extension_sql_file!(
    "../sql/020_jobs.sql",
    name = "jobs",
    requires = ["schema", kinds::job_kinds]
);
extension_sql_file!(
    "../sql/030_jobs_views.sql",
    name = "jobs_views",
    requires = ["jobs", api::jobs::shard_builds]
);
extension_sql_file!(
    "../sql/040_run.sql",
    name = "run_procedures",
    requires = [
        "jobs",
        api::jobs::run_begin,
        api::jobs::run_step,
        api::jobs::run_interrupted,
        api::jobs::run_failed,
        api::jobs::job_outcome,
        api::jobs::wait_poll,
        api::jobs::wait_timeout
    ]
);
extension_sql_file!(
    "../sql/050_locks.sql",
    name = "locks",
    requires = [
        "jobs",
        api::analyze::migrate_analyze,
        api::trace::migrate_trace,
        api::exec::exec_begin,
        api::exec::exec_attempt,
        api::exec::exec_finish,
        api::exec::exec_raise,
        api::exec::lock_conflicts,
        api::exec::lock_mode
    ]
);
extension_sql_file!("../sql/900_privileges.sql", name = "privileges", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    worker::init();
}

// Helpers for the in-process tests (created only in test builds).
#[cfg(feature = "pg_test")]
extension_sql!(
    r#"
    CREATE SCHEMA IF NOT EXISTS tests;
    GRANT USAGE ON SCHEMA tests TO PUBLIC;
    -- Run a statement in a subtransaction: NULL if it worked, else its SQLSTATE.
    CREATE FUNCTION tests.sqlstate_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
    BEGIN
        EXECUTE sql;
        RETURN NULL;
    EXCEPTION WHEN others THEN
        RETURN SQLSTATE;
    END $$;
    "#,
    name = "test_helpers",
    requires = ["schema"]
);

/// The in-process test suite lives in `pgrx-tests/`; pgrx runs each test in
/// its own rolled-back transaction, calling `tests.<name>()`.
#[cfg(feature = "pg_test")]
#[pg_schema]
mod tests {
    #[allow(unused_imports)]
    use super::*;
    #[allow(unused_imports)]
    use pgrx::prelude::*;

    include!("../pgrx-tests/history.rs");
    include!("../pgrx-tests/jobs.rs");
    include!("../pgrx-tests/index.rs");
    include!("../pgrx-tests/locks.rs");
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_migrate'"]
    }
}
