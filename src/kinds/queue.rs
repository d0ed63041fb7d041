//! Queueing a job: tell the workers, or say how it will run without them.

use crate::worker::shmem;
use pgrx::prelude::*;

/// Tell the workers about a new or requeued job when this transaction
/// commits, or say how it will run when there are none.  `worker_only`:
/// an index job, which only a worker can run.
pub fn announce(job_id: i64, worker_only: bool) {
    if shmem::preloaded() {
        shmem::wake_on_commit();
        if crate::gucs::max_workers() == 0 {
            pgrx::warning!(
                "job {job_id} is queued, but pg_migrate.max_workers is 0: no background worker will run it"
            );
        }
    } else {
        let hint = if worker_only {
            "Index jobs run only in a background worker: add pg_migrate to shared_preload_libraries and restart the server.".to_string()
        } else {
            format!(
                "Run it in this session with CALL migrate_run({job_id}); or add pg_migrate to shared_preload_libraries and restart the server."
            )
        };
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!("job {job_id} is queued, but no background worker will run it"),
            "pg_migrate",
        )
        .set_detail(
            "pg_migrate is not in shared_preload_libraries, so its workers are not running.",
        )
        .set_hint(hint)
        .report(PgLogLevel::WARNING);
    }
}

/// A job succeeded (`Some(id)`) or a migration was recorded applied
/// (`None`): wake the workers when this transaction commits if a queued job
/// waits for it, so that it starts now rather than at the next routine look.
pub fn gates_may_open(job: Option<i64>) {
    if shmem::preloaded() && crate::catalog::as_owner(|| crate::catalog::jobs::gated_on(job)) {
        shmem::wake_on_commit();
    }
}

/// Wake the workers when this transaction commits (a slice that stopped
/// frees a place for a sibling).
pub fn wake() {
    if shmem::preloaded() {
        shmem::wake_on_commit();
    }
}
