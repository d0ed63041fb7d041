//! A kind that exists in test builds only, to show (and test) what a new
//! kind needs: this module and its line in `kinds!`.  An example job counts
//! to `total` in steps of `per_step`, one step per transaction, as a
//! backfill walks its batches; the drivers, the control functions and the
//! views handle it from its facts alone.

use super::model::{Driver, Facts, JobKind, StepReport, Work};
use crate::catalog::as_owner;
use crate::catalog::jobs::{self, Job, NewJob};
use crate::engine::locks::LockMode;
use crate::runner::outcome::succeed;
use pgrx::prelude::*;

pub static FACTS: Facts = Facts {
    name: "example",
    noun: "example job",
    table_lock: LockMode::AccessShare,
    locks_index: false,
    one_per_table: None,
    counts_rows: true,
    on_index: false,
    orphaned: "its worker stopped; it counts on at the next step",
};

pub struct Example;

/// Queue an example job on table `relid` (its submit function).
pub fn queue(relid: pg_sys::Oid, total: i64, per_step: i64) -> i64 {
    let owner = unsafe { pg_sys::GetUserId() };
    as_owner(|| {
        let id = jobs::insert(NewJob {
            kind: FACTS.name,
            relid,
            relation: "example",
            owner,
            spec: serde_json::json!({ "total": total, "per_step": per_step }),
            command: "SELECT 'an example job'",
            batch_size: None,
            run_at: None,
            migration: None,
            index_oid: None,
            gates: &jobs::Gates::default(),
        });
        Spi::run_with_args(
            "UPDATE pgmigrate.jobs SET rows_estimate = $2 WHERE job_id = $1",
            &[id.into(), total.into()],
        )
        .expect("setting the example's total");
        id
    })
}

fn step(job: &Job, _driver: Driver) -> StepReport {
    let total = job.spec["total"].as_i64().unwrap_or(0);
    let per_step = job.spec["per_step"].as_i64().unwrap_or(1).max(1);
    if job.rows_done >= total {
        return succeed(job);
    }
    let done = (job.rows_done + per_step).min(total);
    as_owner(|| {
        Spi::run_with_args(
            "UPDATE pgmigrate.jobs SET rows_done = $2, rows_updated = $2, batches = batches + 1 WHERE job_id = $1",
            &[job.id.into(), done.into()],
        )
        .expect("counting");
    });
    StepReport::again(0, None)
}

impl JobKind for Example {
    fn facts(&self) -> &'static Facts {
        &FACTS
    }

    fn work(&self) -> Work {
        Work::Steps(step)
    }

    fn progress_line(&self, job: &Job) -> String {
        format!("job {}: counted to {}", job.id, job.rows_done)
    }

    fn success_line(&self, job: &Job) -> String {
        format!("job {} succeeded: counted to {}", job.id, job.rows_done)
    }
}
