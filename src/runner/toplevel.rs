//! Running CREATE INDEX, DROP INDEX and REINDEX CONCURRENTLY as a worker's
//! own top-level statement.
//!
//! These statements refuse to run inside a function (SPI), because they
//! commit and start transactions of their own.  A worker outside any
//! transaction can run them as a client session does: start a transaction,
//! push a snapshot, hand the parsed statement to ProcessUtility as a
//! top-level statement, commit.  The statement pops the snapshot and
//! commits on its own along the way, so its parse tree and text live in a
//! memory context of their own that outlives those commits.

use crate::sys::{self, Caught};
use pgrx::prelude::*;
use std::ffi::CString;
use std::panic::AssertUnwindSafe;

/// What to run, as whom, under which settings.
pub struct Statement<'a> {
    pub sql: &'a str,
    /// The role the statement runs as (with SECURITY_RESTRICTED_OPERATION).
    pub role: pg_sys::Oid,
    /// Session settings of the submitter (search_path, ...).
    pub settings: &'a [(String, String)],
    /// lock_timeout for every lock and every older transaction the
    /// statement waits for; 0: no limit.
    pub lock_timeout_ms: i64,
    /// A CREATE INDEX must still name this table.
    pub table: Option<pg_sys::Oid>,
}

/// A statement that failed, and what its progress report said then.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: Caught,
    /// `pg_stat_progress_create_index` phase when it failed.
    pub phase: Option<i64>,
    /// The backend it was waiting for then.
    pub waiting_for: Option<i32>,
}

/// Cancel requests wait while this lives (pg_migrate's own bookkeeping must
/// not be cut short); a statement lets them through (its own lock timeout
/// is one, and a pause or cancel of the job sends one), and a request left
/// over when it ends is forgotten.
pub struct HoldCancels(u32);

impl HoldCancels {
    pub fn new() -> HoldCancels {
        unsafe {
            let before = pg_sys::QueryCancelHoldoffCount;
            pg_sys::QueryCancelHoldoffCount = before + 1;
            HoldCancels(before)
        }
    }

    /// Forget a cancel request that came for a statement already over.
    pub fn forget_pending() {
        unsafe { pg_sys::QueryCancelPending = 0 };
    }
}

impl Default for HoldCancels {
    fn default() -> Self {
        HoldCancels::new()
    }
}

impl Drop for HoldCancels {
    fn drop(&mut self) {
        unsafe { pg_sys::QueryCancelHoldoffCount = self.0 };
    }
}

/// SET name = value for the session; None: RESET name.
fn set_session(name: &str, value: Option<&str>) {
    let name = CString::new(name).unwrap_or_default();
    let value = value.map(|v| CString::new(v.replace('\0', " ")).unwrap_or_default());
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SET,
            true,
            0,
            false,
        );
    }
}

/// What this backend's progress report says about an index build.
fn own_progress() -> (Option<i64>, Option<i32>) {
    unsafe {
        let be = pg_sys::MyBEEntry;
        if be.is_null()
            || (*be).st_progress_command
                != pg_sys::ProgressCommandType::PROGRESS_COMMAND_CREATE_INDEX
        {
            return (None, None);
        }
        // PROGRESS_CREATEIDX_PHASE and PROGRESS_WAITFOR_CURRENT_PID
        let phase = (*be).st_progress_param[9];
        let pid = (*be).st_progress_param[5];
        (Some(phase), (pid > 0).then_some(pid as i32))
    }
}

/// The one statement in `sql`, parsed in the current memory context.
unsafe fn parse_one(sql: &CString) -> *mut pg_sys::RawStmt {
    unsafe {
        let list = pgrx::PgList::<pg_sys::RawStmt>::from_pg(pg_sys::pg_parse_query(sql.as_ptr()));
        if list.len() != 1 {
            pgrx::error!("pg_migrate: a job's statement must be exactly one statement");
        }
        list.get_ptr(0).expect("one statement")
    }
}

unsafe fn process_utility(pstmt: *mut pg_sys::PlannedStmt, sql: &CString) {
    unsafe {
        let mut qc: pg_sys::QueryCompletion = std::mem::zeroed();
        pg_sys::ProcessUtility(
            pstmt,
            sql.as_ptr(),
            false,
            pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            pg_sys::None_Receiver,
            &mut qc,
        );
    }
}

/// Run `s` as a top-level statement, in transactions of its own.  Call
/// outside any transaction.
pub fn run(s: &Statement<'_>) -> Result<(), Failure> {
    let sql = CString::new(s.sql.replace('\0', " ")).unwrap_or_default();
    let mut names: Vec<&str> = s.settings.iter().map(|(n, _)| n.as_str()).collect();
    names.push("lock_timeout");
    let (mut user, mut context) = (pg_sys::Oid::INVALID, 0i32);
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut context) };
    let memory = unsafe {
        pg_sys::AllocSetContextCreateInternal(
            pg_sys::TopMemoryContext,
            c"pg_migrate statement".as_ptr(),
            0,
            8 * 1024,
            8 * 1024 * 1024,
        )
    };

    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::MemoryContextSwitchTo(memory);
        // No stale report from an earlier statement.
        pg_sys::pgstat_progress_end_command();
    }
    let held = unsafe { pg_sys::QueryCancelHoldoffCount };
    let result = PgTryBuilder::new(AssertUnwindSafe(|| {
        for (name, value) in s.settings {
            set_session(name, Some(value));
        }
        set_session(
            "lock_timeout",
            Some(&format!("{}ms", s.lock_timeout_ms.max(0))),
        );
        unsafe {
            pg_sys::SetUserIdAndSecContext(
                s.role,
                context
                    | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                    | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
            let raw = parse_one(&sql);
            let node = (*raw).stmt;
            if let Some(expected) = s.table {
                if (*node).type_ == pg_sys::NodeTag::T_IndexStmt {
                    let stmt = node as *mut pg_sys::IndexStmt;
                    let now = pg_sys::RangeVarGetRelidExtended(
                        (*stmt).relation,
                        pg_sys::NoLock as pg_sys::LOCKMODE,
                        0,
                        None,
                        std::ptr::null_mut(),
                    );
                    if now != expected {
                        pgrx::pg_sys::panic::ErrorReport::new(
                            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                            "the statement's table name now leads to another table",
                            "pg_migrate",
                        )
                        .set_detail(
                            "A table was renamed, dropped or created after the job was queued.",
                        )
                        .set_hint("Queue the index again with migrate_create_index().")
                        .report(PgLogLevel::ERROR);
                    }
                }
            }
            let pstmt = pg_sys::palloc0(std::mem::size_of::<pg_sys::PlannedStmt>())
                as *mut pg_sys::PlannedStmt;
            (*pstmt).type_ = pg_sys::NodeTag::T_PlannedStmt;
            (*pstmt).commandType = pg_sys::CmdType::CMD_UTILITY;
            (*pstmt).canSetTag = true;
            (*pstmt).utilityStmt = node;
            (*pstmt).stmt_location = (*raw).stmt_location;
            (*pstmt).stmt_len = (*raw).stmt_len;

            sys::report_activity(s.sql);
            pg_sys::debug_query_string = sql.as_ptr();
            pg_sys::QueryCancelHoldoffCount = 0;
            // An active portal, as a client session's statement has: the
            // CONCURRENTLY statements commit along the way (the portal
            // lives through those commits), and code that runs SQL after
            // their last commit (Citus, dropping a distributed table's
            // index on its shards) takes its snapshot through it.
            let portal = pg_sys::CreateNewPortal();
            (*portal).visible = false;
            (*portal).status = pg_sys::PortalStatus::PORTAL_ACTIVE;
            pg_sys::ActivePortal = portal;
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            process_utility(pstmt, &sql);
            pg_sys::QueryCancelHoldoffCount = held;
            HoldCancels::forget_pending();
            // The CONCURRENTLY statements popped the snapshot and run
            // their last part in a transaction of their own.
            if pg_sys::ActiveSnapshotSet() {
                pg_sys::PopActiveSnapshot();
            }
            (*portal).portalSnapshot = std::ptr::null_mut();
            pg_sys::ActivePortal = std::ptr::null_mut();
            // Done: the commit drops it.
            pg_sys::MarkPortalDone(portal);
            pg_sys::CommitTransactionCommand();
        }
        Ok(())
    }))
    .catch_others(|e| {
        // The abort marks the portal failed and drops it.
        unsafe { pg_sys::ActivePortal = std::ptr::null_mut() };
        unsafe { pg_sys::QueryCancelHoldoffCount = held };
        HoldCancels::forget_pending();
        let (phase, waiting_for) = own_progress();
        unsafe { pg_sys::AbortCurrentTransaction() };
        Err(Failure {
            error: sys::caught_error(e),
            phase,
            waiting_for,
        })
    })
    .execute();

    unsafe {
        pg_sys::debug_query_string = std::ptr::null();
        pg_sys::SetUserIdAndSecContext(user, context);
        pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
        pg_sys::MemoryContextDelete(memory);
    }
    // The worker never sets these otherwise: RESET gives it back the
    // server's values for whatever it runs next.
    let restored = super::transaction::in_transaction(|| {
        for name in &names {
            set_session(name, None);
        }
    });
    if let Err(e) = restored {
        pgrx::warning!("pg_migrate worker: restoring its settings: {}", e.message);
    }
    result
}
