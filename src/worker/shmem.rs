//! What pg_migrate's processes share: requests for the launcher, and the
//! index statements workers run now (so that a pause or cancel can
//! interrupt one).  Exists only when pg_migrate is preloaded.

use pgrx::prelude::*;
use pgrx::{PGRXSharedMemory, PgLwLock};
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

/// Index statements running in workers now, one slot per worker at most.
const BUILD_SLOTS: usize = 64;

/// A worker that runs an index job's statement: a pause or cancel of that
/// job interrupts it (SIGINT, as pg_cancel_backend sends).
#[derive(Copy, Clone, Default)]
pub struct BuildSlot {
    pub pid: i32,
    /// Job ids are per database.
    pub dboid: u32,
    pub job_id: i64,
}

#[derive(Copy, Clone)]
pub struct Shared {
    /// pgprocno of the launcher, -1 when it is not running.
    pub launcher_procno: i32,
    pub launcher_pid: i32,
    pub rescan_all: bool,
    pub pending: usize,
    pub requests: [Request; REQUESTS],
    pub builds: [BuildSlot; BUILD_SLOTS],
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            launcher_procno: -1,
            launcher_pid: 0,
            rescan_all: false,
            pending: 0,
            requests: [Request::default(); REQUESTS],
            builds: [BuildSlot::default(); BUILD_SLOTS],
        }
    }
}

unsafe impl PGRXSharedMemory for Shared {}

pub static SHARED: PgLwLock<Shared> = unsafe { PgLwLock::new(c"pg_migrate_shared") };

pub(super) static PRELOADED: AtomicBool = AtomicBool::new(false);

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

unsafe extern "C" {
    /// kill(2), as PostgreSQL's pg_cancel_backend uses it.
    fn kill(pid: std::ffi::c_int, sig: std::ffi::c_int) -> std::ffi::c_int;
}

/// This worker starts the statement of index job `job_id`; until
/// `end_build`, a pause or cancel of the job interrupts it.
pub fn begin_build(job_id: i64) {
    if !preloaded() {
        return;
    }
    let pid = unsafe { pg_sys::MyProcPid };
    let dboid = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let mut s = SHARED.exclusive();
    if let Some(slot) = s.builds.iter_mut().find(|b| b.pid == 0 || b.pid == pid) {
        *slot = BuildSlot { pid, dboid, job_id };
    }
}

/// Clears this worker's slot when the process exits, whatever way.
#[pg_guard]
pub unsafe extern "C-unwind" fn end_build_at_exit(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    end_build();
}

/// The statement is over: nothing may interrupt this worker any more.
pub fn end_build() {
    if !preloaded() {
        return;
    }
    let pid = unsafe { pg_sys::MyProcPid };
    let mut s = SHARED.exclusive();
    for slot in s.builds.iter_mut().filter(|b| b.pid == pid) {
        *slot = BuildSlot::default();
    }
}

/// When the current transaction commits (a pause or cancel of index job
/// `job_id`), interrupt the worker running its statement, if one is.  The
/// slot is read and the signal sent under the lock the worker takes to
/// leave its slot, so no other process can receive it.
pub fn interrupt_build_on_commit(job_id: i64) {
    if !preloaded() {
        return;
    }
    let dboid = unsafe { pg_sys::MyDatabaseId }.to_u32();
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
        let s = SHARED.exclusive();
        if let Some(slot) = s
            .builds
            .iter()
            .find(|b| b.pid != 0 && b.dboid == dboid && b.job_id == job_id)
        {
            unsafe { kill(slot.pid, pg_sys::SIGINT as std::ffi::c_int) };
        }
    });
}
