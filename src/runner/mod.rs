//! Driving jobs: one step of a job in the current transaction, and the
//! loop a worker runs until the job is done.  What a step does is the
//! job's kind's (`kinds`); how a job ends is `outcome`.
//!
//! Background workers and `CALL migrate_run` drive step kinds by calling
//! `step` in a transaction of their own, again and again, until it reports
//! that the job is done; they differ only in how they wait between steps
//! and how an interrupted step ends.  Kinds that run statements outside a
//! transaction block are driven by a worker only (`drive`).

pub mod outcome;
pub mod pace;
pub mod toplevel;
pub mod transaction;

pub use crate::kinds::model::{Driver, StepReport};
pub use outcome::{fail, finish_linked_run, give_up, succeed};

use crate::catalog::as_owner;
use crate::catalog::jobs;
use crate::engine::jobs::JobState;
use crate::kinds::model::Work;
use crate::sys;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::time::Duration;
use transaction::in_transaction;

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
    let kind = match crate::kinds::of(&job) {
        Ok(k) => k,
        Err(e) => return fail(&job, &e),
    };
    match kind.work() {
        Work::Steps(step) => step(&job, driver),
        // Only a worker drives these, through `drive`: a session that got
        // here holds a job it cannot run.
        Work::Worker(_) => fail(
            &job,
            &sys::Caught {
                sqlstate: "XX000".into(),
                message: format!(
                    "job {} ({}) is run by background workers only",
                    job.id,
                    kind.facts().noun
                ),
                detail: None,
                hint: None,
            },
        ),
    }
}

/// Drive job `id`, which this worker claimed, until it finishes or someone
/// pauses or cancels it.
pub fn drive(id: i64, kind: &str) {
    let work = crate::kinds::Kind::from_name(kind).map(|k| k.imp().work());
    sys::set_application_name(&format!("pg_migrate job {id}"));
    match work {
        Some(Work::Worker(drive)) => drive(id),
        // Step kinds, and a kind this build does not know (the step fails
        // the job with the reason).
        _ => drive_steps(id),
    }
    sys::set_application_name("pg_migrate worker");
}

fn drive_steps(id: i64) {
    loop {
        pg_sys::check_for_interrupts!();
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let report: StepReport = match in_transaction(|| step(id, Driver::Worker)) {
            Ok(r) => r,
            Err(e) => {
                give_up(id, &e);
                break;
            }
        };
        if report.done {
            break;
        }
        if report.sleep_ms > 0 {
            sys::report_activity(&format!(
                "pg_migrate job {id}: waiting {} ms",
                report.sleep_ms
            ));
            BackgroundWorker::wait_latch(Some(Duration::from_millis(report.sleep_ms as u64)));
        }
    }
}
