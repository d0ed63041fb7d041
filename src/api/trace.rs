//! migrate_trace: run a script's statements for real inside a
//! subtransaction that is always rolled back, and report the locks each
//! one took (from the lock table, as pg_locks shows it) and whether a
//! table got a new file (a rewrite).  Opt-in: it takes the locks for real,
//! for as long as each statement runs.

use crate::api::analyze::parse_script;
use crate::engine::locks::LockMode;
use crate::error::{MigrateError, OrReport};
use crate::sys;
use pgrx::datum::Interval;
use pgrx::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// Relation locks this backend holds now: (relation, mode).
fn my_locks() -> HashSet<(pg_sys::Oid, LockMode)> {
    crate::sys::pinned(|| Spi::connect(|c| {
        let mut out = HashSet::new();
        for row in c.select(
            "SELECT l.relation, l.mode FROM pg_catalog.pg_locks l
              WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation' AND l.granted
                AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
                AND l.relation >= 16384",
            None,
            &[],
        )? {
            let rel = row.get::<pg_sys::Oid>(1)?;
            let mode = row.get::<String>(2)?.and_then(|m| LockMode::from_name(&m));
            if let (Some(r), Some(m)) = (rel, mode) {
                out.insert((r, m));
            }
        }
        Ok::<_, pgrx::spi::Error>(out)
    }))
    .unwrap_or_default()
}

/// File numbers of every user relation now.  A sequence counts with
/// file number 0: it is one page, and one that gets a new file (ALTER
/// SEQUENCE ... RESTART) copies nothing whose size could grow.
fn filenodes() -> HashMap<pg_sys::Oid, pg_sys::Oid> {
    crate::sys::pinned(|| {
        Spi::connect(|c| {
            let mut out = HashMap::new();
            for row in c.select(
                "SELECT c.oid, CASE WHEN c.relkind OPERATOR(pg_catalog.=) 'S' THEN 0::pg_catalog.oid ELSE c.relfilenode END
                   FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.>=) 16384",
                None,
                &[],
            )? {
                if let (Some(o), Some(f)) = (row.get::<pg_sys::Oid>(1)?, row.get::<pg_sys::Oid>(2)?)
                {
                    out.insert(o, f);
                }
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
    })
    .unwrap_or_default()
}

type Row = (
    i32,
    String,
    Option<pg_sys::Oid>,
    Option<String>,
    Option<Vec<String>>,
    Option<bool>,
    bool,
    Option<String>,
    Option<String>,
    f64,
);

fn interval_text(i: Interval) -> String {
    let ms = i.as_micros() / 1000;
    format!("{ms}ms")
}

pub fn trace(sql: &str, lock_timeout: Interval, statement_timeout: Interval) -> Vec<Row> {
    let parsed = parse_script(sql, "sql");
    if parsed.is_empty() {
        return vec![];
    }
    for p in &parsed {
        if unsafe { (*p.node).type_ } == pg_sys::NodeTag::T_TransactionStmt {
            sys::raise_at(
                &sys::Caught {
                    sqlstate: "0A000".into(),
                    message: format!(
                        "statement {} of the script is transaction control, which a trace cannot run",
                        p.number
                    ),
                    detail: Some("A trace runs the script in a subtransaction that it always rolls back.".into()),
                    hint: Some("Leave BEGIN, COMMIT, ROLLBACK, SAVEPOINT and PREPARE TRANSACTION out of the traced script.".into()),
                },
                sql,
                p.location + 1,
                None,
            );
        }
    }
    let lt = lock_timeout.as_micros() / 1000;
    let st = statement_timeout.as_micros() / 1000;
    if lt < 1 || st < 1 {
        MigrateError::OutOfRange {
            arg: if lt < 1 {
                "lock_timeout"
            } else {
                "statement_timeout"
            },
            value: format!("{} ms", lt.min(st)),
            allowed: "a timeout of at least 1 ms; a trace never waits without one",
        }
        .report();
    }
    let mut rows: Vec<Row> = vec![];
    let outer = sys::subtransaction(false, || {
        sys::set_local("lock_timeout", &interval_text(lock_timeout));
        let mut before = filenodes();
        for p in &parsed {
            let held = my_locks();
            let truncate = unsafe { (*p.node).type_ } == pg_sys::NodeTag::T_TruncateStmt;
            let started = Instant::now();
            // statement_timeout applies to top-level statements only:
            // arm PostgreSQL's timer for this one.
            let ran = sys::subtransaction(true, || {
                let _timeout = sys::StatementTimeout::arm(st as i64);
                Spi::run(&p.text)
            });
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let (error_state, error) = match &ran {
                Ok(Ok(())) => (None, None),
                // SPI refuses a few statements outright (COPY to or from
                // the client, transaction control): not an internal error.
                Ok(Err(e)) => (
                    Some("0A000".to_string()),
                    Some(format!("this statement cannot be traced ({e}): a trace runs statements through SPI, which refuses it")),
                ),
                Err(c) => (Some(c.sqlstate.clone()), Some(c.message.clone())),
            };
            let in_transaction = error_state.as_deref() != Some("25001");
            let now = my_locks();
            let mut new: BTreeMap<u32, Vec<LockMode>> = BTreeMap::new();
            for (rel, mode) in now.difference(&held) {
                if before.contains_key(rel) {
                    new.entry(u32::from(*rel)).or_default().push(*mode);
                }
            }
            let after = filenodes();
            if new.is_empty() {
                rows.push((
                    p.number as i32,
                    p.text.clone(),
                    None,
                    None,
                    None,
                    None,
                    in_transaction,
                    error_state.clone(),
                    error.clone(),
                    ms,
                ));
            }
            for (rel, mut modes) in new {
                let rel = pg_sys::Oid::from(rel);
                modes.sort();
                let strongest = *modes.last().expect("at least one mode");
                let old = before.get(&rel).copied().unwrap_or(pg_sys::Oid::INVALID);
                let now_file = after.get(&rel).copied().unwrap_or(old);
                // TRUNCATE gives a table a new, empty file without copying
                // anything: not a rewrite.
                let rewrote = old != pg_sys::Oid::INVALID && now_file != old && !truncate;
                rows.push((
                    p.number as i32,
                    p.text.clone(),
                    Some(rel),
                    Some(strongest.name().to_string()),
                    Some(modes.iter().map(|m| m.name().to_string()).collect()),
                    Some(rewrote),
                    in_transaction,
                    error_state.clone(),
                    error.clone(),
                    ms,
                ));
            }
            // Later statements compare with the files as they are now,
            // but only relations that existed before the script count.
            for (rel, file) in after {
                if let Some(f) = before.get_mut(&rel) {
                    *f = file;
                }
            }
        }
    });
    if let Err(e) = outer {
        sys::raise_at(&e, sql, 0, None)
    }
    rows
}

/// Run `sql` in a subtransaction that is always rolled back and report
/// the locks each statement took.  Takes real locks, each for as long as
/// its statement runs (bounded by `lock_timeout` and `statement_timeout`).
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
pub fn migrate_trace(
    sql: Option<&str>,
    lock_timeout: default!(Option<Interval>, "'100ms'"),
    statement_timeout: default!(Option<Interval>, "'10s'"),
) -> TableIterator<
    'static,
    (
        name!(statement, i32),
        name!(statement_sql, String),
        name!(relation, Option<sys::RegClass>),
        name!(lock_mode, Option<String>),
        name!(modes, Option<Vec<String>>),
        name!(rewrites, Option<bool>),
        name!(in_transaction, bool),
        name!(error_sqlstate, Option<String>),
        name!(error, Option<String>),
        name!(duration, Interval),
    ),
> {
    let Some(sql) = sql else {
        return TableIterator::new(vec![]);
    };
    let need = |arg: &'static str, v: Option<Interval>| {
        v.ok_or(MigrateError::NullArgument { arg }).or_report()
    };
    let rows = trace(
        sql,
        need("lock_timeout", lock_timeout),
        need("statement_timeout", statement_timeout),
    );
    TableIterator::new(rows.into_iter().map(|r| {
        (
            r.0,
            r.1,
            r.2.map(sys::RegClass),
            r.3,
            r.4,
            r.5,
            r.6,
            r.7,
            r.8,
            Interval::from_micros((r.9 * 1000.0).round() as i64),
        )
    }))
}
