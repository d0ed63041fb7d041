//! The launcher: one per server, connected to no database.  It keeps, for
//! every database that accepts connections (templates excluded), the time
//! to look at it next, and starts a worker there when that time comes or
//! when a backend asks, as long as fewer than `pg_migrate.max_workers`
//! workers run.

use super::shmem::{Request, SHARED};
use crate::gucs;
use pgrx::bgworkers::*;
use pgrx::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

const USECS_PER_SEC: i64 = 1_000_000;

pub fn register() {
    BackgroundWorkerBuilder::new("pg_migrate launcher")
        .set_type("pg_migrate launcher")
        .set_library("pg_migrate")
        .set_function("pg_migrate_launcher_main")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_launcher(_code: i32, _arg: pg_sys::Datum) {
    let mut s = SHARED.exclusive();
    s.launcher_procno = -1;
    s.launcher_pid = 0;
}

/// Databases a worker may connect to: not templates (a connection would
/// block CREATE DATABASE from them), and allowing connections.
fn databases() -> Vec<u32> {
    let mut out = Vec::new();
    unsafe {
        pg_sys::StartTransactionCommand();
        let rel = pg_sys::table_open(
            pg_sys::DatabaseRelationId,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        );
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let header = (*tuple).t_data;
            let form = (header as *mut u8).add((*header).t_hoff as usize)
                as *mut pg_sys::FormData_pg_database;
            if (*form).datallowconn && !(*form).datistemplate {
                out.push((*form).oid.to_u32());
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::CommitTransactionCommand();
    }
    out
}

fn start_worker(dboid: u32) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new("pg_migrate worker")
        .set_type("pg_migrate worker")
        .set_library("pg_migrate")
        .set_function("pg_migrate_worker_main")
        .enable_spi_access()
        .set_argument(Some(pg_sys::Datum::from(dboid)))
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_migrate_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    crate::sys::pin_session_search_path();
    unsafe {
        let mut s = SHARED.exclusive();
        s.launcher_procno = (*pg_sys::MyProc).pgprocno;
        s.launcher_pid = pg_sys::MyProcPid;
        s.rescan_all = true;
        drop(s);
        pg_sys::before_shmem_exit(Some(forget_launcher), pg_sys::Datum::from(0));
    }
    crate::sys::report_activity("pg_migrate launcher: idle");
    log!("pg_migrate launcher started");

    // database -> when to look at it next (TimestampTz)
    let mut next: HashMap<u32, i64> = HashMap::new();
    // (database, worker, when it started)
    let mut workers: Vec<(u32, DynamicBackgroundWorker, i64)> = Vec::new();
    // database -> when a request about it last came (a worker asks for its
    // next look just before it exits)
    let mut heard: HashMap<u32, i64> = HashMap::new();
    let mut listed_at = i64::MIN;
    let mut warned_at = i64::MIN;

    loop {
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        let naptime = gucs::naptime_secs() as i64 * USECS_PER_SEC;

        // Requests from backends and workers.
        let (requests, rescan_all) = {
            let mut s = SHARED.exclusive();
            let r: Vec<Request> = s.requests[..s.pending].to_vec();
            s.pending = 0;
            let all = std::mem::take(&mut s.rescan_all);
            (r, all)
        };
        if rescan_all || now - listed_at >= naptime {
            let dbs = databases();
            next.retain(|db, _| dbs.contains(db));
            for db in dbs {
                // A database seen for the first time is looked at now.
                next.entry(db).or_insert(now);
            }
            if rescan_all {
                next.values_mut().for_each(|t| *t = now);
            }
            listed_at = now;
        }
        for r in requests {
            let when = if r.at == 0 { now } else { r.at };
            next.insert(r.dboid, when);
            heard.insert(r.dboid, now);
        }

        // A worker that stopped without saying when to look again was
        // terminated or failed: its job may be left half-way, so look at
        // its database again soon.
        workers.retain(|(db, w, started)| {
            let stopped = matches!(
                w.pid(),
                Err(BackgroundWorkerStatus::Stopped) | Err(BackgroundWorkerStatus::PostmasterDied)
            );
            if stopped && heard.get(db).is_none_or(|h| h <= started) {
                let soon = now + USECS_PER_SEC;
                next.entry(*db)
                    .and_modify(|t| *t = (*t).min(soon))
                    .or_insert(soon);
            }
            !stopped
        });
        let mut due: Vec<(i64, u32)> = next
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(db, t)| (*t, *db))
            .collect();
        due.sort();
        for (_, db) in due {
            if workers.len() >= gucs::max_workers().max(0) as usize {
                break;
            }
            match start_worker(db) {
                Some(w) => {
                    workers.push((db, w, now));
                    // The worker reports a better time when it is done.
                    next.insert(db, now + naptime);
                }
                None => {
                    if now - warned_at > 60 * USECS_PER_SEC {
                        warning!(
                            "pg_migrate could not start a background worker; raise max_worker_processes (now {})",
                            unsafe { pg_sys::max_worker_processes }
                        );
                        warned_at = now;
                    }
                    break;
                }
            }
        }

        // Sleep until the next database is due, a request comes, a worker
        // exits, or naptime passes.
        let earliest = next.values().copied().min().unwrap_or(now + naptime);
        let wait_us = (earliest - now).clamp(100_000, naptime.max(USECS_PER_SEC));
        let wait = if workers.len() >= gucs::max_workers().max(0) as usize {
            Duration::from_secs(gucs::naptime_secs() as u64)
        } else {
            Duration::from_micros(wait_us as u64)
        };
        if !BackgroundWorker::wait_latch(Some(wait)) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }
    log!("pg_migrate launcher stopping");
}
