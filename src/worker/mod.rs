//! Background workers: the clock that drives jobs, never the logic (that is
//! the job's kind, driven through `runner`, which CALL migrate_run uses too).
//!
//! A launcher, registered when pg_migrate is in shared_preload_libraries,
//! starts one dynamic worker per database that has (or may have) runnable
//! jobs, up to `pg_migrate.max_workers` in all.  A worker claims a job,
//! drives it to the end, claims the next, and exits when none is left.
//! Backends wake the launcher through shared memory when they queue a job
//! (at commit); workers tell it when to look at their database again.

pub mod job_worker;
pub mod launcher;
pub mod shmem;

use pgrx::pg_shmem_init;
use pgrx::prelude::*;
use shmem::{PRELOADED, SHARED};
use std::sync::atomic::Ordering;

/// Called from _PG_init.  Shared memory and the launcher exist only when
/// the library is preloaded (and never in binary-upgrade mode).
// pgrx's pg_shmem_init! tests features for every PostgreSQL major; this
// crate has only pg15.
#[allow(unexpected_cfgs)]
pub fn init() {
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    pg_shmem_init!(SHARED);
    PRELOADED.store(true, Ordering::Relaxed);
    if unsafe { pg_sys::IsBinaryUpgrade } {
        return;
    }
    launcher::register();
}
