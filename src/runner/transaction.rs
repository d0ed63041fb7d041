//! A worker's unit of work: a transaction of its own.

use pgrx::prelude::*;

/// Run `f` in a transaction of its own (a worker's unit of work); an ERROR
/// aborts the transaction and comes back as `Err`.
pub fn in_transaction<R>(f: impl FnOnce() -> R) -> Result<R, crate::sys::Caught> {
    use std::panic::AssertUnwindSafe;
    unsafe {
        // As a backend does per statement: now() and statement_timestamp()
        // in this transaction (the job's clauses may use them) are today's.
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    PgTryBuilder::new(AssertUnwindSafe(|| {
        let r = f();
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
        Ok(r)
    }))
    .catch_others(|e| {
        unsafe { pg_sys::AbortCurrentTransaction() };
        Err(crate::sys::caught_error(e))
    })
    .execute()
}
