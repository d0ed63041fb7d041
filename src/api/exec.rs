//! The internal functions behind CALL migrate_exec (sql/050_locks.sql):
//! split and check the script, record every attempt, link the whole to a
//! migration run.  The procedure itself commits after every statement.

use crate::api::analyze::{parse_script, top_level_only};
use crate::api::args::{interval_ms, may_write_history, migration_option, start_linked_run};
use crate::catalog::history as log;
use crate::catalog::{as_owner, current_role_name};
use crate::engine::history::Outcome;
use crate::engine::locks::LockMode;
use crate::error::{MigrateError, OrReport};
use crate::sys;
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

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

/// The statements of a migrate_exec script, each checked before any runs.
fn checked_statements(sql: Option<&str>) -> Vec<String> {
    let sql = sql
        .ok_or(MigrateError::NullArgument { arg: "sql" })
        .or_report();
    let parsed = parse_script(sql, "sql");
    if parsed.is_empty() {
        MigrateError::EmptyArgument { arg: "sql" }.report();
    }
    let mut out = vec![];
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
        out.push(p.text);
    }
    out
}

/// A migrate_exec run of this session.  Only this backend's memory holds
/// it: another session, or another role in this one, cannot record or
/// finish an attempt of it, and every attempt recorded is one that
/// `_exec_attempt` itself ran.
struct ExecRun {
    role: pg_sys::Oid,
    run_id: Option<i64>,
    statements: Vec<String>,
    lock_timeout: Interval,
    attempts: i32,
    retry_delay_ms: i64,
    /// Attempts made of each statement so far.
    tries: Vec<i32>,
    /// The error to raise once the procedure has committed the record.
    error: Option<sys::Caught>,
}

thread_local! {
    static RUNS: RefCell<HashMap<i64, ExecRun>> = RefCell::new(HashMap::new());
}

/// The run `exec_id` of this session, for the role that began it.
fn with_run<R>(exec_id: i64, f: impl FnOnce(&mut ExecRun) -> R) -> R {
    let me = unsafe { pg_sys::GetUserId() };
    RUNS.with_borrow_mut(|runs| match runs.get_mut(&exec_id) {
        Some(run) if run.role == me => f(run),
        _ => {
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("migrate_exec run {exec_id} is not one this session began"),
                "pg_migrate",
            )
            .set_hint("Run DDL with CALL migrate_exec(...); its attempts are recorded by the procedure itself.")
            .report(PgLogLevel::ERROR);
            unreachable!()
        }
    })
}

/// CALL migrate_exec, first step: check the whole script and the options,
/// start the linked migration run; returns the id of this execution and
/// how many statements it has.
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "_exec_begin")]
pub fn exec_begin(
    sql: Option<&str>,
    lock_timeout: Option<Interval>,
    attempts: Option<i32>,
    retry_delay: Option<Interval>,
    migration: Option<Vec<Option<String>>>,
) -> TableIterator<
    'static,
    (
        name!(exec_id, i64),
        name!(run_id, Option<i64>),
        name!(statements, i32),
    ),
> {
    if sys::in_transaction_block() {
        MigrateError::InTransactionBlock {
            what: "migrate_exec()",
        }
        .report();
    }
    let statements = checked_statements(sql);
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
    let link_allowed = may_write_history();
    let run =
        as_owner(|| start_linked_run(migration.as_ref(), link_allowed, "migrate_exec", &role))
            .map(|(_, _, r)| r);
    let id = as_owner(|| Spi::get_one::<i64>("SELECT pg_catalog.nextval('pgmigrate.exec_id_seq')"))
        .ok()
        .flatten()
        .unwrap_or(0);
    let count = statements.len() as i32;
    RUNS.with_borrow_mut(|runs| {
        runs.insert(
            id,
            ExecRun {
                role: unsafe { pg_sys::GetUserId() },
                run_id: run,
                tries: vec![0; statements.len()],
                statements,
                lock_timeout: lock_timeout.expect("checked above"),
                attempts: n,
                retry_delay_ms: rd,
                error: None,
            },
        )
    });
    TableIterator::once((id, run, count))
}

/// Sessions holding or awaiting locks that `sql` would queue behind, in
/// one line for the attempt log (read with the caller's rights).
fn blockers(sql: &str) -> Option<String> {
    let wanted: Vec<(pg_sys::Oid, LockMode)> = crate::api::analyze::analyze(sql)
        .into_iter()
        .filter_map(|r| Some((r.3?, LockMode::from_name(r.4.as_deref()?)?)))
        .collect();
    if wanted.is_empty() {
        return None;
    }
    let relids: Vec<pg_sys::Oid> = wanted.iter().map(|w| w.0).collect();
    let mut seen: Vec<String> = Spi::connect(|c| {
        let mut out = vec![];
        for row in c.select(
            "SELECT l.pid, l.mode, l.relation, l.relation::pg_catalog.regclass::pg_catalog.text, l.granted,
                    NULLIF(a.application_name, ''),
                    pg_catalog.date_trunc('second', pg_catalog.now() OPERATOR(pg_catalog.-) a.xact_start)::pg_catalog.text
               FROM pg_catalog.pg_locks l
               LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) l.pid
              WHERE l.locktype OPERATOR(pg_catalog.=) 'relation'
                AND l.relation OPERATOR(pg_catalog.=) ANY ($1)
                AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                     WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
                AND (l.pid IS NULL OR l.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid())",
            None,
            &[relids.clone().into()],
        )? {
            let pid = row.get::<i32>(1)?;
            let mode = row.get::<String>(2)?.unwrap_or_default();
            let rel = row.get::<pg_sys::Oid>(3)?;
            let shown = row.get::<String>(4)?.unwrap_or_default();
            let granted = row.get::<bool>(5)?.unwrap_or(false);
            let app = row.get::<String>(6)?;
            let age = row.get::<String>(7)?;
            let held = LockMode::from_name(&mode);
            let conflicts = wanted.iter().any(|(r, want)| {
                Some(*r) == rel && held.is_some_and(|h| h.conflicts_with(*want))
            });
            if conflicts {
                out.push(format!(
                    "pid {} ({}{}, {mode} on {shown}{})",
                    pid.map(|p| p.to_string()).unwrap_or_else(|| "(prepared)".into()),
                    app.unwrap_or_else(|| "no application_name".into()),
                    age.map(|a| format!(", transaction {a} old")).unwrap_or_default(),
                    if granted { "" } else { ", waiting" }
                ));
            }
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_default();
    seen.sort();
    seen.dedup();
    (!seen.is_empty()).then(|| seen.join("; "))
}

/// CALL migrate_exec: one attempt of statement `statement` of this
/// session's run `exec_id`, with the run's lock_timeout, recorded in
/// migrate_exec_log.  `done`: go on with the next statement (or stop, when
/// `failed`: the procedure commits, then calls `_exec_raise`); otherwise
/// sleep `pause` seconds and try again.
#[pg_extern(
    volatile,
    parallel_unsafe,
    schema = "pgmigrate",
    name = "_exec_attempt"
)]
pub fn exec_attempt(
    exec_id: i64,
    statement: i32,
) -> TableIterator<'static, (name!(done, bool), name!(failed, bool), name!(pause, f64))> {
    let (sql, attempt, lock_timeout, attempts, retry_delay_ms, run_id) = with_run(exec_id, |r| {
        let i = (statement.max(1) as usize - 1).min(r.statements.len().saturating_sub(1));
        r.tries[i] += 1;
        (
            r.statements[i].clone(),
            r.tries[i],
            r.lock_timeout,
            r.attempts,
            r.retry_delay_ms,
            r.run_id,
        )
    });
    let started = Spi::get_one::<TimestampWithTimeZone>("SELECT pg_catalog.clock_timestamp()")
        .ok()
        .flatten();
    let clock = std::time::Instant::now();
    let previous = sys::setting("lock_timeout");
    sys::set_local(
        "lock_timeout",
        &format!("{}ms", lock_timeout.as_micros() / 1000),
    );
    let ran = sys::subtransaction(true, || Spi::run(&sql));
    sys::set_local("lock_timeout", &previous);
    let error = match ran {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(sys::Caught {
            sqlstate: "0A000".into(),
            message: format!("the statement cannot run through SPI: {e}"),
            detail: None,
            hint: None,
        }),
        Err(c) => Some(c),
    };
    let outcome = match error.as_ref().map(|e| e.sqlstate.as_str()) {
        None => "succeeded",
        Some("55P03") => "lock_timeout",
        Some("40P01") => "deadlock",
        Some(_) => "failed",
    };
    let in_the_way = matches!(outcome, "lock_timeout" | "deadlock")
        .then(|| sys::subtransaction(false, || blockers(&sql)).ok().flatten())
        .flatten();
    let role = unsafe { pg_sys::GetUserId() };
    let elapsed_us = clock.elapsed().as_micros() as i64;
    as_owner(|| {
        Spi::run_with_args(
            "INSERT INTO pgmigrate.exec_attempts
                 (exec_id, run_id, statement, sql, attempt, outcome, sqlstate, error, blockers,
                  started_at, duration, lock_timeout, role_oid)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                     pg_catalog.make_interval(secs => $11::pg_catalog.float8 OPERATOR(pg_catalog./) 1000000), $12, $13)",
            &[
                exec_id.into(),
                run_id.into(),
                statement.into(),
                sql.as_str().into(),
                attempt.into(),
                outcome.into(),
                error.as_ref().map(|e| e.sqlstate.clone()).into(),
                error.as_ref().map(|e| e.message.clone()).into(),
                in_the_way.clone().into(),
                started.into(),
                elapsed_us.into(),
                lock_timeout.into(),
                role.into(),
            ],
        )
    })
    .unwrap_or_else(|e| pgrx::error!("pg_migrate: recording an attempt failed: {e}"));

    let retryable = matches!(outcome, "lock_timeout" | "deadlock");
    if error.is_none() {
        return TableIterator::once((true, false, 0.0));
    }
    if retryable && attempt < attempts {
        let base = retry_delay_ms
            .saturating_mul(1i64 << (attempt - 1).clamp(0, 20))
            .min(60_000);
        let seed = (exec_id as u64) << 24 ^ (attempt as u64) << 12 ^ elapsed_us as u64;
        let pause = crate::engine::pace::jittered(base, seed) as f64 / 1000.0;
        return TableIterator::once((false, false, pause));
    }
    // The last attempt: finish the linked run as failed, keep the error
    // for _exec_raise (after the procedure has committed all this).
    let e = error.expect("an error");
    let raised = if retryable {
        sys::Caught {
            sqlstate: e.sqlstate.clone(),
            message: format!("statement {statement} could not get its lock in {attempt} attempts"),
            detail: Some(format!(
                "Each attempt gave up after lock_timeout {} ms. Last in the way: {}.",
                lock_timeout.as_micros() / 1000,
                in_the_way.as_deref().unwrap_or("nobody by the time it looked")
            )),
            hint: Some("Statements before it are committed. End the blocking transaction (pg_terminate_backend) or retry later; migrate_exec_log has every attempt.".into()),
        }
    } else {
        sys::Caught {
            detail: Some(
                e.detail
                    .clone()
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| format!("In statement {statement} of the script.")),
            ),
            hint: Some(e.hint.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| {
                "Statements before it are committed; see migrate_exec_log.".into()
            })),
            ..e.clone()
        }
    };
    if let Some(run) = run_id {
        finish(
            run,
            false,
            Some(&format!("statement {statement}: {}", e.message)),
        );
    }
    with_run(exec_id, |r| r.error = Some(raised));
    TableIterator::once((true, true, 0.0))
}

fn finish(run_id: i64, ok: bool, error: Option<&str>) {
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

/// CALL migrate_exec, the end: every statement succeeded.  Finishes the
/// linked migration run as applied and forgets the run.
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "_exec_finish")]
pub fn exec_finish(exec_id: i64) {
    let run_id = with_run(exec_id, |r| r.run_id);
    if let Some(run) = run_id {
        finish(run, true, None);
    }
    RUNS.with_borrow_mut(|runs| runs.remove(&exec_id));
}

/// CALL migrate_exec, after the last attempt failed and was committed:
/// raise its error.
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "_exec_raise")]
pub fn exec_raise(exec_id: i64) {
    let e = with_run(exec_id, |r| r.error.take());
    RUNS.with_borrow_mut(|runs| runs.remove(&exec_id));
    if let Some(e) = e {
        sys::raise_at(&e, "", 0, None);
    }
}

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
