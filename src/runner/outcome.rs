//! How a job ends: succeeded or failed, with its linked migration run
//! closed to match.  Every kind ends its jobs through these.

use crate::catalog::jobs::{self, Job};
use crate::catalog::{as_owner, history, role_name};
use crate::engine::history::Outcome;
use crate::engine::jobs::JobState;
use crate::kinds::model::StepReport;
use crate::sys::Caught;

/// The job succeeded: record it, and mark its linked migration applied.
pub fn succeed(job: &Job) -> StepReport {
    as_owner(|| {
        jobs::finish(job.id, JobState::Succeeded, None);
        finish_linked_run(job, Outcome::Applied, None);
    });
    crate::kinds::queue::gates_may_open(Some(job.id));
    if job.migration_run.is_some() {
        crate::kinds::queue::gates_may_open(None);
    }
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
    if job.parent.is_some() {
        crate::kinds::queue::wake();
    }
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

/// An error outside the work a step or attempt handles itself (those are
/// recorded where they happen): the job cannot go on.  Record why, if the
/// job table is still there.
pub fn give_up(id: i64, e: &Caught) {
    pgrx::warning!("pg_migrate job {id}: {}", e.message);
    let _ = super::transaction::in_transaction(|| {
        if crate::catalog::installed() {
            if let Some(job) = as_owner(|| jobs::get(id, true)) {
                if job.mine {
                    fail(&job, e);
                }
            }
        }
    });
}
