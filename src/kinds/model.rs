//! What a job kind is: the facts the drivers and the SQL views need about
//! it, and the work it does.  Each kind is one module that implements
//! [`JobKind`]; `kinds/mod.rs` registers it.

use crate::catalog::jobs::Job;
use crate::engine::jobs::JobState;
use crate::engine::locks::LockMode;

/// Who drives a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// A pg_migrate background worker.
    Worker,
    /// A session in CALL migrate_run.
    Session,
}

impl Driver {
    /// As `pgmigrate.jobs.driver_kind` stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Worker => "worker",
            Driver::Session => "session",
        }
    }
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

/// How a kind's work is driven.
#[derive(Clone, Copy)]
pub enum Work {
    /// In steps, each a unit of work in the caller's transaction, which
    /// commits after it: a worker or `CALL migrate_run` calls it again
    /// until it reports that the job is done.
    Steps(fn(&Job, Driver) -> StepReport),
    /// By a worker only, which runs statements that cannot run inside a
    /// transaction block (CREATE INDEX CONCURRENTLY): called once per claim
    /// with the job's id, outside any transaction; it starts and commits its
    /// own.
    Worker(fn(i64)),
}

/// What the drivers, the control functions and the SQL views know about a
/// kind.  The install script copies these into `pgmigrate.kinds`, which
/// the views and the claim queries read.
pub struct Facts {
    /// The name stored in `pgmigrate.jobs.kind`.
    pub name: &'static str,
    /// What one job of this kind is, for messages ("backfill", "index build").
    pub noun: &'static str,
    /// The lock its work takes on the table.
    pub table_lock: LockMode,
    /// It also locks the index it works on (with `table_lock`'s mode).
    pub locks_index: bool,
    /// Jobs of the kinds that name the same group here run one at a time
    /// on a table ("index job": two index statements on one table would
    /// wait for each other); `None`: any number at once.
    pub one_per_table: Option<&'static str>,
    /// Its progress is counted in rows (rows_done, percent, ETA).
    pub counts_rows: bool,
    /// It works on one index: the views show the index's name, and the
    /// progress of its build (pg_stat_progress_create_index) while it runs.
    pub on_index: bool,
    /// What migrate_progress says when the worker that drove it is gone.
    pub orphaned: &'static str,
}

/// One kind of job.
pub trait JobKind: Sync {
    fn facts(&self) -> &'static Facts;

    /// How its work is driven.
    fn work(&self) -> Work;

    /// Only a background worker drives jobs of this kind.
    fn worker_only(&self) -> bool {
        matches!(self.work(), Work::Worker(_))
    }

    /// The job is being paused or cancelled by this transaction: stop what
    /// its driver runs now, if anything must be interrupted.  Returns true
    /// when the driver keeps the job until it has cleaned up.
    fn stopping(&self, _job: &Job) -> bool {
        false
    }

    /// The job was paused, resumed, cancelled or retried by this
    /// transaction (as the calling role): pass it on to whatever works for
    /// the job elsewhere.  Returns what could not be told, with why.
    fn controlled(&self, _job: &Job, _action: crate::engine::jobs::Control) -> Vec<String> {
        Vec::new()
    }

    /// `CALL migrate_run` on a job only a worker drives: make it run as
    /// soon as a worker can, whatever its schedule says.
    fn run_now(&self, _job: &Job) {}

    /// A progress line while it runs (CALL migrate_wait).
    fn progress_line(&self, job: &Job) -> String;

    /// What a NOTICE says when it succeeded.
    fn success_line(&self, job: &Job) -> String;
}
