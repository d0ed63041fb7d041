//! One step of a job: the unit of work that commits on its own.
//!
//! Background workers and `CALL migrate_run` drive jobs by calling `step`
//! in a transaction of their own, again and again, until it reports that
//! the job is done; they differ only in how they wait between steps and
//! how an interrupted step ends.

pub mod backfill;
pub mod pace;

use crate::catalog::jobs::{self, Job};
use crate::catalog::{as_owner, history, role_name};
use crate::engine::history::Outcome;
use crate::engine::jobs::JobState;
use crate::sys::Caught;

/// Who drives a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// A pg_migrate background worker.
    Worker,
    /// A session in CALL migrate_run.
    Session,
}

/// What a step reports to its driver.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The job's state after the step.
    pub state: JobState,
    /// Stop driving: the job finished, or was paused or cancelled.
    pub done: bool,
    /// Wait this long before the next step.
    pub sleep_ms: i64,
    /// A progress line worth showing now (foreground runs print it).
    pub notice: Option<String>,
}

impl StepReport {
    pub fn done(state: JobState) -> StepReport {
        StepReport {
            state,
            done: true,
            sleep_ms: 0,
            notice: None,
        }
    }

    pub fn again(sleep_ms: i64, notice: Option<String>) -> StepReport {
        StepReport {
            state: JobState::Running,
            done: false,
            sleep_ms,
            notice,
        }
    }
}

/// A snapshot taken now, active for the rest of the step: every read in
/// the step sees what was committed (or done by this transaction) before
/// it began, whatever snapshot the caller had.  On an ERROR, (sub)transaction
/// abort pops it.
struct FreshSnapshot;

impl FreshSnapshot {
    fn push() -> FreshSnapshot {
        unsafe {
            pgrx::pg_sys::CommandCounterIncrement();
            pgrx::pg_sys::PushActiveSnapshot(pgrx::pg_sys::GetTransactionSnapshot());
        }
        FreshSnapshot
    }
}

impl Drop for FreshSnapshot {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            unsafe { pgrx::pg_sys::PopActiveSnapshot() };
        }
    }
}

/// Run one step of job `id` in the current transaction.
pub fn step(id: i64, driver: Driver) -> StepReport {
    let _snapshot = FreshSnapshot::push();
    let Some(job) = as_owner(|| jobs::get(id, true)) else {
        return StepReport::done(JobState::Cancelled);
    };
    if !job.mine || !matches!(job.state, JobState::Running | JobState::Waiting) {
        return StepReport::done(job.state);
    }
    match job.kind.as_str() {
        "backfill" => backfill::step(&job, driver),
        other => fail(
            &job,
            &Caught {
                sqlstate: "XX000".into(),
                message: format!("unknown job kind \"{other}\""),
                detail: None,
                hint: None,
            },
        ),
    }
}

/// The job succeeded: record it, and mark its linked migration applied.
pub fn succeed(job: &Job) -> StepReport {
    as_owner(|| {
        jobs::finish(job.id, JobState::Succeeded, None);
        finish_linked_run(job, Outcome::Applied, None);
    });
    StepReport::done(JobState::Succeeded)
}

/// The job failed: keep the error, and mark its linked migration failed.
pub fn fail(job: &Job, e: &Caught) -> StepReport {
    as_owner(|| {
        jobs::finish(
            job.id,
            JobState::Failed,
            Some((&e.message, &e.sqlstate, e.detail.as_deref())),
        );
        let error = format!("job {} failed: {}", job.id, e.message);
        finish_linked_run(job, Outcome::Failed, Some(&error));
    });
    StepReport::done(JobState::Failed)
}

/// Close the history run a job was linked to.  A run someone already closed
/// by hand is left as it is.
pub fn finish_linked_run(job: &Job, outcome: Outcome, error: Option<&str>) {
    if let Some(run) = job.migration_run {
        if let Err(e) = history::finish_run(run, outcome, error, &role_name(job.owner)) {
            pgrx::warning!(
                "job {}: migration run {} not updated: {}",
                job.id,
                run,
                e.message()
            );
        }
    }
}
