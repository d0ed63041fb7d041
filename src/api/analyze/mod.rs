//! migrate_analyze: what each statement of a migration script locks, and
//! whether it rewrites or scans a table, from PostgreSQL's own parser and
//! the live catalog, without executing anything.  The lock level of ALTER
//! TABLE is PostgreSQL's own (AlterTableGetLockLevel); rewrites of a type
//! change are decided by the same coercion and simplification PostgreSQL
//! applies; SET NOT NULL is checked against the valid CHECK constraints
//! with PostgreSQL's own predicate prover.
//!
//! Its parts, each using only the ones listed before it:
//! - `nodes`: small helpers for raw parse-tree nodes (C strings, tags, lists,
//!   names);
//! - `lookup`: catalog facts about existing relations (kind, name, children,
//!   foreign keys, sequences, constraints, whether a type change rewrites);
//! - `model`: what a statement does (`Target`, `Analysis`) and the script as
//!   far as it has been read (`Script`);
//! - `walk`: the relations a raw tree names (the tables a query reads, the
//!   sequences a default names);
//! - `alter_table`: the rules of ALTER TABLE (ADD COLUMN included);
//! - `rules`: the rules of every other statement, and which statements run
//!   only outside a transaction block;
//! - `sql`: parsing a script, the size of a relation, the rows of
//!   migrate_analyze.
//!
//! `migrate_analyze` itself is defined here: pgrx finds the `requires` of
//! `extension_sql_file!` in lib.rs by the module a function is defined in.

mod alter_table;
mod lookup;
mod model;
mod nodes;
mod rules;
mod sql;
mod walk;

pub use model::{Analysis, Script, Target};
pub use rules::statement;
pub(crate) use rules::top_level_only;
pub use sql::{analyze, parse_script, rates, Parsed, MAX_SCRIPT};

use crate::sys;
use pgrx::prelude::*;

/// What each statement of `sql` locks, rewrites and scans, its risk and a
/// safer recipe, without executing anything.  Names resolve as the
/// caller's session resolves them.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
pub fn migrate_analyze(
    sql: &str,
) -> TableIterator<
    'static,
    (
        name!(statement, i32),
        name!(statement_sql, String),
        name!(command, String),
        name!(relation, Option<sys::RegClass>),
        name!(lock_mode, Option<String>),
        name!(blocks_reads, Option<bool>),
        name!(blocks_writes, Option<bool>),
        name!(rewrites, Option<bool>),
        name!(scans, Option<bool>),
        name!(in_transaction, bool),
        name!(table_bytes, Option<i64>),
        name!(row_estimate, Option<i64>),
        name!(estimated_duration, Option<pgrx::datum::Interval>),
        name!(risk, String),
        name!(reason, String),
        name!(recipe, Option<String>),
    ),
> {
    TableIterator::new(analyze(sql).into_iter().map(|r| {
        (
            r.0,
            r.1,
            r.2,
            r.3.map(sys::RegClass),
            r.4,
            r.5,
            r.6,
            r.7,
            r.8,
            r.9,
            r.10,
            r.11,
            r.12.map(sys::tenths_interval),
            r.13,
            r.14,
            r.15,
        )
    }))
}
