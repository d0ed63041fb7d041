//! The relations a raw tree names: the tables a query reads, the sequences
//! a default names.

use super::nodes::{cstr, is, names, nodes};
use pgrx::prelude::*;
use std::ffi::{c_void, CString};

use pg_sys::NodeTag as T;

struct Walk {
    rels: Vec<*mut pg_sys::RangeVar>,
    ctes: Vec<String>,
}

#[pg_guard]
unsafe extern "C-unwind" fn collect(node: *mut pg_sys::Node, ctx: *mut c_void) -> bool {
    unsafe {
        if node.is_null() {
            return false;
        }
        let w = &mut *(ctx as *mut Walk);
        match (*node).type_ {
            T::T_RangeVar => {
                w.rels.push(node as *mut pg_sys::RangeVar);
                return false;
            }
            T::T_CommonTableExpr => {
                let cte = node as *mut pg_sys::CommonTableExpr;
                w.ctes.push(cstr((*cte).ctename).unwrap_or_default());
            }
            _ => {}
        }
        walk(node, ctx)
    }
}

unsafe fn walk(node: *mut pg_sys::Node, ctx: *mut c_void) -> bool {
    unsafe { crate::ffi::raw_expression_tree_walker(node, collect, ctx) }
}

/// Every table a raw query names (CTE names left out).
pub(super) unsafe fn read_relations(node: *mut pg_sys::Node) -> Vec<*mut pg_sys::RangeVar> {
    unsafe {
        if node.is_null() {
            return vec![];
        }
        let mut w = Walk {
            rels: vec![],
            ctes: vec![],
        };
        let ctx = &mut w as *mut Walk as *mut c_void;
        walk(node, ctx);
        let ctes = w.ctes.clone();
        w.rels
            .into_iter()
            .filter(|rv| {
                !((**rv).schemaname.is_null()
                    && ctes.contains(&cstr((**rv).relname).unwrap_or_default()))
            })
            .collect()
    }
}

/// Sequences a raw default names as `nextval('name')` (or currval,
/// setval): looked at when the default is stored.
pub(super) unsafe fn sequences_named_in(node: *mut pg_sys::Node) -> Vec<*mut pg_sys::RangeVar> {
    unsafe {
        let mut out = vec![];
        if node.is_null() {
            return out;
        }
        // Defaults are expressions: walk the node kinds they are made of.
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if is(n, T::T_FuncCall) {
                let f = n as *mut pg_sys::FuncCall;
                let fname = names((*f).funcname);
                if matches!(
                    fname.last().map(String::as_str),
                    Some("nextval" | "currval" | "setval")
                ) {
                    if let Some(arg) = nodes::<pg_sys::Node>((*f).args).first().copied() {
                        let mut lit = arg;
                        if is(lit, T::T_TypeCast) {
                            lit = (*(lit as *mut pg_sys::TypeCast)).arg;
                        }
                        if is(lit, T::T_A_Const) {
                            let text = a_const_text(lit as *mut pg_sys::A_Const);
                            if let Some(t) = text {
                                let c = CString::new(t).unwrap_or_default();
                                let list = pg_sys::stringToQualifiedNameList(c.as_ptr());
                                out.push(pg_sys::makeRangeVarFromNameList(list));
                            }
                        }
                    }
                }
                stack.extend(nodes::<pg_sys::Node>((*f).args));
            } else if is(n, T::T_TypeCast) {
                stack.push((*(n as *mut pg_sys::TypeCast)).arg);
            } else if is(n, T::T_A_Expr) {
                let e = n as *mut pg_sys::A_Expr;
                stack.push((*e).lexpr);
                stack.push((*e).rexpr);
            } else if is(n, T::T_CoalesceExpr) {
                stack.extend(nodes::<pg_sys::Node>(
                    (*(n as *mut pg_sys::CoalesceExpr)).args,
                ));
            }
            stack.retain(|p| !p.is_null());
        }
        out
    }
}

/// The string of a string constant.
unsafe fn a_const_text(c: *mut pg_sys::A_Const) -> Option<String> {
    unsafe {
        {
            if (*c).isnull || (*c).val.node.type_ != T::T_String {
                return None;
            }
            cstr((*c).val.sval.sval)
        }
    }
}
