//! PostgreSQL functions that pgrx's bindings lack, declared here and
//! wrapped the way pgrx wraps its own: each call runs behind
//! `pg_guard_ffi_boundary`, so an ERROR raised inside becomes a Rust panic
//! that pgrx turns back into the same ERROR (never a longjmp across Rust
//! frames).
//!
//! Call these, and pgrx's `pg_sys::*` functions, directly: they are guarded
//! already.  Wrapping a guarded call in a second `pg_guard_ffi_boundary`
//! makes its error a panic inside a frame that cannot unwind, which aborts
//! the backend and so restarts the whole server.

#![allow(non_snake_case)] // PostgreSQL's own names

use pgrx::pg_sys;
use std::ffi::{c_char, c_int, c_void};

pub type Walker = unsafe extern "C-unwind" fn(*mut pg_sys::Node, *mut c_void) -> bool;

mod raw {
    use super::*;
    unsafe extern "C-unwind" {
        pub fn find_all_inheritors(
            parent: pg_sys::Oid,
            lockmode: pg_sys::LOCKMODE,
            numparents: *mut *mut pg_sys::List,
        ) -> *mut pg_sys::List;
        pub fn get_default_partition_oid(parent: pg_sys::Oid) -> pg_sys::Oid;
        pub fn raw_expression_tree_walker(
            node: *mut pg_sys::Node,
            walker: Walker,
            context: *mut c_void,
        ) -> bool;
        pub fn transformIndexStmt(
            relid: pg_sys::Oid,
            stmt: *mut pg_sys::IndexStmt,
            query_string: *const c_char,
        ) -> *mut pg_sys::IndexStmt;
        pub fn enable_timeout_after(id: c_int, delay_ms: c_int);
        pub fn disable_timeout(id: c_int, keep_indicator: bool);
    }
}

macro_rules! guarded {
    ($(pub unsafe fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {
        $(
            /// Guarded call of PostgreSQL's function of the same name.
            ///
            /// # Safety
            /// As for the C function: valid pointers, a transaction where it
            /// reads the catalog.
            pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| raw::$name($($arg),*)) }
            }
        )*
    };
}

guarded! {
    pub unsafe fn find_all_inheritors(parent: pg_sys::Oid, lockmode: pg_sys::LOCKMODE, numparents: *mut *mut pg_sys::List) -> *mut pg_sys::List;
    pub unsafe fn get_default_partition_oid(parent: pg_sys::Oid) -> pg_sys::Oid;
    pub unsafe fn transformIndexStmt(relid: pg_sys::Oid, stmt: *mut pg_sys::IndexStmt, query_string: *const c_char) -> *mut pg_sys::IndexStmt;
    pub unsafe fn enable_timeout_after(id: c_int, delay_ms: c_int);
    pub unsafe fn disable_timeout(id: c_int, keep_indicator: bool);
}

/// PostgreSQL's walker over raw parse trees, guarded.  `walker` must be a
/// `#[pg_guard]` function, so that a panic in it is re-raised as an ERROR
/// that this call's guard catches.
///
/// # Safety
/// `node` is a raw parse tree; `context` is what `walker` expects.
pub unsafe fn raw_expression_tree_walker(
    node: *mut pg_sys::Node,
    walker: Walker,
    context: *mut c_void,
) -> bool {
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            raw::raw_expression_tree_walker(node, walker, context)
        })
    }
}
