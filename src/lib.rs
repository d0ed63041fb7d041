//! pg_migrate: zero-downtime migrations inside PostgreSQL.
//!
//! Layout: `api` is the SQL surface, `catalog` reads and writes the
//! extension's tables, `engine` is pure logic, `error` maps every failure to
//! a SQLSTATE with detail and hint.  SQL objects live in `sql/*.sql`.

use pgrx::prelude::*;

pgrx::pg_module_magic!();

pub mod api;
pub mod catalog;
pub mod engine;
pub mod error;

extension_sql_file!("../sql/001_schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "../sql/010_history_views.sql",
    name = "history_views",
    requires = ["schema"]
);
extension_sql_file!("../sql/900_privileges.sql", name = "privileges", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {}

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
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_migrate'"]
    }
}
