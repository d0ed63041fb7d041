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

use super::model::{Driver, Facts, JobKind, StepReport, Work};
use super::queue::announce;
use crate::api::args::{
    int_arg, interval_ms, may_write_history, migration_option, qualified_display, relkind_name,
    run_at_option, start_linked_run,
};
use crate::catalog::jobs::{self, Job, NewJob};
use crate::catalog::{as_owner, builds, current_role_name};
use crate::engine::jobs::{self as rules, ErrorClass, JobState};
use crate::engine::keyset::{display_ident, display_qualified, quote_ident};
use crate::engine::locks::{helper_name, LockMode};
use crate::engine::pace::jittered;
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
    one_per_table: Some("column change"),
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
    pub lock_timeout_ms: i64,
    pub max_retries: i32,
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
        let n = next_step(job);
        match job.state {
            JobState::Waiting => format!(
                "job {}: step {} of 4 waits: {}",
                job.id,
                n + 1,
                job.wait_reason.clone().unwrap_or_default()
            ),
            _ => format!("job {}: step {} of 4: {}", job.id, n + 1, STEPS[n.min(3)]),
        }
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

/// The step the job does next (0-based), from its cursor.
fn next_step(job: &Job) -> usize {
    job.cursor
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn caught(sqlstate: &str, message: String, detail: Option<String>, hint: Option<String>) -> Caught {
    Caught {
        sqlstate: sqlstate.into(),
        message,
        detail,
        hint,
    }
}

/// Is the column NOT NULL already, and does a constraint of this name exist?
fn column_state(relid: pg_sys::Oid, spec: &NotNullSpec) -> (Option<bool>, bool) {
    let not_null = Spi::get_one_with_args::<bool>(
        "SELECT a.attnotnull FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        &[relid.into(), spec.column.as_str().into()],
    )
    .ok()
    .flatten();
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
    let (spec, table) = match super::job::spec_of::<NotNullSpec>(job)
        .and_then(|spec| super::job::table_of(job).map(|table| (spec, table)))
    {
        Ok(found) => found,
        Err(e) => return fail(job, &e),
    };
    let qualified = format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    );
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
    if n >= 4 {
        return succeed(job);
    }
    let sql = statement(n, &qualified, &spec, quote_ident);
    as_owner(|| builds::set_phase(job.id, Some(STEPS[n])));
    sys::report_activity(&format!("pg_migrate: job {}: {}", job.id, sql));
    let started = std::time::Instant::now();
    let ran = sys::subtransaction(true, || {
        let _identity = Identity::become_role(job.owner, true);
        sys::set_local(
            "lock_timeout",
            &format!("{}ms", spec.lock_timeout_ms.max(1)),
        );
        Spi::run(&sql)
    });
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let error = match ran {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(caught("XX000", format!("{sql}: {e}"), None, None)),
        Err(e) => Some(e),
    };
    match error {
        None => {
            let next = n + 1;
            if next >= STEPS.len() {
                return succeed(job);
            }
            as_owner(|| jobs::advance(job.id, &[next.to_string()], Some(STEPS[next])));
            StepReport::again(0, None)
        }
        Some(e) => match rules::classify(&e.sqlstate, ms, 0) {
            ErrorClass::Retry(reason) => {
                let attempt = job.retries + 1;
                if attempt > spec.max_retries {
                    let mut e = e.clone();
                    e.detail = Some(format!(
                        "Step {} of 4 ({}) gave up after {} retries ({reason}).",
                        n + 1,
                        STEPS[n],
                        spec.max_retries
                    ));
                    e.hint = Some(format!(
                        "Find what holds locks on the table with migrate_blockers('{}'), then migrate_retry({}).",
                        job.relation.replace('\'', "''"),
                        job.id
                    ));
                    return fail(job, &e);
                }
                let seed =
                    (job.id as u64) << 20 ^ attempt as u64 ^ started.elapsed().as_nanos() as u64;
                let backoff = jittered(rules::backoff_ms(attempt), seed);
                let why = format!(
                    "step {} of 4: {reason}; retry {attempt} of {} in {}",
                    n + 1,
                    spec.max_retries,
                    rules::human_seconds(backoff as f64 / 1000.0)
                );
                as_owner(|| {
                    jobs::retry_later(job.id, attempt, &why, &e, backoff, job.batch_size as i64)
                });
                StepReport {
                    state: JobState::Waiting,
                    done: false,
                    sleep_ms: backoff,
                    notice: None,
                }
            }
            _ => {
                let mut e = e;
                if n == 1 && e.sqlstate == "23514" {
                    e = null_row(job, &spec, &qualified, e);
                }
                // A failed job leaves the table as it found it: the helper
                // check goes (it would refuse every update of a row that is
                // still NULL), and a retry starts again from the first step.
                if (1..=2).contains(&n) {
                    let check = display_ident(&spec.constraint);
                    if drop_helper(job, &spec, &qualified) {
                        as_owner(|| jobs::set_cursor(job.id, &["0".to_string()]));
                        e.hint = Some(format!(
                            "{}The helper check {check} was dropped; migrate_retry({}) starts again from the first step.",
                            e.hint.map(|h| format!("{h} ")).unwrap_or_default(),
                            job.id
                        ));
                    } else {
                        e.hint = Some(format!(
                            "{}The helper check {check} could not be dropped now (NOT VALID: it refuses new NULLs and updates of rows still NULL); migrate_retry({}) goes on from the validation, or drop it with ALTER TABLE {} DROP CONSTRAINT {check}.",
                            e.hint.map(|h| format!("{h} ")).unwrap_or_default(),
                            job.id,
                            job.relation
                        ));
                    }
                }
                fail(job, &e)
            }
        },
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

/// Drop the helper check after a failure, as the owner, under the job's
/// lock_timeout.  False when it could not (it stays).
fn drop_helper(job: &Job, spec: &NotNullSpec, table: &str) -> bool {
    let sql = statement(3, table, spec, quote_ident);
    matches!(
        sys::subtransaction(true, || {
            let _identity = Identity::become_role(job.owner, true);
            sys::set_local(
                "lock_timeout",
                &format!("{}ms", spec.lock_timeout_ms.max(1)),
            );
            Spi::run(&sql)
        }),
        Ok(Ok(()))
    )
}

/// Queue a job that makes `column_name` of `relation` NOT NULL in four
/// short steps (see the module's doc).  Checked now, as the caller, who must
/// own the table; a background worker (or CALL migrate_run) runs it.
#[pg_extern(volatile, parallel_unsafe)]
fn migrate_set_not_null(
    relation: Option<PgRelation>,
    column_name: Option<&str>,
    lock_timeout: default!(Option<Interval>, "'2s'"),
    max_retries: default!(Option<i32>, 10),
    run_at: default!(Option<TimestampWithTimeZone>, NULL),
    migration: default!(Option<Vec<Option<String>>>, NULL),
) -> i64 {
    let relid = relation
        .ok_or(MigrateError::NullArgument { arg: "relation" })
        .or_report()
        .oid();
    let column = column_name
        .ok_or(MigrateError::NullArgument { arg: "column_name" })
        .or_report();
    let lock_timeout_ms = interval_ms("lock_timeout", lock_timeout);
    if lock_timeout_ms < 1 {
        MigrateError::OutOfRange {
            arg: "lock_timeout",
            value: format!("{lock_timeout_ms} ms"),
            allowed: "a lock_timeout of at least 1 ms; a step never waits for its lock without one",
        }
        .report();
    }
    let max_retries = int_arg(
        "max_retries",
        max_retries,
        0,
        1000,
        "max_retries from 0 to 1000",
    );
    let migration = migration_option(migration);
    unsafe {
        pg_sys::PreventCommandIfReadOnly(c"migrate_set_not_null()".as_ptr());
        pg_sys::PreventCommandDuringRecovery(c"migrate_set_not_null()".as_ptr());
    }
    let (schema, table, kind, owned, not_null, persistence) = sys::pinned(|| target(relid, column));
    let display = qualified_display(&schema, &table);
    if persistence == b't' {
        MigrateError::CannotChange {
            what: format!("temporary table {display}"),
            why: "A temporary table belongs to its session; a background worker cannot see it.",
        }
        .report();
    }
    if schema == "pg_catalog" || schema == "information_schema" || schema == "pg_toast" {
        MigrateError::CannotChange {
            what: format!("system table {display}"),
            why: "System catalogs are PostgreSQL's own.",
        }
        .report();
    }
    match kind {
        b'r' => {}
        b'p' => MigrateError::PartitionedTable {
            relation: display.clone(),
            why: "A partitioned table's NOT VALID check cannot be validated partition by partition by one job yet.",
            instead: "Run migrate_set_not_null on each partition; then SET NOT NULL on the parent finds every partition's column NOT NULL and scans nothing.",
        }
        .report(),
        other => MigrateError::NotATableFor {
            relation: display.clone(),
            kind: relkind_name(other),
            what: "migrate_set_not_null()",
        }
        .report(),
    }
    if !owned {
        MigrateError::NotTableOwner {
            relation: display.clone(),
            to: "change its columns",
        }
        .report();
    }
    let Some(not_null) = not_null else {
        MigrateError::NoSuchColumn {
            relation: display.clone(),
            column: column.to_string(),
        }
        .report()
    };
    if not_null {
        pgrx::notice!(
            "column {} of {} is NOT NULL already: the job will have nothing to do",
            display_ident(column),
            display
        );
    }
    let spec = NotNullSpec {
        column: column.to_string(),
        constraint: helper_name(&table, column, "not_null"),
        lock_timeout_ms,
        max_retries,
    };
    let shown = display_qualified(&schema, &table);
    let command = (0..STEPS.len())
        .map(|n| format!("{};", statement(n, &shown, &spec, display_ident)))
        .collect::<Vec<_>>()
        .join("\n");
    let owner = unsafe { pg_sys::GetUserId() };
    let role = current_role_name();
    let link_allowed = migration.is_none() || may_write_history();
    let description = format!(
        "NOT NULL on {}.{} by pg_migrate",
        shown,
        display_ident(column)
    );
    let id = as_owner(|| {
        let run = start_linked_run(migration.as_ref(), link_allowed, &description, &role);
        jobs::insert(NewJob {
            kind: FACTS.name,
            relid,
            relation: &display,
            owner,
            spec: serde_json::to_value(&spec).expect("spec serialises"),
            command: &command,
            batch_size: None,
            run_at: run_at_option(run_at),
            migration: run,
            index_oid: None,
        })
    });
    announce(id, false);
    id
}

/// The table's schema, name and kind, whether the caller may act as its
/// owner, and whether the column is NOT NULL (None: no such column).
type Target = (String, String, u8, bool, Option<bool>, u8);

fn target(relid: pg_sys::Oid, column: &str) -> Target {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text,
                    pg_catalog.pg_has_role(c.relowner, 'USAGE'),
                    (SELECT a.attnotnull FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped),
                    c.relpersistence::text
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = $1",
            None,
            &[relid.into(), column.into()],
        )?;
        Ok::<_, pgrx::spi::Error>(match rows.into_iter().next() {
            Some(r) => (
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.and_then(|k| k.bytes().next()).unwrap_or(b'?'),
                r.get::<bool>(4)?.unwrap_or(false),
                r.get::<bool>(5)?,
                r.get::<String>(6)?.and_then(|k| k.bytes().next()).unwrap_or(b'p'),
            ),
            None => (String::new(), String::new(), b'?', false, None, b'p'),
        })
    })
    .unwrap_or_else(|_| (String::new(), String::new(), b'?', false, None, b'p'))
}
