//! What a statement does: the relations it locks and how, and the script
//! as far as it has been read.

use super::lookup::{children, rel_display};
use super::nodes::cstr;
use crate::engine::locks::LockMode;
use crate::sys;
use pgrx::prelude::*;
use std::collections::HashMap;

/// One relation a statement locks.
#[derive(Debug, Clone)]
pub struct Target {
    pub relid: Option<pg_sys::Oid>,
    /// For relations the script creates (no oid yet).
    pub name: String,
    pub mode: LockMode,
    pub rewrites: bool,
    pub scans: bool,
    pub locks_rows: bool,
    pub new_in: Option<usize>,
    pub why: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Analysis {
    pub command: String,
    pub targets: Vec<Target>,
    pub in_transaction: bool,
    pub recipe: Vec<String>,
    pub notes: Vec<String>,
    pub unknown: Option<String>,
}

impl Analysis {
    pub(super) fn lock(&mut self, relid: pg_sys::Oid, mode: LockMode) -> &mut Target {
        let i = match self.targets.iter().position(|t| t.relid == Some(relid)) {
            Some(i) => {
                let t = &mut self.targets[i];
                t.mode = t.mode.max(mode);
                i
            }
            None => {
                self.targets.push(Target {
                    relid: Some(relid),
                    name: rel_display(relid),
                    mode,
                    rewrites: false,
                    scans: false,
                    locks_rows: false,
                    new_in: None,
                    why: None,
                });
                self.targets.len() - 1
            }
        };
        &mut self.targets[i]
    }

    pub(super) fn lock_new(&mut self, name: String, mode: LockMode, statement: usize) {
        if self
            .targets
            .iter()
            .any(|t| t.relid.is_none() && t.name == name)
        {
            return;
        }
        self.targets.push(Target {
            relid: None,
            name,
            mode,
            rewrites: false,
            scans: false,
            locks_rows: false,
            new_in: Some(statement),
            why: None,
        });
    }
}

/// The script as far as it has been read: what earlier statements create.
pub struct Script<'a> {
    pub sql: &'a str,
    /// Relation name (as written, unqualified) → statement that creates it.
    pub created: HashMap<String, usize>,
    pub number: usize,
}

pub(super) enum Found {
    Oid(pg_sys::Oid),
    New(String, usize),
    Missing,
}

impl Script<'_> {
    /// Look a relation up without locking it.
    pub(super) unsafe fn find(&self, rv: *mut pg_sys::RangeVar) -> Found {
        unsafe {
            if rv.is_null() {
                return Found::Missing;
            }
            let oid = pg_sys::RangeVarGetRelidExtended(
                rv,
                pg_sys::NoLock as i32,
                pg_sys::RVROption::RVR_MISSING_OK,
                None,
                std::ptr::null_mut(),
            );
            let name = cstr((*rv).relname).unwrap_or_default();
            if oid != pg_sys::Oid::INVALID {
                return Found::Oid(oid);
            }
            match self.created.get(&name) {
                Some(n) => Found::New(name, *n),
                None => Found::Missing,
            }
        }
    }

    /// Look it up, or raise the error PostgreSQL would.
    pub(super) unsafe fn need(&self, rv: *mut pg_sys::RangeVar) -> Found {
        unsafe {
            match self.find(rv) {
                Found::Missing => {
                    let name = cstr((*rv).relname).unwrap_or_default();
                    let schema = cstr((*rv).schemaname);
                    let shown = match schema {
                        Some(s) => format!("{s}.{name}"),
                        None => name,
                    };
                    sys::raise_at(
                        &sys::Caught {
                            sqlstate: "42P01".into(),
                            message: format!("relation \"{shown}\" does not exist"),
                            detail: Some(format!(
                                "Statement {} of the script uses it, and no earlier statement creates it.",
                                self.number
                            )),
                            hint: None,
                        },
                        self.sql,
                        (*rv).location + 1,
                        Some("Check the name and the search_path, or apply the migration that creates it first.".into()),
                    )
                }
                f => f,
            }
        }
    }

    /// Raise PostgreSQL's error for an index statement that names
    /// something else.
    pub(super) unsafe fn not_an_index(&self, rv: *mut pg_sys::RangeVar) -> ! {
        unsafe {
            let name = cstr((*rv).relname).unwrap_or_default();
            sys::raise_at(
                &sys::Caught {
                    sqlstate: "42809".into(),
                    message: format!("\"{name}\" is not an index"),
                    detail: Some(format!(
                        "Statement {} of the script names it as an index.",
                        self.number
                    )),
                    hint: None,
                },
                self.sql,
                (*rv).location + 1,
                Some(
                    "REINDEX TABLE rebuilds every index of a table; REINDEX INDEX takes an index."
                        .into(),
                ),
            )
        }
    }

    /// Lock `rv` (and, unless ONLY, its inheritance children) in `mode`.
    pub(super) unsafe fn lock_rv(
        &self,
        a: &mut Analysis,
        rv: *mut pg_sys::RangeVar,
        mode: LockMode,
        recurse: bool,
        missing_ok: bool,
    ) -> Option<pg_sys::Oid> {
        unsafe {
            let found = if missing_ok {
                self.find(rv)
            } else {
                self.need(rv)
            };
            match found {
                Found::Oid(oid) => {
                    a.lock(oid, mode);
                    if recurse && (*rv).inh {
                        for c in children(oid) {
                            a.lock(c, mode);
                        }
                    }
                    Some(oid)
                }
                Found::New(name, n) => {
                    a.lock_new(name, mode, n);
                    None
                }
                Found::Missing => None,
            }
        }
    }
}
