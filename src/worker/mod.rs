//! Background workers: the clock that drives jobs, never the logic (that is
//! `runner::step`, which CALL migrate_run calls too).
//!
//! A launcher, registered when pg_migrate is in shared_preload_libraries,
//! starts one dynamic worker per database that has (or may have) runnable
//! jobs, up to `pg_migrate.max_workers` in all.  A worker claims a job,
//! drives it to the end, claims the next, and exits when none is left.
//! Backends wake the launcher through shared memory when they queue a job
//! (at commit); workers tell it when to look at their database again.

pub mod job_worker;
pub mod launcher;

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::sync::atomic::{AtomicBool, Ordering};

/// Requests waiting for the launcher.  When full, the launcher is told to
/// look at every database.
const REQUESTS: usize = 64;

#[derive(Copy, Clone, Default)]
pub struct Request {
    pub dboid: u32,
    /// 0: now; else a TimestampTz at which to look at the database.
    pub at: i64,
}

#[derive(Copy, Clone)]
pub struct Shared {
    /// pgprocno of the launcher, -1 when it is not running.
    pub launcher_procno: i32,
    pub launcher_pid: i32,
    pub rescan_all: bool,
    pub pending: usize,
    pub requests: [Request; REQUESTS],
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            launcher_procno: -1,
            launcher_pid: 0,
            rescan_all: false,
            pending: 0,
            requests: [Request::default(); REQUESTS],
        }
    }
}

unsafe impl PGRXSharedMemory for Shared {}

pub static SHARED: PgLwLock<Shared> = unsafe { PgLwLock::new(c"pg_migrate_shared") };

static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Called from _PG_init.  Shared memory and the launcher exist only when
/// the library is preloaded (and never in binary-upgrade mode).
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

/// Was pg_migrate loaded through shared_preload_libraries?
pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

fn push(dboid: pg_sys::Oid, at: i64) {
    let procno = {
        let mut s = SHARED.exclusive();
        if s.pending < REQUESTS {
            let i = s.pending;
            s.requests[i] = Request {
                dboid: dboid.to_u32(),
                at,
            };
            s.pending += 1;
        } else {
            s.rescan_all = true;
        }
        s.launcher_procno
    };
    if procno >= 0 {
        unsafe {
            let proc_ = (*pg_sys::ProcGlobal).allProcs.add(procno as usize);
            pg_sys::SetLatch(&mut (*proc_).procLatch);
        }
    }
}

/// Ask the launcher for a worker in this database now.
pub fn request_worker(dboid: pg_sys::Oid) {
    if preloaded() {
        push(dboid, 0);
    }
}

/// Ask the launcher to look at this database at `at` (a TimestampTz).
pub fn schedule(dboid: pg_sys::Oid, at: i64) {
    if preloaded() {
        push(dboid, at.max(1));
    }
}

/// When the current transaction commits (and so the job row becomes
/// visible), ask for a worker in this database.
pub fn wake_on_commit() {
    let dboid = unsafe { pg_sys::MyDatabaseId };
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
        request_worker(dboid)
    });
}
