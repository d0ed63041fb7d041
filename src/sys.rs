//! PostgreSQL plumbing the rest of the extension shares: subtransactions
//! that catch errors, running code as another role, statement timeouts for
//! SPI statements, transaction-local settings.

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::ffi::CString;
use std::panic::AssertUnwindSafe;

/// An ERROR caught in a subtransaction.
#[derive(Debug, Clone)]
pub struct Caught {
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

/// Unpack PostgreSQL's packed SQLSTATE into its five characters.
pub fn sqlstate_text(code: PgSqlErrorCode) -> String {
    let mut v = code as i32;
    (0..5)
        .map(|_| {
            let c = ((v & 0x3F) as u8 + b'0') as char;
            v >>= 6;
            c
        })
        .collect()
}

/// A PostgreSQL error; a Rust panic goes on unwinding.
fn caught(e: CaughtError) -> Caught {
    match e {
        CaughtError::RustPanic { .. } => e.rethrow(),
        other => caught_error(other),
    }
}

/// Any caught error, a Rust panic too (as an internal error), where the
/// caller has already cleaned up and must go on (a worker).
pub fn caught_error(e: CaughtError) -> Caught {
    match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => Caught {
            sqlstate: sqlstate_text(r.sql_error_code()),
            message: r.message().to_string(),
            detail: r.detail().map(String::from),
            hint: r.hint().map(String::from),
        },
        CaughtError::RustPanic { ereport, .. } => Caught {
            sqlstate: "XX000".into(),
            message: ereport.message().to_string(),
            detail: None,
            hint: None,
        },
    }
}

/// Run `f` in a subtransaction.  On success the subtransaction is kept
/// (released into the current transaction) when `keep` is true and rolled
/// back otherwise; on an ERROR it is rolled back and the error returned.
pub fn subtransaction<R>(keep: bool, f: impl FnOnce() -> R) -> Result<R, Caught> {
    let memory = unsafe { pg_sys::CurrentMemoryContext };
    let owner = unsafe { pg_sys::CurrentResourceOwner };
    let (memory, owner) = (AssertUnwindSafe(memory), AssertUnwindSafe(owner));
    let restore = &|| unsafe {
        pg_sys::MemoryContextSwitchTo(*memory);
        pg_sys::CurrentResourceOwner = *owner;
    };
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        // Keep allocating where the caller did; the subtransaction keeps
        // its own resource owner until it ends.
        pg_sys::MemoryContextSwitchTo(*memory);
    }
    PgTryBuilder::new(AssertUnwindSafe(|| {
        let r = f();
        unsafe {
            if keep {
                pg_sys::ReleaseCurrentSubTransaction();
            } else {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
            }
        }
        restore();
        Ok(r)
    }))
    .catch_others(|e| {
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        restore();
        Err(caught(e))
    })
    .execute()
}

/// Restores user id and security context when dropped, also on unwinding.
pub struct Identity {
    user: pg_sys::Oid,
    context: i32,
}

impl Identity {
    /// Become `role` until the returned guard is dropped.  `restricted`
    /// adds SECURITY_RESTRICTED_OPERATION, as PostgreSQL does when it runs
    /// user code on another role's behalf (no SET ROLE, no temp objects).
    pub fn become_role(role: pg_sys::Oid, restricted: bool) -> Identity {
        let (mut user, mut context) = (pg_sys::Oid::INVALID, 0i32);
        unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut context) };
        let mut flags = context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32;
        if restricted {
            flags |= pg_sys::SECURITY_RESTRICTED_OPERATION as i32;
        }
        unsafe { pg_sys::SetUserIdAndSecContext(role, flags) };
        Identity { user, context }
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) }
    }
}

/// Set a setting for the rest of the transaction (SET LOCAL).
pub fn set_local(name: &str, value: &str) {
    let name = CString::new(name).expect("setting names have no NUL");
    let value = CString::new(value).expect("setting values have no NUL");
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
}

/// SET LOCAL lock_timeout to `ms`, and let a lock wait of this transaction
/// get an autovacuum out of its way early.  PostgreSQL cancels an
/// autovacuum that holds up a lock request (unless it prevents wraparound)
/// when the waiter's deadlock check runs, after `deadlock_timeout` (1 s by
/// default); a step whose lock_timeout is shorter gives up before that,
/// retry after retry, for as long as the autovacuum runs, and each try
/// holds the table's writers up behind it.  So the check runs after a
/// quarter of the lock timeout (10 ms at least), never later than the
/// server's setting.  deadlock_timeout is a superuser's setting: it is
/// lowered only in sessions authenticated as a superuser (the workers),
/// and only for this backend's own waits, until the transaction ends.
pub fn set_lock_timeout_local(ms: i64) {
    set_local("lock_timeout", &format!("{}ms", ms.max(1)));
    let early = (ms / 4).clamp(10, i32::MAX as i64) as i32;
    // SAFETY: reads of a backend-local GUC variable and of the
    // authenticated user, both set before any job runs.
    let lower = unsafe {
        early < pg_sys::DeadlockTimeout && pg_sys::superuser_arg(pg_sys::GetAuthenticatedUserId())
    };
    if lower {
        let value = CString::new(format!("{early}ms")).expect("no NUL");
        // SAFETY: PGC_SUSET is the context the caller's privilege (checked
        // above) allows; the value is local to the transaction.
        unsafe {
            pg_sys::set_config_option(
                c"deadlock_timeout".as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_LOCAL,
                true,
                0,
                false,
            );
        }
    }
}

/// A setting's current value.
pub fn setting(name: &str) -> String {
    let name = CString::new(name).expect("setting names have no NUL");
    unsafe {
        let v = pg_sys::GetConfigOptionByName(name.as_ptr(), std::ptr::null_mut(), false);
        std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned()
    }
}

// utils/timeout.h is not in pgrx's bindings.  STATEMENT_TIMEOUT is the
// fourth TimeoutId (3) in PostgreSQL 13 to 18.
const STATEMENT_TIMEOUT: i32 = 3;
use crate::ffi::{disable_timeout, enable_timeout_after};

/// Arms PostgreSQL's statement timeout for the statements run while the
/// guard lives (SPI statements are not top-level statements, so
/// `statement_timeout` alone does not apply to them).
pub struct StatementTimeout(bool);

impl StatementTimeout {
    pub fn arm(ms: i64) -> StatementTimeout {
        if ms <= 0 {
            unsafe { disable_timeout(STATEMENT_TIMEOUT, false) };
            return StatementTimeout(false);
        }
        let ms = ms.min(i32::MAX as i64) as i32;
        unsafe { enable_timeout_after(STATEMENT_TIMEOUT, ms) };
        StatementTimeout(true)
    }
}

impl Drop for StatementTimeout {
    fn drop(&mut self) {
        if self.0 {
            unsafe { disable_timeout(STATEMENT_TIMEOUT, false) };
        }
    }
}

/// A yes/no catalog question; false when it has no answer.
pub fn ask(query: &str, args: &[pgrx::datum::DatumWithOid]) -> bool {
    pinned(|| Spi::get_one_with_args::<bool>(query, args))
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// True inside BEGIN ... COMMIT (where a procedure cannot commit).
pub fn in_transaction_block() -> bool {
    unsafe { pg_sys::IsTransactionBlock() }
}

/// This backend's process id.
pub fn my_pid() -> i32 {
    unsafe { pg_sys::MyProcPid }
}

/// Report what this backend does (pg_stat_activity.query).
pub fn report_activity(what: &str) {
    let text = CString::new(what.replace('\0', " ")).unwrap_or_default();
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr()) };
}

// ---- error positions -------------------------------------------------------
//
// pgrx re-raises a caught PostgreSQL error with its message, detail and hint
// but without its cursor position.  These two error context callbacks carry
// the position across: one records it while an error is being raised, the
// other puts it back (as an internal query position, which psql shows as
// "LINE n:" with a caret) when pgrx raises our error.

thread_local! {
    static CAPTURED: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
    static PENDING: std::cell::RefCell<Option<(CString, i32)>> = const { std::cell::RefCell::new(None) };
}

#[pg_guard]
unsafe extern "C-unwind" fn capture_position(_arg: *mut std::ffi::c_void) {
    let internal = unsafe { pg_sys::getinternalerrposition() };
    let plain = unsafe { pg_sys::geterrposition() };
    CAPTURED.set(if internal > 0 { internal } else { plain });
}

#[pg_guard]
unsafe extern "C-unwind" fn apply_position(_arg: *mut std::ffi::c_void) {
    if let Some((query, position)) = PENDING.take() {
        unsafe {
            pg_sys::internalerrposition(position);
            pg_sys::internalerrquery(query.as_ptr());
        }
    }
}

struct PopContext(*mut pg_sys::ErrorContextCallback);

impl Drop for PopContext {
    fn drop(&mut self) {
        unsafe { pg_sys::error_context_stack = self.0 };
    }
}

/// Run `f`; if it raises an ERROR with a cursor position, `last_position()`
/// tells it afterwards (0 when there was none).
pub fn capturing_position<R>(f: impl FnOnce() -> R) -> R {
    CAPTURED.set(0);
    let mut callback = pg_sys::ErrorContextCallback {
        previous: unsafe { pg_sys::error_context_stack },
        callback: Some(capture_position),
        arg: std::ptr::null_mut(),
    };
    let _pop = PopContext(callback.previous);
    unsafe { pg_sys::error_context_stack = &mut callback };
    f()
}

pub fn last_position() -> i32 {
    CAPTURED.get()
}

/// The hint of an error found in argument `arg`: says which argument,
/// then the error's own hint.
pub fn hint_in(arg: &str, hint: Option<&str>) -> String {
    match hint {
        Some(h) => format!("The error is in {arg}. {h}"),
        None => format!("The error is in {arg}."),
    }
}

/// Raise `e` as an ERROR that points at character `position` (1-based) of
/// `query`.
pub fn raise_at(e: &Caught, query: &str, position: i32, hint: Option<String>) -> ! {
    static mut APPLY: pg_sys::ErrorContextCallback = pg_sys::ErrorContextCallback {
        previous: std::ptr::null_mut(),
        callback: Some(apply_position),
        arg: std::ptr::null_mut(),
    };
    if position > 0 {
        PENDING.set(Some((
            CString::new(query.replace('\0', " ")).unwrap_or_default(),
            position,
        )));
        // Left on the stack on purpose: the ERROR's abort (or the PG_CATCH
        // of whoever catches it) resets error_context_stack.
        unsafe {
            let apply = &raw mut APPLY;
            (*apply).previous = pg_sys::error_context_stack;
            pg_sys::error_context_stack = apply;
        }
    }
    let code = sqlstate_code(&e.sqlstate);
    let mut report = pgrx::pg_sys::panic::ErrorReport::new(code, e.message.clone(), "pg_migrate");
    if let Some(d) = &e.detail {
        report = report.set_detail(d.clone());
    }
    if let Some(h) = hint.or_else(|| e.hint.clone()) {
        report = report.set_hint(h);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) does not return")
}

// ---- locks only the extension takes --------------------------------------
//
// Advisory locks are open to every role: any session may take the key a
// worker or migrate_start uses and hold it.  These locks use PostgreSQL's
// object lock tag for the extension's own catalog row with a sub-object
// number that no SQL command addresses, so only code in this library can
// take them.  They show in pg_locks as locktype 'object', classid
// pg_extension, objsubid as below.

/// What a private lock serialises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateLock {
    /// Workers claiming the next job of this database (objsubid 1).
    Claims,
    /// Changes to one migration's history (objsubid 2, objid `migration_key`).
    Migration(u32),
}

impl PrivateLock {
    pub fn objid_and_subid(self) -> (u32, u16) {
        match self {
            PrivateLock::Claims => (0, 1),
            PrivateLock::Migration(key) => (key, 2),
        }
    }
}

/// The objid of the lock of migration `key` (FNV-1a of its text).
pub fn migration_key(key: &str) -> u32 {
    key.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// Take `lock` in exclusive mode until the transaction ends; with
/// `wait` false, only if it is free at once.  True when it is held.
pub fn take_private_lock(lock: PrivateLock, wait: bool) -> bool {
    let (objid, subid) = lock.objid_and_subid();
    let tag = pg_sys::LOCKTAG {
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: pg_sys::ExtensionRelationId.to_u32(),
        locktag_field3: objid,
        locktag_field4: subid,
        locktag_type: pg_sys::LockTagType::LOCKTAG_OBJECT as u8,
        locktag_lockmethodid: pg_sys::DEFAULT_LOCKMETHOD as u8,
    };
    let got = unsafe { pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as i32, false, !wait) };
    if got == pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
        return false;
    }
    // What the previous holder committed must be visible to what follows.
    // pgrx runs SPI statements read-only (with the statement's snapshot)
    // until the transaction has an xid, and read-write (each with a new
    // snapshot, in READ COMMITTED) from then on: give it one now.
    unsafe { pg_sys::GetCurrentTransactionId() };
    true
}

// ---- SQL types ---------------------------------------------------------------

/// A relation as SQL's `regclass`: an OID that prints as the relation's
/// name (NULL for no relation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegClass(pub pg_sys::Oid);

impl pgrx::IntoDatum for RegClass {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        (self.0 != pg_sys::Oid::INVALID).then(|| pg_sys::Datum::from(self.0.to_u32()))
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::REGCLASSOID
    }
}

// SAFETY: a regclass datum is an OID by value, as pgrx returns pg_sys::Oid.
unsafe impl pgrx::callconv::BoxRet for RegClass {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        match pgrx::IntoDatum::into_datum(self) {
            Some(d) => unsafe { fcinfo.return_raw_datum(d) },
            None => fcinfo.return_null(),
        }
    }
}

pgrx::impl_sql_translatable!(RegClass, "regclass");

/// Seconds as an interval, rounded to a tenth of a second.
pub fn tenths_interval(seconds: f64) -> pgrx::datum::Interval {
    let tenths = (seconds * 10.0).round();
    pgrx::datum::Interval::from_micros((tenths * 100_000.0) as i64)
}

// ---- search_path ----------------------------------------------------------------

/// The search_path of every statement pg_migrate runs for itself.
pub const PINNED_PATH: &str = "pg_catalog, pg_temp";

/// Set search_path for the session (`GUC_ACTION_SET`) or until the
/// current GUC nest level ends (`GUC_ACTION_SAVE`).
fn set_search_path(path: &str, action: pg_sys::GucAction::Type) {
    let value = CString::new(path).expect("a search_path has no NUL");
    unsafe {
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            action,
            true,
            0,
            false,
        );
    }
}

/// Run `f` with `search_path` set to `path`, then put the previous value
/// back (an ERROR in `f` puts it back through the transaction's abort).
pub fn with_search_path<R>(path: &str, f: impl FnOnce() -> R) -> R {
    let nest = unsafe { pg_sys::NewGUCNestLevel() };
    set_search_path(path, pg_sys::GucAction::GUC_ACTION_SAVE);
    let r = f();
    unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    r
}

/// Pin this session's search_path (a background worker's, from its start):
/// whatever the role's or the database's settings say, the worker's own
/// statements resolve in pg_catalog.  A job applies its submitter's
/// settings for its own statements only (SET LOCAL).
pub fn pin_session_search_path() {
    set_search_path(PINNED_PATH, pg_sys::GucAction::GUC_ACTION_SET);
}

/// Run `f` with `search_path` pinned to `pg_catalog, pg_temp`: for the
/// statements pg_migrate runs for itself with the caller's rights (catalog
/// lookups, lock tables), so that no object in the caller's schemas can
/// stand in for what they call.
pub fn pinned<R>(f: impl FnOnce() -> R) -> R {
    with_search_path(PINNED_PATH, f)
}

// ---- session identity ----------------------------------------------------------

/// The session's identity switched to another role, as SET SESSION
/// AUTHORIZATION switches it, until dropped.  A background worker takes its
/// job's owner's identity for the whole job: `session_user`,
/// `current_user`, `is_superuser` and pg_stat_activity's `usename` are the owner's, so audit triggers and
/// anything else the job's statements run see who submitted it.  Code run
/// by the job cannot switch back (SET SESSION AUTHORIZATION and SET ROLE
/// are refused inside the security-restricted operation it runs in).
pub struct SessionAs {
    previous: pg_sys::Oid,
    previous_is_superuser: bool,
}

impl SessionAs {
    /// Become `role` (`is_superuser`: whether it is one).  `previous_is_superuser`
    /// says whether the session's own user is a superuser (a worker's is).
    pub fn new(role: pg_sys::Oid, is_superuser: bool, previous_is_superuser: bool) -> SessionAs {
        let previous = unsafe { pg_sys::GetSessionUserId() };
        unsafe {
            pg_sys::SetSessionAuthorization(role, is_superuser);
            // pg_stat_activity shows the session user as of the backend's
            // start: report it again, so that monitoring sees the owner too.
            pg_sys::pgstat_bestart();
        }
        SessionAs {
            previous,
            previous_is_superuser,
        }
    }
}

impl Drop for SessionAs {
    fn drop(&mut self) {
        unsafe {
            pg_sys::SetSessionAuthorization(self.previous, self.previous_is_superuser);
            pg_sys::pgstat_bestart();
        }
    }
}

/// Set this session's application_name (a worker names the job it drives).
pub fn set_application_name(name: &str) {
    set_session_setting(c"application_name", name);
}

/// Set a user-settable setting for the rest of this session.
pub fn set_session_setting(setting: &std::ffi::CStr, value: &str) {
    let value = CString::new(value).unwrap_or_default();
    unsafe {
        pg_sys::SetConfigOption(
            setting.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
    }
}

/// PostgreSQL's packed form of a five-character SQLSTATE (MAKE_SQLSTATE).
pub fn sqlstate_code(state: &str) -> pgrx::PgSqlErrorCode {
    let packed = state.bytes().enumerate().fold(0i32, |acc, (i, c)| {
        acc | (((c.wrapping_sub(b'0')) as i32 & 0x3F) << (6 * i))
    });
    pgrx::PgSqlErrorCode::from(packed)
}

/// Sleep `ms` milliseconds in this backend, woken early by its latch;
/// a cancel or terminate interrupts it.
pub fn nap_ms(ms: i64) {
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// Run `f` under a snapshot taken now (read committed: it sees what
/// committed since this statement began), as each statement of a
/// PL/pgSQL loop would.
pub fn fresh_snapshot<R>(f: impl FnOnce() -> R) -> R {
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let r = f();
    unsafe { pg_sys::PopActiveSnapshot() };
    r
}
