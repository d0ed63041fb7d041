//! What the kinds that change a table's definition in short steps share
//! (`set_not_null`, `add_constraint`): the checks at submit, the job's
//! place in its list of steps, and how one step's statement runs: as the
//! job's owner, under a short `lock_timeout`, retried after a growing pause
//! when it cannot get its lock, so that it never waits in the lock queue in
//! front of the application's queries.

use crate::api::args::{
    int_arg, interval_ms, may_write_history, qualified_display, relkind_name, start_linked_run,
};
use crate::catalog::jobs::{self, Gates, Job, NewJob, Table};
use crate::catalog::{as_owner, current_role_name};
use crate::engine::jobs::{self as rules, ErrorClass, JobState};
use crate::engine::keyset::quote_ident;
use crate::engine::pace::jittered;
use crate::error::MigrateError;
use crate::kinds::model::StepReport;
use crate::sys::{self, Caught, Identity};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use serde::{Deserialize, Serialize};
use std::ffi::CStr;

/// How long a step waits for its lock, and how often it tries again.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LockPolicy {
    pub lock_timeout_ms: i64,
    pub max_retries: i32,
}

/// `lock_timeout` and `max_retries` as the SQL functions take them, checked.
pub fn lock_policy(lock_timeout: Option<Interval>, max_retries: Option<i32>) -> LockPolicy {
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
    LockPolicy {
        lock_timeout_ms,
        max_retries,
    }
}

/// Refuse on a read-only transaction or a standby.
pub fn require_writable(what: &CStr) {
    unsafe {
        pg_sys::PreventCommandIfReadOnly(what.as_ptr());
        pg_sys::PreventCommandDuringRecovery(what.as_ptr());
    }
}

/// The table a definition change works on, as the submit checks found it.
pub struct Target {
    pub schema: String,
    pub table: String,
    /// As messages show it (quoted where needed).
    pub display: String,
}

/// Check that `relid` is an ordinary, permanent user table whose owner the
/// caller may act as.  `function`: the SQL function, and `to`: what it
/// does, for messages; `partitioned`: why it cannot run on a partitioned
/// table, and what to do instead.
pub fn check_target(
    relid: pg_sys::Oid,
    function: &'static str,
    to: &'static str,
    partitioned: (&'static str, &'static str),
) -> Target {
    let found = sys::pinned(|| {
        Spi::connect(|c| {
            let rows = c.select(
                "SELECT n.nspname::text, c.relname::text, c.relkind::text,
                        pg_catalog.pg_has_role(c.relowner, 'USAGE'), c.relpersistence::text
                   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = $1",
                None,
                &[relid.into()],
            )?;
            Ok::<_, pgrx::spi::Error>(match rows.into_iter().next() {
                Some(r) => Some((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<String>(3)?.and_then(|k| k.bytes().next()).unwrap_or(b'?'),
                    r.get::<bool>(4)?.unwrap_or(false),
                    r.get::<String>(5)?.and_then(|k| k.bytes().next()).unwrap_or(b'p'),
                )),
                None => None,
            })
        })
        .ok()
        .flatten()
    });
    let Some((schema, table, kind, owned, persistence)) = found else {
        MigrateError::NotATableFor {
            relation: relid.to_u32().to_string(),
            kind: "missing relation",
            what: function,
        }
        .report()
    };
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
            why: partitioned.0,
            instead: partitioned.1,
        }
        .report(),
        other => MigrateError::NotATableFor {
            relation: display.clone(),
            kind: relkind_name(other),
            what: function,
        }
        .report(),
    }
    if !owned {
        MigrateError::NotTableOwner {
            relation: display.clone(),
            to,
        }
        .report();
    }
    Target {
        schema,
        table,
        display,
    }
}

/// The step the job does next (0-based), from its cursor.
pub fn next_step(job: &Job) -> usize {
    job.cursor
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The table's name, quoted, to run statements on.
pub fn qualified(table: &Table) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    )
}

pub fn caught(
    sqlstate: &str,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
) -> Caught {
    Caught {
        sqlstate: sqlstate.into(),
        message,
        detail,
        hint,
    }
}

/// How one step's statement went.
pub enum Ran {
    /// It ran; its effect commits with the step.
    Done,
    /// It could not get its lock (or hit another passing error): tried
    /// again after the pause this report asks for.
    Later(StepReport),
    /// It failed for good: the kind decides what to undo, then fails the
    /// job.  `gave_up`: after its retries ran out.
    Failed { error: Caught, gave_up: bool },
}

/// Run `sql` as the job's owner with the job's lock_timeout and a pinned
/// search_path (the statements name everything by schema).  `n` of
/// `total`, doing `what`: for the messages.
pub fn run_step(
    job: &Job,
    policy: LockPolicy,
    sql: &str,
    n: usize,
    total: usize,
    what: &str,
) -> Ran {
    sys::report_activity(&format!("pg_migrate: job {}: {}", job.id, sql));
    let started = std::time::Instant::now();
    let ran = run_as_owner(job, policy, sql);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match ran {
        None => Ran::Done,
        Some(e) => retry_or_fail(job, policy, e, ms, n, total, what),
    }
}

/// A step's statement failed with `e` after `ms`: try again later when the
/// error passes (a lock it could not get in time), as long as retries are
/// left, or fail for good.
pub fn retry_or_fail(
    job: &Job,
    policy: LockPolicy,
    e: Caught,
    ms: f64,
    n: usize,
    total: usize,
    what: &str,
) -> Ran {
    match rules::classify(&e.sqlstate, ms, 0) {
        ErrorClass::Retry(reason) => {
            let attempt = job.retries + 1;
            if attempt > policy.max_retries {
                let mut e = e;
                e.detail = Some(format!(
                    "Step {} of {total} ({what}) gave up after {} retries ({reason}).",
                    n + 1,
                    policy.max_retries
                ));
                e.hint = Some(format!(
                    "Find what holds locks on the table with migrate_blockers('{}'), then migrate_retry({}).",
                    job.relation.replace('\'', "''"),
                    job.id
                ));
                return Ran::Failed {
                    error: e,
                    gave_up: true,
                };
            }
            let seed = (job.id as u64) << 20 ^ attempt as u64 ^ (ms * 1e6) as u64;
            let backoff = jittered(rules::backoff_ms(attempt), seed);
            let why = format!(
                "step {} of {total}: {reason}; retry {attempt} of {} in {}",
                n + 1,
                policy.max_retries,
                rules::human_seconds(backoff as f64 / 1000.0)
            );
            as_owner(|| {
                jobs::retry_later(job.id, attempt, &why, &e, backoff, job.batch_size as i64)
            });
            Ran::Later(StepReport {
                state: JobState::Waiting,
                done: false,
                sleep_ms: backoff,
                notice: None,
            })
        }
        _ => Ran::Failed {
            error: e,
            gave_up: false,
        },
    }
}

/// Run `sql` as the job's owner in a subtransaction kept on success, with
/// the job's lock_timeout and a pinned search_path; the error if it failed.
pub fn run_as_owner(job: &Job, policy: LockPolicy, sql: &str) -> Option<Caught> {
    let ran = sys::subtransaction(true, || {
        let _identity = Identity::become_role(job.owner, true);
        sys::set_lock_timeout_local(policy.lock_timeout_ms);
        sys::pinned(|| Spi::run(sql))
    });
    match ran {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(caught("XX000", format!("{sql}: {e}"), None, None)),
        Err(e) => Some(e),
    }
}

/// Go on at step `next` (0-based) of `steps`, or succeed after the last.
pub fn advance(job: &Job, next: usize, steps: &[&str]) -> StepReport {
    if next >= steps.len() {
        return crate::runner::outcome::succeed(job);
    }
    as_owner(|| jobs::advance(job.id, &[next.to_string()], Some(steps[next])));
    StepReport::again(0, None)
}

/// A checked job of a definition-changing kind, ready to queue.
pub struct NewChange<'a> {
    pub kind: &'static str,
    pub relid: pg_sys::Oid,
    pub target: &'a Target,
    pub spec: serde_json::Value,
    /// Its steps as SQL, as a DBA would run them.
    pub command: String,
    /// What the linked history run says it is.
    pub description: String,
    pub run_at: Option<TimestampWithTimeZone>,
    pub migration: Option<(String, String)>,
    pub gates: &'a Gates,
}

/// Queue it as the caller (its owner), open its linked history run, and
/// tell the workers.  Returns its id.
pub fn queue(c: NewChange<'_>) -> i64 {
    let owner = unsafe { pg_sys::GetUserId() };
    let role = current_role_name();
    let link_allowed = c.migration.is_none() || may_write_history();
    let id = as_owner(|| {
        let run = start_linked_run(c.migration.as_ref(), link_allowed, &c.description, &role);
        jobs::insert(NewJob {
            kind: c.kind,
            relid: c.relid,
            relation: &c.target.display,
            owner,
            spec: c.spec,
            command: &c.command,
            batch_size: None,
            run_at: c.run_at,
            migration: run,
            index_oid: None,
            gates: c.gates,
        })
    });
    crate::kinds::queue::announce(id, false);
    id
}

/// A progress line: the step it is at, of `steps`, or why it waits.
pub fn progress_line(job: &Job, steps: &[&str]) -> String {
    let n = next_step(job).min(steps.len().saturating_sub(1));
    match job.state {
        JobState::Waiting => format!(
            "job {}: step {} of {} waits: {}",
            job.id,
            n + 1,
            steps.len(),
            job.wait_reason.clone().unwrap_or_default()
        ),
        _ => format!(
            "job {}: step {} of {}: {}",
            job.id,
            n + 1,
            steps.len(),
            steps.get(n).copied().unwrap_or_default()
        ),
    }
}
