//! Small node helpers: C strings, node tags, lists and name lists of raw
//! parse trees.

use pgrx::prelude::*;
use pgrx::PgList;
use std::ffi::CStr;

use pg_sys::NodeTag as T;

pub(super) fn cstr(p: *const std::ffi::c_char) -> Option<String> {
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

pub(super) unsafe fn is(node: *mut pg_sys::Node, tag: T) -> bool {
    !node.is_null() && unsafe { (*node).type_ } == tag
}

/// The text of a String node.
pub(super) unsafe fn str_val(node: *mut pg_sys::Node) -> String {
    unsafe { cstr((*(node as *mut pg_sys::String)).sval).unwrap_or_default() }
}

pub(super) unsafe fn nodes<N>(list: *mut pg_sys::List) -> Vec<*mut N> {
    unsafe { PgList::<N>::from_pg(list).iter_ptr().collect() }
}

pub(super) unsafe fn names(list: *mut pg_sys::List) -> Vec<String> {
    unsafe {
        nodes::<pg_sys::Node>(list)
            .into_iter()
            .map(|n| str_val(n))
            .collect()
    }
}
