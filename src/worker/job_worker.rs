//! A worker in one database: claim a runnable job, drive it step by step
//! (each step its own transaction), claim the next; exit when none is left,
//! telling the launcher when to look again.

use super::shmem::{request_worker, schedule};
use crate::catalog::jobs;
use crate::catalog::{as_owner, installed};
use crate::gucs;
use crate::runner::{self, transaction::in_transaction};
use crate::sys;
use pgrx::bgworkers::*;
use pgrx::prelude::*;

const USECS_PER_SEC: i64 = 1_000_000;

unsafe extern "C-unwind" {
    /// PostgreSQL's SIGTERM handler for backends (postgres.c).
    fn die(signal: std::ffi::c_int);
}

enum Claim {
    NotInstalled,
    Idle(Option<f64>),
    Job(i64, String),
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_migrate_worker_main(arg: pg_sys::Datum) {
    let dboid = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    // SIGTERM (fast shutdown, pg_terminate_backend) interrupts the running
    // batch at once: it rolls back with its cursor, and the job resumes at
    // that batch later.
    unsafe { pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(die)) };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);
    sys::pin_session_search_path();
    unsafe {
        pg_sys::before_shmem_exit(
            Some(super::shmem::end_build_at_exit),
            pg_sys::Datum::from(0),
        )
    };
    sys::set_application_name("pg_migrate worker");
    // On a Citus node, shards are tables like any other to a worker: Citus
    // hides them from the catalogs of sessions it does not know, and a
    // backfill of one shard looks its table up there.
    sys::set_session_setting(c"citus.override_table_visibility", "off");
    // Whether this database was checked for jobs restored from a dump.
    let mut adopted = false;

    loop {
        pg_sys::check_for_interrupts!();
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        sys::report_activity("pg_migrate worker: looking for a job");
        let claim = in_transaction(|| {
            if !installed() || unsafe { pg_sys::RecoveryInProgress() } {
                return Claim::NotInstalled;
            }
            if !adopted {
                if let Some(paused) = as_owner(jobs::adopt_restored) {
                    if !paused.is_empty() {
                        let ids: Vec<String> = paused.iter().map(i64::to_string).collect();
                        pgrx::log!(
                            "pg_migrate: this database was restored from a dump taken while job(s) {} ran: they are paused, not resumed; migrate_resume(job) goes on with one",
                            ids.join(", ")
                        );
                    }
                    adopted = true;
                }
            }
            let retention = gucs::retention_secs();
            if adopted && retention > 0 {
                if let Some(p) = as_owner(|| jobs::purge(retention)) {
                    if p != jobs::Purged::default() {
                        pgrx::log!(
                            "pg_migrate: purged {} finished job(s), {} batch log row(s) and {} migrate_exec attempt(s) older than pg_migrate.retention ({} s)",
                            p.jobs,
                            p.batches,
                            p.exec_attempts,
                            retention
                        );
                    }
                }
            }
            match as_owner(jobs::claim_next) {
                Some((id, kind)) => {
                    if as_owner(jobs::runnable_count) > 0 {
                        request_worker(dboid);
                    }
                    Claim::Job(id, kind)
                }
                None => Claim::Idle(as_owner(jobs::seconds_to_next_due)),
            }
        });
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        let naptime = gucs::naptime_secs() as i64 * USECS_PER_SEC;
        match claim {
            Ok(Claim::Job(id, kind)) => {
                // The whole job runs with its owner's session identity.
                let owner = in_transaction(|| {
                    as_owner(|| jobs::get(id, false))
                        // A dropped owner: the step fails the job, as itself.
                        .filter(|j| {
                            !crate::catalog::role_name(j.owner).starts_with("(dropped role")
                        })
                        .map(|j| {
                            let me = unsafe { pg_sys::GetSessionUserId() };
                            unsafe {
                                (
                                    j.owner,
                                    pg_sys::superuser_arg(j.owner),
                                    pg_sys::superuser_arg(me),
                                )
                            }
                        })
                });
                let _session = match owner {
                    Ok(Some((owner, is_super, me_super))) => {
                        Some(sys::SessionAs::new(owner, is_super, me_super))
                    }
                    _ => None,
                };
                runner::drive(id, &kind);
            }
            Ok(Claim::NotInstalled) => {
                schedule(dboid, now + 10 * naptime);
                break;
            }
            Ok(Claim::Idle(due)) => {
                let wait = due.map_or(naptime, |s| {
                    ((s.max(0.0) * USECS_PER_SEC as f64) as i64).min(naptime)
                });
                schedule(dboid, now + wait.max(100_000));
                break;
            }
            Err(e) => {
                warning!("pg_migrate worker: {}", e.message);
                schedule(dboid, now + naptime);
                break;
            }
        }
    }
}
