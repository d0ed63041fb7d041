//! Reading a script and the rows of migrate_analyze: parsing, the size of
//! each relation, the estimate, risk and reason of each row.

use super::lookup::has_storage;
use super::model::Script;
use super::rules::statement;
use crate::engine::locks::{self, Effect, Rates, Risk};
use crate::error::MigrateError;
use crate::sys;
use pgrx::prelude::*;
use pgrx::PgList;
use std::collections::HashMap;
use std::ffi::CString;

/// Longest script accepted (bytes).
pub const MAX_SCRIPT: usize = 10 * 1024 * 1024;

/// One statement of a script: its number, its text, its raw parse tree.
pub struct Parsed {
    pub number: usize,
    /// Where the statement starts: characters before it in the script.
    pub location: i32,
    pub text: String,
    pub node: *mut pg_sys::Node,
}

/// Split and parse a script with PostgreSQL's parser; a syntax error is
/// raised with its position in the script.
pub fn parse_script(sql: &str, arg: &'static str) -> Vec<Parsed> {
    if sql.len() > MAX_SCRIPT {
        MigrateError::TooLong {
            arg,
            len: sql.len(),
            max: MAX_SCRIPT,
        }
        .report();
    }
    if sql.contains('\0') {
        MigrateError::ControlCharacter { arg }.report();
    }
    let c = CString::new(sql).unwrap_or_default();
    let parsed = sys::subtransaction(true, || {
        sys::capturing_position(|| unsafe {
            let list = pg_sys::raw_parser(c.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
            PgList::<pg_sys::RawStmt>::from_pg(list)
                .iter_ptr()
                .collect::<Vec<_>>()
        })
    });
    let raws = match parsed {
        Ok(r) => r,
        Err(e) => {
            let position = sys::last_position();
            sys::raise_at(
                &e,
                sql,
                position,
                Some(format!("The error is in argument \"{arg}\".")),
            )
        }
    };
    let bytes = sql.as_bytes();
    raws.into_iter()
        .enumerate()
        .map(|(i, raw)| unsafe {
            let from = (*raw).stmt_location.max(0) as usize;
            let to = if (*raw).stmt_len > 0 {
                from + (*raw).stmt_len as usize
            } else {
                bytes.len()
            };
            let text = String::from_utf8_lossy(&bytes[from.min(bytes.len())..to.min(bytes.len())])
                .trim()
                .trim_end_matches(';')
                .trim()
                .to_string();
            Parsed {
                number: i + 1,
                location: {
                    let before = String::from_utf8_lossy(&bytes[..from.min(bytes.len())]);
                    let rest = String::from_utf8_lossy(&bytes[from.min(bytes.len())..]);
                    let blank = rest.chars().take_while(|c| c.is_whitespace()).count();
                    (before.chars().count() + blank) as i32
                },
                text,
                node: (*raw).stmt,
            }
        })
        .collect()
}

/// Size facts of a relation: bytes of its main fork (exact when it can be
/// read without waiting, else from the statistics), bytes of its indexes,
/// estimated rows.
fn size_of(relid: pg_sys::Oid) -> (Option<i64>, i64, Option<i64>) {
    let stats = crate::sys::pinned(|| Spi::connect(|c| {
        let r = c.select(
            "SELECT c.relpages::bigint, c.reltuples::float8, c.relkind::text,
                    (SELECT coalesce(sum(i.relpages), 0)::bigint FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid)
               FROM pg_catalog.pg_class c WHERE c.oid = $1",
            None,
            &[relid.into()],
        )?;
        if r.is_empty() {
            return Ok::<_, pgrx::spi::Error>(None);
        }
        let row = r.first();
        Ok(Some((
            row.get::<i64>(1)?.unwrap_or(0),
            row.get::<f64>(2)?.unwrap_or(-1.0),
            row.get::<String>(3)?.unwrap_or_default(),
            row.get::<i64>(4)?.unwrap_or(0),
        )))
    }))
    .ok()
    .flatten();
    let Some((relpages, reltuples, kind, index_pages)) = stats else {
        return (None, 0, None);
    };
    let block = pg_sys::BLCKSZ as i64;
    if !has_storage(kind.bytes().next().unwrap_or(b'?')) {
        return (None, 0, None);
    }
    // The real size, if the table is not locked against us right now (a
    // lookup never waits: waiting would queue everyone behind us).
    let blocks = sys::subtransaction(false, || unsafe {
        if pg_sys::ConditionalLockRelationOid(relid, pg_sys::AccessShareLock as i32) {
            let rel = pg_sys::relation_open(relid, pg_sys::NoLock as i32);
            let n = pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM)
                as i64;
            pg_sys::relation_close(rel, pg_sys::NoLock as i32);
            Some(n)
        } else {
            None
        }
    })
    .ok()
    .flatten();
    let pages = blocks.unwrap_or(relpages);
    let rows = if reltuples >= 0.0 && relpages > 0 {
        Some((reltuples / relpages as f64 * pages as f64).round() as i64)
    } else if reltuples >= 0.0 {
        Some(reltuples as i64)
    } else {
        None
    };
    (Some(pages * block), index_pages * block, rows)
}

pub fn rates() -> Rates {
    Rates {
        rewrite_mb_per_second: crate::gucs::rewrite_rate() as f64,
        scan_mb_per_second: crate::gucs::scan_rate() as f64,
    }
}

type Row = (
    i32,
    String,
    String,
    Option<pg_sys::Oid>,
    Option<String>,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    bool,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    String,
    String,
    Option<String>,
);

/// Analyse a script: the rows of migrate_analyze.
pub fn analyze(sql: &str) -> Vec<Row> {
    let parsed = parse_script(sql, "sql");
    let mut script = Script {
        sql,
        created: HashMap::new(),
        number: 0,
    };
    let rates = rates();
    let mut rows = vec![];
    for p in parsed {
        script.number = p.number;
        let s = &mut script;
        let result = sys::subtransaction(false, || {
            sys::capturing_position(|| unsafe { statement(s, p.node, &p.text) })
        });
        let a = match result {
            Ok(a) => a,
            Err(mut e) => {
                let position = sys::last_position();
                let at = format!("In statement {} of the script.", p.number);
                e.detail = Some(match e.detail.take() {
                    Some(d) if d.starts_with("Statement ") => d,
                    Some(d) => format!("{at} {d}"),
                    None => at,
                });
                sys::raise_at(&e, sql, position, None)
            }
        };
        let recipe = (!a.recipe.is_empty()).then(|| a.recipe.join("\n"));
        if a.targets.is_empty() {
            let (risk, reason) = match &a.unknown {
                Some(u) => ("unknown", format!("{u}.")),
                None => (
                    Risk::None.name(),
                    if a.in_transaction {
                        "It locks no existing table.".to_string()
                    } else {
                        "It locks no existing table; it cannot run inside a transaction block."
                            .to_string()
                    },
                ),
            };
            rows.push((
                p.number as i32,
                p.text.clone(),
                a.command.clone(),
                None,
                None,
                None,
                None,
                None,
                None,
                a.in_transaction,
                None,
                None,
                None,
                risk.to_string(),
                join_notes(&reason, &a.notes),
                recipe.clone(),
            ));
            continue;
        }
        for (i, t) in a.targets.iter().enumerate() {
            let (bytes, index_bytes, est_rows) = match t.relid {
                Some(r) => size_of(r),
                None => (None, 0, None),
            };
            let seconds = locks::estimate_seconds(
                bytes.unwrap_or(0),
                index_bytes,
                t.rewrites,
                t.scans,
                rates,
            )
            .or_else(|| {
                t.locks_rows
                    .then(|| {
                        locks::estimate_seconds(bytes.unwrap_or(0), index_bytes, true, false, rates)
                    })
                    .flatten()
            });
            let effect = Effect {
                mode: t.mode,
                rewrites: t.rewrites,
                scans: t.scans,
                locks_rows: t.locks_rows,
                new_relation: t.new_in.is_some(),
                seconds,
            };
            let (risk, mut reason) = locks::assess(&effect);
            if let Some(n) = t.new_in {
                reason = format!(
                    "{} is created by statement {n} of this script: no other session uses it yet.",
                    t.name
                );
            }
            if let Some(w) = &t.why {
                reason = format!("{reason} ({w})");
            }
            if let Some(spread) = t.relid.and_then(super::lookup::citus_spread) {
                reason = format!("{reason} {spread}");
            }
            rows.push((
                p.number as i32,
                p.text.clone(),
                a.command.clone(),
                t.relid,
                Some(t.mode.name().to_string()),
                Some(t.mode.blocks_reads()),
                Some(t.mode.blocks_writes()),
                Some(t.rewrites),
                Some(t.scans),
                a.in_transaction,
                bytes,
                est_rows,
                seconds,
                risk.name().to_string(),
                if i == 0 {
                    join_notes(&reason, &a.notes)
                } else {
                    reason
                },
                if i == 0 && risk > Risk::None {
                    recipe.clone()
                } else {
                    None
                },
            ));
        }
    }
    rows
}

fn join_notes(reason: &str, notes: &[String]) -> String {
    let mut s = reason.to_string();
    for n in notes {
        s.push(' ');
        s.push_str(n);
    }
    s
}
