//! The backfill: an UPDATE of a table in keyset batches, each committed
//! with the job's cursor.  `submit` checks and queues it
//! (`migrate_backfill`), `clause` parses its clauses, `run` is its step,
//! `estimate` tries it on samples (`migrate_estimate`), `slices` splits a
//! parallel or partitioned one, `owner` runs its statements as its owner.

pub mod citus;
pub mod clause;
pub mod estimate;
pub mod key;
pub mod owner;
pub mod run;
pub mod slices;
pub mod submit;

use super::model::{Facts, JobKind, Work};
use crate::catalog::jobs::Job;
use crate::engine::jobs as rules;
use crate::engine::locks::LockMode;

pub static FACTS: Facts = Facts {
    name: "backfill",
    noun: "backfill",
    table_lock: LockMode::RowExclusive,
    locks_index: false,
    one_per_table: None,
    counts_rows: true,
    on_index: false,
    orphaned: "its worker stopped; it resumes at the next batch",
};

pub struct Backfill;

impl JobKind for Backfill {
    fn facts(&self) -> &'static Facts {
        &FACTS
    }

    fn work(&self) -> Work {
        Work::Steps(run::step)
    }

    fn controlled(&self, j: &Job, action: rules::Control) -> Vec<String> {
        citus::controlled(j, action)
    }

    fn progress_line(&self, j: &Job) -> String {
        if let Some(line) = slices::progress_line(j) {
            return line;
        }
        rules::progress_line(
            j.id,
            j.rows_done,
            j.rows_estimate.unwrap_or(0).max(j.rows_done),
            j.rate,
        )
    }

    fn success_line(&self, j: &Job) -> String {
        format!(
            "job {} succeeded: {} rows covered, {} updated, in {} batches",
            j.id,
            rules::thousands(j.rows_done),
            rules::thousands(j.rows_updated),
            j.batches
        )
    }
}
