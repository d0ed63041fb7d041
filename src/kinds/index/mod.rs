//! Index jobs: CREATE INDEX CONCURRENTLY, DROP INDEX CONCURRENTLY and
//! REINDEX INDEX CONCURRENTLY, run by a background worker (they cannot run
//! in a transaction block), cleaned up after a failed attempt, retried,
//! scheduled.  `submit` checks and queues them (`migrate_create_index`,
//! `migrate_drop_index`, `migrate_reindex`), `run` is a worker's attempt,
//! `facts` what the views know of each.

pub mod facts;
pub mod run;
pub mod submit;

use super::model::{Facts, JobKind, Work};
use crate::catalog::as_owner;
use crate::catalog::builds;
use crate::catalog::jobs::Job;
use crate::engine::index::{self as rules, IndexAction};
use crate::engine::jobs::JobState;
use crate::worker::shmem;

/// One of the three index kinds.
pub struct IndexKind {
    action: IndexAction,
}

pub static CREATE: IndexKind = IndexKind {
    action: IndexAction::Create,
};
pub static DROP: IndexKind = IndexKind {
    action: IndexAction::Drop,
};
pub static REINDEX: IndexKind = IndexKind {
    action: IndexAction::Reindex,
};

impl JobKind for IndexKind {
    fn facts(&self) -> &'static Facts {
        facts::of(self.action)
    }

    fn work(&self) -> Work {
        Work::Worker(run::drive)
    }

    /// A worker running the job's statement: interrupt it when this
    /// transaction commits; the worker keeps the job until it has cleaned
    /// up what the statement left.
    fn stopping(&self, job: &Job) -> bool {
        let running = job.state == JobState::Running && job.driven_elsewhere;
        if running {
            shmem::interrupt_build_on_commit(job.id);
        }
        running
    }

    fn run_now(&self, job: &Job) {
        as_owner(|| builds::run_now(job.id));
    }

    fn progress_line(&self, j: &Job) -> String {
        match j.state {
            JobState::Running => {
                let p = as_owner(|| builds::progress(j.id));
                rules::progress_line(j.id, &p, "running")
            }
            _ => format!(
                "job {}: waiting: {}",
                j.id,
                j.wait_reason.clone().unwrap_or_default()
            ),
        }
    }

    fn success_line(&self, j: &Job) -> String {
        let (attempts, size) = as_owner(|| builds::summary(j.id));
        let done = match self.action {
            IndexAction::Create => "created",
            IndexAction::Drop => "dropped",
            IndexAction::Reindex => "rebuilt",
        };
        let index = format!(
            "{}.{}",
            j.spec["schema"].as_str().unwrap_or_default(),
            j.spec["name"].as_str().unwrap_or_default()
        );
        if j.spec["partitioned"].as_bool() == Some(true) {
            let size = j
                .index_oid
                .and_then(|oid| as_owner(|| builds::tree_size(oid)));
            return format!(
                "job {} succeeded: {done} index {index} and the index of each of its {} partitions, attached, in {} steps{}",
                j.id,
                j.rows_done,
                attempts,
                size.map(|s| format!(", index size {s}")).unwrap_or_default()
            );
        }
        format!(
            "job {} succeeded: {done} index {index} in {} attempt{}{}",
            j.id,
            attempts,
            if attempts == 1 { "" } else { "s" },
            size.map(|s| format!(", index size {s}"))
                .unwrap_or_default()
        )
    }
}
