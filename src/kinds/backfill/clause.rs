//! A backfill's two clauses, each checked on its own before anything is
//! built from them.
//!
//! The batch statement places `set_clause` and `where_clause` inside text
//! the extension writes (key ranges, parentheses).  So that nothing in a
//! clause can reach that text, each clause is parsed alone, with
//! PostgreSQL's own grammar, as exactly one thing: the set clause as the
//! assignment list of `UPDATE t SET <set_clause>` and nothing more (no
//! WHERE, FROM, RETURNING), the where clause as one expression and nothing
//! more.  A clause that parses alone has every quote, dollar quote, comment
//! and parenthesis it opens closed again within itself, so put on lines of
//! its own inside parentheses it stays one assignment list or one
//! condition.  The same check runs at submit and again before a worker
//! builds a batch from a stored job.

use crate::error::MigrateError;
use crate::sys::{self, Caught};
use pgrx::pg_sys;
use pgrx::PgList;
use std::ffi::{CStr, CString};

/// What is wrong with a clause.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// `set_clause` or `where_clause`.
    pub arg: &'static str,
    pub error: Caught,
    /// 1-based character position in the clause's own text (0: none).
    pub position: i32,
}

/// The statement the set clause is parsed as: `SET_PREFIX` + clause.
const SET_PREFIX: &str = "UPDATE _pgm_clause SET\n";

/// Check both clauses; on success, the columns the set clause assigns.
pub fn check(set_clause: &str, where_clause: Option<&str>) -> Result<Vec<String>, Refusal> {
    let columns = check_set(set_clause)?;
    if let Some(w) = where_clause {
        check_where(w)?;
    }
    Ok(columns)
}

/// Check both clauses, or raise the refusal as an ERROR that points into
/// the clause it is about.
pub fn check_or_raise(set_clause: &str, where_clause: Option<&str>) -> Vec<String> {
    match check(set_clause, where_clause) {
        Ok(columns) => columns,
        Err(r) => {
            let text = if r.arg == "set_clause" {
                set_clause
            } else {
                where_clause.unwrap_or_default()
            };
            let hint = sys::hint_in(r.arg, r.error.hint.as_deref());
            sys::raise_at(&r.error, text, r.position, Some(hint))
        }
    }
}

/// Parse `sql` in `mode` and hand its raw statements to `inspect`; a
/// syntax error comes back with its position in `sql`.
fn parse<R>(
    sql: &str,
    mode: pg_sys::RawParseMode::Type,
    inspect: impl FnOnce(&PgList<pg_sys::RawStmt>) -> R,
) -> Result<R, (Caught, i32)> {
    let text = CString::new(sql).map_err(|_| {
        (
            Caught {
                sqlstate: "22021".into(),
                message: "a clause must not contain a NUL character".into(),
                detail: None,
                hint: None,
            },
            0,
        )
    })?;
    let parsed = sys::subtransaction(false, || {
        sys::capturing_position(|| {
            let list = unsafe { pg_sys::raw_parser(text.as_ptr(), mode) };
            let stmts = unsafe { PgList::<pg_sys::RawStmt>::from_pg(list) };
            inspect(&stmts)
        })
    });
    parsed.map_err(|e| (e, sys::last_position()))
}

fn check_set(set_clause: &str) -> Result<Vec<String>, Refusal> {
    let sql = format!("{SET_PREFIX}{set_clause}");
    let prefix = SET_PREFIX.chars().count() as i32;
    let shape = parse(
        &sql,
        pg_sys::RawParseMode::RAW_PARSE_DEFAULT,
        |stmts| unsafe {
            let update = match stmts.get_ptr(0).map(|r| (*r).stmt) {
            Some(s) if stmts.len() == 1 && (*s).type_ == pg_sys::NodeTag::T_UpdateStmt => {
                s as *mut pg_sys::UpdateStmt
            }
            _ => {
                return Err(MigrateError::BadClause {
                    arg: "set_clause",
                    expected: "list of assignments",
                    found: "It is not one list of assignments: it ends the UPDATE and adds another statement."
                        .into(),
                })
            }
        };
            let extra = [
                (!(*update).whereClause.is_null(), "WHERE"),
                (!(*update).fromClause.is_null(), "FROM"),
                (!(*update).returningList.is_null(), "RETURNING"),
            ];
            if let Some((_, what)) = extra.iter().find(|(present, _)| *present) {
                return Err(MigrateError::Smuggled { what });
            }
            let mut columns = Vec::new();
            for t in PgList::<pg_sys::ResTarget>::from_pg((*update).targetList).iter_ptr() {
                if !(*t).name.is_null() {
                    columns.push(CStr::from_ptr((*t).name).to_string_lossy().into_owned());
                }
            }
            Ok(columns)
        },
    );
    match shape {
        Ok(Ok(columns)) => Ok(columns),
        Ok(Err(e)) => Err(Refusal {
            arg: "set_clause",
            error: e.caught(),
            position: 0,
        }),
        Err((error, position)) => Err(Refusal {
            arg: "set_clause",
            error,
            position: if position > prefix {
                position - prefix
            } else {
                0
            },
        }),
    }
}

pub fn check_where(where_clause: &str) -> Result<(), Refusal> {
    // PL/pgSQL's expression mode parses the text as the target list (and
    // optional clauses) of a SELECT: one expression is a SELECT with one
    // unnamed target and nothing else.
    let shape = parse(
        where_clause,
        pg_sys::RawParseMode::RAW_PARSE_PLPGSQL_EXPR,
        |stmts| unsafe {
            let select = match stmts.get_ptr(0).map(|r| (*r).stmt) {
                Some(s) if stmts.len() == 1 && (*s).type_ == pg_sys::NodeTag::T_SelectStmt => {
                    s as *mut pg_sys::SelectStmt
                }
                _ => return Err("It is not one expression."),
            };
            let s = &*select;
            let targets = PgList::<pg_sys::ResTarget>::from_pg(s.targetList);
            if targets.is_empty() {
                return Err("It is empty.");
            }
            if targets.len() > 1 {
                return Err("It is a list of expressions, not one condition.");
            }
            let named = targets.get_ptr(0).is_some_and(|t| !(*t).name.is_null());
            let more = named
                || !s.distinctClause.is_null()
                || !s.intoClause.is_null()
                || !s.fromClause.is_null()
                || !s.whereClause.is_null()
                || !s.groupClause.is_null()
                || !s.havingClause.is_null()
                || !s.windowClause.is_null()
                || !s.valuesLists.is_null()
                || !s.sortClause.is_null()
                || !s.limitOffset.is_null()
                || !s.limitCount.is_null()
                || !s.lockingClause.is_null()
                || !s.withClause.is_null()
                || s.op != pg_sys::SetOperation::SETOP_NONE;
            if more {
                return Err("Something follows the condition: an alias, FROM, WHERE, GROUP BY, ORDER BY, LIMIT, UNION or the like.");
            }
            Ok(())
        },
    );
    match shape {
        Ok(Ok(())) => Ok(()),
        Ok(Err(found)) => Err(Refusal {
            arg: "where_clause",
            error: MigrateError::BadClause {
                arg: "where_clause",
                expected: "condition",
                found: found.into(),
            }
            .caught(),
            position: 0,
        }),
        Err((error, position)) => Err(Refusal {
            arg: "where_clause",
            error,
            position,
        }),
    }
}
