//! migrate_set_not_null: SET NOT NULL on a big, live table without holding
//! ACCESS EXCLUSIVE while the table is scanned.  Four steps, each its own
//! transaction, committed with the job's cursor:
//!
//! 1. `ADD CONSTRAINT helper CHECK (col IS NOT NULL) NOT VALID`: a moment
//!    of ACCESS EXCLUSIVE, no scan; new rows must have a value from now on;
//! 2. `VALIDATE CONSTRAINT helper`: the scan, under SHARE UPDATE EXCLUSIVE,
//!    so reads and writes go on;
//! 3. `ALTER COLUMN col SET NOT NULL`: a moment of ACCESS EXCLUSIVE, no
//!    scan (PostgreSQL 12+ takes the valid check as proof);
//! 4. `DROP CONSTRAINT helper`.
//!
//! Every step runs as the job's owner with the job's `lock_timeout`; a step
//! that cannot get its lock in time is retried after a growing pause, so it
//! never waits in the lock queue in front of the application's queries.
//! After a crash the job goes on at the step it was at.

use super::ddl::{
    advance, caught, check_target, lock_policy, next_step, qualified, require_writable,
    run_as_owner, run_step, LockPolicy, Ran, Target,
};
use super::model::{Driver, Facts, JobKind, StepReport, Work};
use crate::api::args::{gate_options, migration_option, run_at_option};
use crate::catalog::jobs::{self, Gates, Job};
use crate::catalog::{as_owner, builds};
use crate::engine::keyset::{display_ident, display_qualified, quote_ident};
use crate::engine::locks::{helper_name, LockMode};
use crate::error::{MigrateError, OrReport};
use crate::runner::outcome::{fail, succeed};
use crate::sys::{self, Caught, Identity};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::PgRelation;
use serde::{Deserialize, Serialize};

pub static FACTS: Facts = Facts {
    name: "set_not_null",
    noun: "NOT NULL change",
    table_lock: LockMode::AccessExclusive,
    locks_index: false,
    one_per_table: Some("definition change"),
    counts_rows: false,
    on_index: false,
    orphaned: "its worker stopped; it goes on at the step where it stopped",
};

/// What a job needs to know, stored in its spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotNullSpec {
    pub column: String,
    /// The helper check's name.
    pub constraint: String,
    #[serde(flatten)]
    pub policy: LockPolicy,
}

/// The steps, in order: what each does, as the job's phase shows it.
const STEPS: [&str; 4] = [
    "adding the check NOT VALID (a moment of ACCESS EXCLUSIVE)",
    "validating the check (SHARE UPDATE EXCLUSIVE: reads and writes go on)",
    "setting NOT NULL (a moment of ACCESS EXCLUSIVE, no scan)",
    "dropping the check",
];

/// Step `n` as SQL; `ident` quotes a name (always, to run it; only where
/// needed, to show it).
fn statement(n: usize, table: &str, spec: &NotNullSpec, ident: fn(&str) -> String) -> String {
    let col = ident(&spec.column);
    let con = ident(&spec.constraint);
    match n {
        0 => {
            format!("ALTER TABLE {table} ADD CONSTRAINT {con} CHECK ({col} IS NOT NULL) NOT VALID")
        }
        1 => format!("ALTER TABLE {table} VALIDATE CONSTRAINT {con}"),
        2 => format!("ALTER TABLE {table} ALTER COLUMN {col} SET NOT NULL"),
        _ => format!("ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {con}"),
    }
}

pub struct SetNotNull;

impl JobKind for SetNotNull {
    fn facts(&self) -> &'static Facts {
        &FACTS
    }

    fn work(&self) -> Work {
        Work::Steps(step)
    }

    fn progress_line(&self, job: &Job) -> String {
        super::ddl::progress_line(job, &STEPS)
    }

    fn success_line(&self, job: &Job) -> String {
        let column = job.spec["column"].as_str().unwrap_or_default();
        format!(
            "job {} succeeded: column {} of {} is NOT NULL",
            job.id,
            display_ident(column),
            job.relation
        )
    }
}

/// Is the column NOT NULL (None: no such column)?
fn column_not_null(relid: pg_sys::Oid, column: &str) -> Option<bool> {
    Spi::get_one_with_args::<bool>(
        "SELECT a.attnotnull FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        &[relid.into(), column.into()],
    )
    .ok()
    .flatten()
}

/// Is the column NOT NULL already, and does a constraint of this name exist?
fn column_state(relid: pg_sys::Oid, spec: &NotNullSpec) -> (Option<bool>, bool) {
    let not_null = column_not_null(relid, &spec.column);
    let helper = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conrelid = $1 AND c.conname = $2)",
        &[relid.into(), spec.constraint.as_str().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    (not_null, helper)
}

fn step(job: &Job, _driver: Driver) -> StepReport {
    let (spec, table) = match super::job::spec_and_table::<NotNullSpec>(job) {
        Ok(found) => found,
        Err(e) => return fail(job, &e),
    };
    let qualified = qualified(&table);
    let mut n = next_step(job);
    let (not_null, helper) = sys::pinned(|| column_state(job.relid, &spec));
    let Some(not_null) = not_null else {
        return fail(
            job,
            &caught(
                "42703",
                format!(
                    "column {} of {} was dropped",
                    display_ident(&spec.column),
                    job.relation
                ),
                None,
                None,
            ),
        );
    };
    // Steps already done by other means are skipped, not repeated.
    if n == 0 && not_null && !helper {
        return succeed(job);
    }
    if n == 0 && helper {
        n = 1;
    }
    if n == 2 && not_null {
        n = 3;
    }
    if n >= STEPS.len() {
        return succeed(job);
    }
    let sql = statement(n, &qualified, &spec, quote_ident);
    as_owner(|| builds::set_phase(job.id, Some(STEPS[n])));
    match run_step(job, spec.policy, &sql, n, STEPS.len(), STEPS[n]) {
        Ran::Done => advance(job, n + 1, &STEPS),
        Ran::Later(report) => report,
        Ran::Failed {
            error,
            gave_up: true,
        } => fail(job, &error),
        Ran::Failed { mut error, .. } => {
            if n == 1 && error.sqlstate == "23514" {
                error = null_row(job, &spec, &qualified, error);
            }
            // A failed job leaves the table as it found it: the helper
            // check goes (it would refuse every update of a row that is
            // still NULL), and a retry starts again from the first step.
            if (1..=2).contains(&n) {
                let check = display_ident(&spec.constraint);
                let before = error
                    .hint
                    .take()
                    .map(|h| format!("{h} "))
                    .unwrap_or_default();
                let drop = statement(3, &qualified, &spec, quote_ident);
                if run_as_owner(job, spec.policy, &drop).is_none() {
                    as_owner(|| jobs::set_cursor(job.id, &["0".to_string()]));
                    error.hint = Some(format!(
                        "{before}The helper check {check} was dropped; migrate_retry({}) starts again from the first step.",
                        job.id
                    ));
                } else {
                    error.hint = Some(format!(
                        "{before}The helper check {check} could not be dropped now (NOT VALID: it refuses new NULLs and updates of rows still NULL); migrate_retry({}) goes on from the validation, or drop it with ALTER TABLE {} DROP CONSTRAINT {check}.",
                        job.id,
                        job.relation
                    ));
                }
            }
            fail(job, &error)
        }
    }
}

/// VALIDATE found a NULL: name the row, and say what the helper check does
/// meanwhile.
fn null_row(job: &Job, spec: &NotNullSpec, table: &str, mut e: Caught) -> Caught {
    let col = quote_ident(&spec.column);
    let key = sys::subtransaction(false, || {
        let _identity = Identity::become_role(job.owner, true);
        let pk: Vec<String> = Spi::connect(|c| {
            c.select(
                "SELECT a.attname::text FROM pg_catalog.pg_index i
                   JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid
                                                 AND a.attnum OPERATOR(pg_catalog.=) ANY (i.indkey)
                  WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary
                  ORDER BY pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum)",
                None,
                &[job.relid.into()],
            )
            .map(|rows| rows.filter_map(|r| r.get::<String>(1).ok().flatten()).collect())
        })
        .unwrap_or_default();
        let cols = if pk.is_empty() {
            "ctid".to_string()
        } else {
            pk.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ")
        };
        let names = if pk.is_empty() { "ctid".to_string() } else { pk.join(", ") };
        Spi::get_one::<String>(&format!(
            "SELECT pg_catalog.format('(%s)=(%s)', {}, pg_catalog.concat_ws(', ', {cols})) FROM {table} WHERE {col} IS NULL LIMIT 1",
            crate::error::literal(&names)
        ))
        .ok()
        .flatten()
    })
    .ok()
    .flatten();
    e.message = format!(
        "column {} of {} has NULL values",
        display_ident(&spec.column),
        job.relation
    );
    e.detail = key.map(|k| format!("Failing row: {k}."));
    e.hint = Some(format!(
        "Fill the NULLs first (migrate_backfill with where_clause => '{} IS NULL').",
        display_ident(&spec.column).replace('\'', "''"),
    ));
    e
}

/// Queue a job that makes `column_name` of `relation` NOT NULL in four
/// short steps (see the module's doc).  Checked now, as the caller, who must
/// own the table; a background worker (or CALL migrate_run) runs it.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn migrate_set_not_null(
    relation: Option<PgRelation>,
    column_name: Option<&str>,
    lock_timeout: default!(Option<Interval>, "'2s'"),
    max_retries: default!(Option<i32>, 10),
    run_at: default!(Option<TimestampWithTimeZone>, NULL),
    migration: default!(Option<Vec<Option<String>>>, NULL),
    after_jobs: default!(Option<Vec<Option<i64>>>, NULL),
    after_migration: default!(Option<Vec<Option<String>>>, NULL),
) -> i64 {
    let relid = relation
        .ok_or(MigrateError::NullArgument { arg: "relation" })
        .or_report()
        .oid();
    let column = column_name
        .ok_or(MigrateError::NullArgument { arg: "column_name" })
        .or_report();
    let policy = lock_policy(lock_timeout, max_retries);
    let migration = migration_option(migration);
    let gates = gate_options(after_jobs, after_migration);
    require_writable(c"migrate_set_not_null()");
    let target = check_target(
        relid,
        "migrate_set_not_null()",
        "change its columns",
        (
            "A partitioned table's NOT VALID constraint cannot be validated partition by partition by one job yet.",
            "Run migrate_set_not_null on each partition; then SET NOT NULL on the parent finds every partition's column NOT NULL and scans nothing.",
        ),
    );
    queue(
        relid,
        &target,
        column,
        policy,
        run_at_option(run_at),
        migration,
        &gates,
    )
}

/// Queue the job on a checked target (migrate_set_not_null, and
/// migrate_add_constraint for a primary key's nullable columns).
pub fn queue(
    relid: pg_sys::Oid,
    target: &Target,
    column: &str,
    policy: LockPolicy,
    run_at: Option<TimestampWithTimeZone>,
    migration: Option<(String, String)>,
    gates: &Gates,
) -> i64 {
    let Some(not_null) = sys::pinned(|| column_not_null(relid, column)) else {
        MigrateError::NoSuchColumn {
            relation: target.display.clone(),
            column: column.to_string(),
        }
        .report()
    };
    if not_null {
        pgrx::notice!(
            "column {} of {} is NOT NULL already: the job will have nothing to do",
            display_ident(column),
            target.display
        );
    }
    let spec = NotNullSpec {
        column: column.to_string(),
        constraint: helper_name(&target.table, column, "not_null"),
        policy,
    };
    let shown = display_qualified(&target.schema, &target.table);
    let command = (0..STEPS.len())
        .map(|n| format!("{};", statement(n, &shown, &spec, display_ident)))
        .collect::<Vec<_>>()
        .join("\n");
    super::ddl::queue(super::ddl::NewChange {
        kind: FACTS.name,
        relid,
        target,
        spec: serde_json::to_value(&spec).expect("spec serialises"),
        command,
        description: format!(
            "NOT NULL on {}.{} by pg_migrate",
            shown,
            display_ident(column)
        ),
        run_at,
        migration,
        gates,
    })
}
