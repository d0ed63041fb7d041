//! Controlling jobs, and the functions behind CALL migrate_run and CALL
//! migrate_wait (the procedures themselves are PL/pgSQL in sql/040_run.sql:
//! they commit between steps, which a C function cannot).

use crate::catalog::jobs::{self, Job};
use crate::catalog::{as_owner, history, role_name};
use crate::engine::history::Outcome;
use crate::engine::jobs::{self as rules, Control, JobState};
use crate::error::{MigrateError, OrReport};
use crate::kinds::model::JobKind;
use crate::kinds::queue::announce;
use crate::runner::{self, Driver};
use crate::sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

/// The job, locked, if the caller may see and control it: its owner, a
/// member of the owner role, or a superuser.
fn accessible(id: Option<i64>, lock: bool) -> Job {
    let id = id
        .ok_or(MigrateError::NullArgument { arg: "job" })
        .or_report();
    let job = as_owner(|| jobs::get(id, lock))
        .ok_or(MigrateError::UnknownJob { job_id: id })
        .or_report();
    let me = unsafe { pg_sys::GetUserId() };
    if !unsafe { pg_sys::is_member_of_role(me, job.owner) } {
        MigrateError::NotJobOwner {
            job_id: id,
            owner: role_name(job.owner),
        }
        .report();
    }
    job
}

/// The job's kind; `None` for a kind this build does not know (a row
/// written by a newer version), which can still be seen and cancelled.
fn kind(job: &Job) -> Option<&'static dyn JobKind> {
    crate::kinds::of(job).ok()
}

/// Is this a job only a worker runs?
fn worker_only(job: &Job) -> bool {
    kind(job).is_some_and(|k| k.worker_only())
}

/// Pausing or cancelling a job: its kind stops what its driver runs now
/// (an index statement is interrupted when this transaction commits).
/// True when the driver keeps the job until it has cleaned up.
fn interrupts_statement(job: &Job, to: JobState) -> bool {
    let stops = matches!(to, JobState::Paused | JobState::Cancelled);
    stops && kind(job).is_some_and(|k| k.stopping(job))
}

fn control(id: Option<i64>, action: Control) {
    let job = accessible(id, true);
    // A job left running by a driver that is gone (a CALL migrate_run
    // whose session ended, a worker that died) is stopped: it may be
    // resumed like a paused job.
    let orphan = matches!(job.state, JobState::Running | JobState::Waiting)
        && job.driver_pid.is_some()
        && !job.mine
        && !job.driven_elsewhere;
    let state = if orphan && matches!(action, Control::Resume) {
        JobState::Paused
    } else {
        job.state
    };
    let to = rules::control(job.id, action, state).or_report();
    let who = crate::catalog::current_role_name();
    let keep_driver = interrupts_statement(&job, to);
    as_owner(|| {
        let reason = match action {
            Control::Pause => Some(format!("paused by {who}")),
            _ => None,
        };
        jobs::set_state(job.id, to, reason.as_deref(), keep_driver);
        match action {
            Control::Cancel => runner::finish_linked_run(
                &job,
                Outcome::Failed,
                Some(&format!("job {} was cancelled by {who}", job.id)),
            ),
            Control::Retry => {
                if let (Some(app), Some(name)) = (&job.migration_app, &job.migration_name) {
                    let description = format!("retry of pg_migrate job {}", job.id);
                    let owner = role_name(job.owner);
                    let run = history::start_run(&history::RunRequest::started(
                        app,
                        name,
                        &description,
                        &owner,
                    ))
                    .or_report();
                    jobs::set_migration_run(job.id, run);
                }
            }
            _ => {}
        }
    });
    // A job split into slices: the same request acts on each slice it
    // applies to (a slice that has succeeded stays so).
    let slices = as_owner(|| jobs::slices(job.id));
    let mut woken = false;
    let mut untold = kind(&job)
        .map(|k| k.controlled(&job, action))
        .unwrap_or_default();
    for slice in &slices {
        let Ok(slice_to) = rules::control(slice.id, action, slice.state) else {
            continue;
        };
        as_owner(|| {
            let reason = match action {
                Control::Pause => Some(format!("paused with job {} by {who}", job.id)),
                _ => None,
            };
            jobs::set_state(slice.id, slice_to, reason.as_deref(), false);
        });
        woken |= slice_to == JobState::Queued;
        if let Some(s) = as_owner(|| jobs::get(slice.id, false)) {
            untold.extend(
                kind(&s)
                    .map(|k| k.controlled(&s, action))
                    .unwrap_or_default(),
            );
        }
    }
    for u in &untold {
        pgrx::warning!(
            "pg_migrate: job {} {} here, but a node was not told: {u}",
            job.id,
            action.verb()
        );
    }
    if to == JobState::Queued || woken {
        announce(job.id, worker_only(&job));
    } else if job.parent.is_some() {
        // A slice that stops frees a place for a sibling.
        crate::kinds::queue::wake();
    }
}

/// Stop a job after its current batch (an index job's statement is
/// interrupted and what it left is cleaned up).  It keeps its place;
/// migrate_resume queues it again.
#[pg_extern(volatile, parallel_unsafe)]
fn migrate_pause(job: Option<i64>) {
    control(job, Control::Pause)
}

/// Queue a paused job again.
#[pg_extern(volatile, parallel_unsafe)]
fn migrate_resume(job: Option<i64>) {
    control(job, Control::Resume)
}

/// End a job for good (after its current batch; an index job's statement
/// is interrupted and cleaned up).  Batches already done stay done.
#[pg_extern(volatile, parallel_unsafe)]
fn migrate_cancel(job: Option<i64>) {
    control(job, Control::Cancel)
}

/// Queue a failed or cancelled job again; it resumes at the batch that
/// failed.
#[pg_extern(volatile, parallel_unsafe)]
fn migrate_retry(job: Option<i64>) {
    control(job, Control::Retry)
}

/// A type change held after its cut-over (migrate_alter_type with
/// complete => 'manual'): go on, and drop the old column.
#[pg_extern(volatile, parallel_unsafe)]
fn migrate_complete(job: Option<i64>) {
    let j = accessible(job, true);
    crate::kinds::alter_type::complete(&j);
}

/// Undo a type change (migrate_alter_type) that has not cut over yet: its
/// backfill and index jobs are cancelled, the shadow column (with its
/// indexes and check) and the trigger are dropped, and the job ends
/// cancelled.  Writes go on meanwhile; the old column was never touched.
#[pg_extern(volatile, parallel_unsafe)]
fn migrate_rollback(job: Option<i64>) {
    let j = accessible(job, true);
    let children = crate::kinds::alter_type::unfinished_children(&j);
    for (child, _) in &children {
        control(Some(*child), Control::Cancel);
    }
    // A job that was running stops after this commits (an index build is
    // interrupted and cleaned up by its worker): its table is not changed
    // under it.
    let running: Vec<String> = children
        .iter()
        .filter(|(_, running)| *running)
        .map(|(id, _)| id.to_string())
        .collect();
    if !running.is_empty() {
        pgrx::notice!(
            "job {}: its job {} was cancelled and is stopping; call migrate_rollback({}) again once it has stopped (migrate_progress shows it)",
            j.id,
            running.join(", "),
            j.id
        );
        return;
    }
    crate::kinds::alter_type::rollback(&j);
}

/// CALL migrate_run, first step: take the job for this session ('session'),
/// or for an index job hand it to a worker now, whatever its schedule
/// ('worker').
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "_run_begin")]
fn run_begin(job: Option<i64>) -> String {
    if sys::in_transaction_block() {
        MigrateError::InTransactionBlock {
            what: "migrate_run()",
        }
        .report();
    }
    let j = accessible(job, true);
    if !j.state.is_terminal() {
        if let Some(reason) = as_owner(|| jobs::gate_closed(j.id)) {
            MigrateError::JobGated {
                job_id: j.id,
                reason,
            }
            .report();
        }
    }
    if worker_only(&j) {
        if !crate::worker::shmem::preloaded() {
            MigrateError::NeedsWorker { job_id: j.id }.report();
        }
        if j.state.is_terminal() {
            MigrateError::JobState {
                job_id: j.id,
                action: "run",
                state: j.state.as_str(),
                hint: "A finished job runs again only after migrate_retry().",
            }
            .report();
        }
        if let Some(k) = kind(&j) {
            k.run_now(&j);
        }
        announce(j.id, true);
        return "worker".into();
    }
    crate::runner::pace::reset_clock(j.id);
    if !as_owner(|| jobs::claim_for_session(j.id)) {
        if j.driven_elsewhere {
            let by = match j.driver_kind.as_deref() {
                Some("worker") => "a pg_migrate background worker".to_string(),
                _ => "a session in CALL migrate_run".to_string(),
            };
            MigrateError::JobDriven {
                job_id: j.id,
                pid: j.driver_pid.unwrap_or(0),
                by,
            }
            .report();
        }
        MigrateError::JobState {
            job_id: j.id,
            action: "run",
            state: j.state.as_str(),
            hint: "A finished job runs again only after migrate_retry().",
        }
        .report();
    }
    "session".into()
}

/// CALL migrate_run: one step, in the procedure's current transaction.
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "_run_step")]
fn run_step(
    job: i64,
) -> TableIterator<
    'static,
    (
        name!(state, String),
        name!(done, bool),
        name!(sleep_ms, i64),
        name!(notice, Option<String>),
    ),
> {
    // Callable by every role (a procedure that commits runs with its
    // caller's rights): only for a job the caller may control.
    accessible(Some(job), false);
    let r = runner::step(job, Driver::Session);
    TableIterator::once((r.state.as_str().to_string(), r.done, r.sleep_ms, r.notice))
}

/// CALL migrate_run was cancelled: pause the job, so that nothing runs it
/// until someone says so.
#[pg_extern(
    volatile,
    parallel_unsafe,
    schema = "pgmigrate",
    name = "_run_interrupted"
)]
fn run_interrupted(job: i64) {
    let j = accessible(Some(job), true);
    let ours = j.mine || (worker_only(&j) && j.state != JobState::Paused);
    if ours && !j.state.is_terminal() {
        let keep_driver = interrupts_statement(&j, JobState::Paused);
        as_owner(|| {
            jobs::set_state(
                job,
                JobState::Paused,
                Some("paused: its CALL migrate_run was cancelled"),
                keep_driver,
            )
        });
    }
}

/// The end of CALL migrate_run or migrate_wait: quiet on success (a
/// NOTICE sums it up), an ERROR for a failed or cancelled job.
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "_job_outcome")]
fn job_outcome(job: i64) {
    let j = accessible(Some(job), false);
    match j.state {
        JobState::Succeeded => {
            if let Some(k) = kind(&j) {
                pgrx::notice!("{}", k.success_line(&j))
            }
        }
        JobState::Failed => MigrateError::JobFailed {
            job_id: j.id,
            sqlstate: j.error_sqlstate.clone().unwrap_or_else(|| "XX000".into()),
            error: j.error.clone().unwrap_or_default(),
            detail: j.error_detail.clone(),
        }
        .report(),
        JobState::Cancelled => MigrateError::JobCancelled { job_id: j.id }.report(),
        other => pgrx::warning!("job {} is {}; it did not finish", j.id, other.as_str()),
    }
}

thread_local! {
    static LAST_SEEN: RefCell<HashMap<i64, (Instant, String)>> = RefCell::new(HashMap::new());
}

/// CALL migrate_wait: one look at the job, with a progress line every few
/// seconds or when its state changes.
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "_wait_poll")]
fn wait_poll(
    job: i64,
    first: bool,
) -> TableIterator<
    'static,
    (
        name!(state, String),
        name!(done, bool),
        name!(notice, Option<String>),
    ),
> {
    if first && sys::in_transaction_block() {
        MigrateError::InTransactionBlock {
            what: "migrate_wait()",
        }
        .report();
    }
    let j = accessible(Some(job), false);
    // A job whose driver is gone counts as queued, as migrate_progress shows.
    let state = if matches!(j.state, JobState::Running | JobState::Waiting)
        && j.driver_pid.is_some()
        && !j.mine
        && !j.driven_elsewhere
    {
        JobState::Queued
    } else {
        j.state
    };
    let line = match state {
        JobState::Running | JobState::Waiting => match kind(&j) {
            Some(k) => k.progress_line(&j),
            None => format!("job {}: {}", j.id, state.as_str()),
        },
        other => format!("job {}: {}", j.id, other.as_str()),
    };
    let notice = LAST_SEEN.with_borrow_mut(|m| {
        let now = Instant::now();
        let show = match m.get(&job) {
            None => true,
            Some((t, s)) => s != state.as_str() || now.duration_since(*t).as_secs() >= 5,
        };
        if show {
            m.insert(job, (now, state.as_str().to_string()));
        }
        show.then_some(line)
    });
    if state.is_terminal() {
        LAST_SEEN.with_borrow_mut(|m| m.remove(&job));
    }
    TableIterator::once((state.as_str().to_string(), state.is_terminal(), notice))
}

/// A Citus coordinator follows the job it sent this node for a shard: wait
/// up to `wait_ms` for the job to end or stop (a look every 10 ms, each
/// with a fresh snapshot), then answer what it shows, as json text.  One
/// call, one connection from the coordinator, however long the wait.
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "_follow")]
fn follow(job: i64, wait_ms: i32) -> Option<String> {
    let started = Instant::now();
    loop {
        let j = sys::fresh_snapshot(|| accessible(Some(job), false));
        let going = matches!(
            j.state,
            JobState::Queued | JobState::Running | JobState::Waiting
        );
        if !going || started.elapsed().as_millis() >= wait_ms.max(0) as u128 {
            break;
        }
        sys::nap_ms(10);
    }
    sys::fresh_snapshot(|| as_owner(|| jobs::seen(job)))
}

/// Shards done and in all, when they were read.
type ShardCounts = (Instant, Option<(i64, i64)>);

thread_local! {
    static SHARD_BUILDS: RefCell<HashMap<i64, ShardCounts>> = RefCell::new(HashMap::new());
}

/// migrate_progress: an index job on a Citus distributed table, running
/// now: how many of the table's shards have a valid copy of the index, of
/// how many (no row for any other job).  It asks the nodes, as the
/// extension's owner, at most once a second per job in a session.
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "shard_builds")]
fn shard_builds(job: i64) -> TableIterator<'static, (name!(done, i64), name!(total, i64))> {
    let cached = SHARD_BUILDS.with_borrow(|m| {
        m.get(&job)
            .filter(|(at, _)| at.elapsed().as_millis() < 1000)
            .map(|(_, counts)| *counts)
    });
    let counts = cached.unwrap_or_else(|| {
        let counts = as_owner(|| jobs::get(job, false)).and_then(|j| {
            if !kind(&j).is_some_and(|k| k.facts().on_index) {
                return None;
            }
            let schema = j.spec.get("schema")?.as_str()?.to_string();
            let name = j.spec.get("name")?.as_str()?.to_string();
            as_owner(|| crate::kinds::backfill::citus::shard_indexes(j.relid, &schema, &name))
        });
        SHARD_BUILDS.with_borrow_mut(|m| {
            m.retain(|_, (at, _)| at.elapsed().as_secs() < 60);
            m.insert(job, (Instant::now(), counts));
        });
        counts
    });
    TableIterator::new(counts)
}

/// CALL migrate_wait gave up.
#[pg_extern(
    volatile,
    parallel_unsafe,
    schema = "pgmigrate",
    name = "_wait_timeout"
)]
fn wait_timeout(job: i64, waited: pgrx::datum::Interval) {
    let j = accessible(Some(job), false);
    LAST_SEEN.with_borrow_mut(|m| m.remove(&job));
    MigrateError::WaitTimeout {
        job_id: job,
        waited: format!("{waited}"),
        state: j.state.as_str().to_string(),
    }
    .report();
}

/// CALL migrate_run hit an error outside any batch: fail the job so that it
/// is not left held by this session.
#[pg_extern(volatile, parallel_unsafe, schema = "pgmigrate", name = "_run_failed")]
fn run_failed(job: i64, sqlstate: String, message: String) {
    let j = accessible(Some(job), true);
    {
        if j.mine && !j.state.is_terminal() {
            runner::fail(
                &j,
                &sys::Caught {
                    sqlstate,
                    message,
                    detail: None,
                    hint: None,
                },
            );
        }
    }
}
