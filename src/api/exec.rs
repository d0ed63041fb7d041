//! The internal functions behind CALL migrate_exec (sql/050_locks.sql):
//! split and check the script, record every attempt, link the whole to a
//! migration run.  The procedure itself commits after every statement.

use crate::api::analyze::{parse_script, top_level_only};
use crate::api::backfill::{interval_ms, may_write_history, migration_option, start_linked_run};
use crate::catalog::history as log;
use crate::catalog::{as_owner, current_role_name};
use crate::engine::history::Outcome;
use crate::engine::locks::LockMode;
use crate::error::{MigrateError, OrReport};
use crate::sys;
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;

use pg_sys::NodeTag as T;

/// Why a statement cannot run inside migrate_exec, if it cannot.
unsafe fn refused(node: *mut pg_sys::Node) -> Option<(&'static str, String)> {
    unsafe {
        if (*node).type_ == T::T_TransactionStmt {
            return Some((
                "0A000",
                "migrate_exec commits after each statement itself; transaction control has no place in its script.".into(),
            ));
        }
        top_level_only(node).map(|instead| {
            (
                "25001",
                format!("It cannot run inside a transaction block, and migrate_exec runs each statement in one. {instead}"),
            )
        })
    }
}

/// The statements of a migrate_exec script, checked before any runs.
#[pg_extern(
    volatile,
    parallel_unsafe,
    schema = "pgmigrate",
    name = "_exec_statements"
)]
pub fn exec_statements(
    sql: Option<&str>,
) -> TableIterator<'static, (name!(statement, i32), name!(sql, String))> {
    let sql = sql
        .ok_or(MigrateError::NullArgument { arg: "sql" })
        .or_report();
    let parsed = parse_script(sql, "sql");
    if parsed.is_empty() {
        MigrateError::EmptyArgument { arg: "sql" }.report();
    }
    let mut rows = vec![];
    for p in parsed {
        if let Some((state, why)) = unsafe { refused(p.node) } {
            sys::raise_at(
                &sys::Caught {
                    sqlstate: state.into(),
                    message: format!(
                        "statement {} of the script cannot run in migrate_exec",
                        p.number
                    ),
                    detail: Some(format!("The statement: {}", p.text)),
                    hint: Some(why),
                },
                sql,
                0,
                None,
            )
        }
        rows.push((p.number as i32, p.text));
    }
    TableIterator::new(rows)
}

/// Check the options, start the linked migration run; returns the id of
/// this execution and the run (NULL without a migration).
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "_exec_begin")]
pub fn exec_begin(
    lock_timeout: Option<Interval>,
    attempts: Option<i32>,
    retry_delay: Option<Interval>,
    migration: Option<Vec<Option<String>>>,
) -> TableIterator<'static, (name!(exec_id, i64), name!(run_id, Option<i64>))> {
    if sys::in_transaction_block() {
        MigrateError::InTransactionBlock {
            what: "migrate_exec()",
        }
        .report();
    }
    let lt = interval_ms("lock_timeout", lock_timeout);
    if !(1..=3_600_000).contains(&lt) {
        MigrateError::OutOfRange {
            arg: "lock_timeout",
            value: format!("{lt} ms"),
            allowed: "a lock_timeout from 1 ms to 1 hour, such as '2s': the point is to give up waiting before the queue behind the statement grows",
        }
        .report();
    }
    let n = attempts.unwrap_or(10);
    if !(1..=1000).contains(&n) {
        MigrateError::OutOfRange {
            arg: "attempts",
            value: n.to_string(),
            allowed: "attempts from 1 to 1000",
        }
        .report();
    }
    let rd = interval_ms("retry_delay", retry_delay);
    if rd < 0 {
        MigrateError::Negative { arg: "retry_delay" }.report();
    }
    let migration = migration_option(migration);
    let role = current_role_name();
    let run = start_linked_run(
        migration.as_ref(),
        may_write_history(),
        "migrate_exec",
        &role,
    )
    .map(|(_, _, r)| r);
    let id = Spi::get_one::<i64>("SELECT nextval('pgmigrate.exec_id_seq')")
        .ok()
        .flatten()
        .unwrap_or(0);
    TableIterator::new(vec![(id, run)])
}

/// Record one attempt of one statement (as the caller, whose role is
/// written down; the row is stored by the extension's owner).
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "_exec_record")]
#[allow(clippy::too_many_arguments)]
pub fn exec_record(
    exec_id: i64,
    run_id: Option<i64>,
    statement: i32,
    sql: &str,
    attempt: i32,
    outcome: &str,
    sqlstate: Option<&str>,
    error: Option<&str>,
    blockers: Option<&str>,
    started_at: TimestampWithTimeZone,
    lock_timeout: Interval,
) {
    let role = current_role_name();
    as_owner(|| {
        Spi::run_with_args(
            "INSERT INTO pgmigrate.exec_attempts
                 (exec_id, run_id, statement, sql, attempt, outcome, sqlstate, error, blockers,
                  started_at, duration, lock_timeout, role_name)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, pg_catalog.clock_timestamp() - $10, $11, $12)",
            &[
                exec_id.into(),
                run_id.into(),
                statement.into(),
                sql.into(),
                attempt.into(),
                outcome.into(),
                sqlstate.into(),
                error.into(),
                blockers.into(),
                started_at.into(),
                lock_timeout.into(),
                role.as_str().into(),
            ],
        )
    })
    .unwrap_or_else(|e| pgrx::error!("pg_migrate: recording an attempt failed: {e}"));
}

/// Finish the linked migration run.
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "_exec_finish")]
pub fn exec_finish(run_id: i64, ok: bool, error: Option<&str>) {
    // The same grant migrate_finish needs: this is callable directly.
    if !may_write_history() {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "permission denied to finish a migration run",
            "pg_migrate",
        )
        .set_hint("Writing migration history needs EXECUTE on migrate_start and migrate_finish.")
        .report(PgLogLevel::ERROR);
    }
    let role = current_role_name();
    let outcome = if ok {
        Outcome::Applied
    } else {
        Outcome::Failed
    };
    as_owner(|| log::finish_run(run_id, outcome, error, &role)).or_report();
}

/// Does a lock in mode `held` (as pg_locks names it) conflict with a
/// request for `wanted`?  NULL for a name that is not a table lock mode.
#[pg_extern(
    immutable,
    parallel_safe,
    strict,
    schema = "pgmigrate",
    name = "lock_conflicts"
)]
pub fn lock_conflicts(held: &str, wanted: &str) -> Option<bool> {
    Some(LockMode::from_name(held)?.conflicts_with(LockMode::from_name(wanted)?))
}

/// A lock mode's name as pg_locks shows it, from either spelling; an
/// error for anything else.
#[pg_extern(
    immutable,
    parallel_safe,
    strict,
    schema = "pgmigrate",
    name = "lock_mode"
)]
pub fn lock_mode(mode: &str) -> &'static str {
    match LockMode::from_name(mode) {
        Some(m) => m.name(),
        None => {
            MigrateError::InvalidValue {
                arg: "lock_mode",
                value: mode.to_string(),
                allowed: "a table lock mode: AccessShareLock, RowShareLock, RowExclusiveLock, ShareUpdateExclusiveLock, ShareLock, ShareRowExclusiveLock, ExclusiveLock or AccessExclusiveLock (or as LOCK TABLE spells them, such as 'ACCESS EXCLUSIVE')",
            }
            .report()
        }
    }
}

/// Register a planned script: every relation its statements will lock
/// shows in migrate_lock_risk until migrate_unplan.  Returns the plan id.
// Not pinned to a search_path: names in the script resolve as the caller's
// session resolves them.
#[pg_extern(volatile, parallel_unsafe)]
pub fn migrate_plan(sql: Option<&str>, note: default!(Option<&str>, NULL)) -> i64 {
    let sql = sql
        .ok_or(MigrateError::NullArgument { arg: "sql" })
        .or_report();
    let rows = crate::api::analyze::analyze(sql);
    if rows.is_empty() {
        MigrateError::EmptyArgument { arg: "sql" }.report();
    }
    let owner = unsafe { pg_sys::GetUserId() };
    as_owner(|| {
        let id = Spi::get_one::<i64>("SELECT nextval('pgmigrate.plan_id_seq')")?.unwrap_or(0);
        for r in &rows {
            if let (Some(rel), Some(mode)) = (r.3, &r.4) {
                Spi::run_with_args(
                    "INSERT INTO pgmigrate.planned (plan_id, statement, sql, command, relid, lock_mode, note, owner)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    &[
                        id.into(),
                        r.0.into(),
                        r.1.as_str().into(),
                        r.2.as_str().into(),
                        rel.into(),
                        mode.as_str().into(),
                        note.into(),
                        owner.into(),
                    ],
                )?;
            }
        }
        Ok::<_, pgrx::spi::Error>(id)
    })
    .unwrap_or_else(|e| pgrx::error!("pg_migrate: registering the plan failed: {e}"))
}

/// Forget a planned script (its owner, members of the owner's role and
/// superusers may).  Returns how many relations it had.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
pub fn migrate_unplan(plan_id: Option<i64>) -> i64 {
    let id = plan_id
        .ok_or(MigrateError::NullArgument { arg: "plan_id" })
        .or_report();
    let user = unsafe { pg_sys::GetUserId() };
    let mine = as_owner(|| {
        Spi::get_one_with_args::<bool>(
            "SELECT bool_and(pg_catalog.pg_has_role($2, p.owner, 'MEMBER')) FROM pgmigrate.planned p WHERE p.plan_id = $1",
            &[id.into(), user.into()],
        )
    })
    .ok()
    .flatten();
    match mine {
        None => 0,
        Some(false) => {
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("must be a member of the role that planned plan {id}"),
                "pg_migrate",
            )
            .set_hint("The role that called migrate_plan(), a member of it or a superuser can remove it.")
            .report(PgLogLevel::ERROR);
            unreachable!()
        }
        Some(true) => as_owner(|| {
            Spi::get_one_with_args::<i64>(
                "WITH d AS (DELETE FROM pgmigrate.planned WHERE plan_id = $1 RETURNING 1) SELECT count(*) FROM d",
                &[id.into()],
            )
        })
        .ok()
        .flatten()
        .unwrap_or(0),
    }
}
