//! Every setting of pg_migrate (prefix `pg_migrate.`).  What the workers
//! read is re-read on SIGHUP (context Sighup).

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Background workers running jobs at once, across all databases.
static MAX_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);

/// How often the launcher looks at each database without being asked
/// (new jobs wake it at once; this is the safety net, and the time scale
/// for rescheduling).
static NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(60);

pub fn max_workers() -> i32 {
    MAX_WORKERS.get()
}

pub fn naptime_secs() -> i32 {
    NAPTIME.get()
}

pub fn init() {
    GucRegistry::define_int_guc(
        c"pg_migrate.max_workers",
        c"Background workers that run pg_migrate jobs at once, in all databases.",
        c"Each running job uses one worker, which also counts against max_worker_processes. 0 stops new jobs from starting (CALL migrate_run still works).",
        &MAX_WORKERS,
        0,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_migrate.naptime",
        c"Seconds between the launcher's routine looks at each database.",
        c"New and resumed jobs wake the launcher at once; this interval only paces the routine checks (databases without the extension are checked ten times less often).",
        &NAPTIME,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"pg_migrate".as_ptr()) };
}
