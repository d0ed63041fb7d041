//! migrate_alter_type: change a column's type on a big, live table by
//! expand and contract, with no help from the application.  Each step is
//! its own transaction, committed with the job's cursor:
//!
//! 1. expand: add the shadow column `<col>_pgm_new` of the new type, and a
//!    trigger that sets it from the old column on every insert and update
//!    (a moment of ACCESS EXCLUSIVE, no scan);
//! 2. backfill: a backfill job (the same engine, exact resume, throttles)
//!    fills the shadow column of the rows already there; this job waits
//!    behind it;
//! 3. and 4. when the old column is NOT NULL: a check `shadow IS NOT NULL`
//!    added NOT VALID, then validated (SHARE UPDATE EXCLUSIVE);
//! 5. indexes: an index job (CREATE INDEX CONCURRENTLY) for every index on
//!    the column, built on the shadow column; this job waits behind them;
//! 6. cut-over: one short transaction under the job's lock_timeout (retried
//!    when it cannot get its locks) that drops the foreign keys pointing at
//!    the column and its primary key or unique constraints, makes the
//!    shadow column NOT NULL (the valid check proves it: no scan), moves the
//!    default and the sequence, swaps the names of the columns and of the
//!    indexes, adds the keys again on the new indexes (USING INDEX), adds
//!    the foreign keys again NOT VALID, and puts a trigger the other way
//!    round, so that the old column stays in step with every write;
//! 7. the foreign keys are validated, one per step (SHARE UPDATE
//!    EXCLUSIVE on the referencing table);
//! 8. ANALYZE of the new column;
//! 9. contract: the old column and its trigger are dropped, at once
//!    (`complete => 'auto'`), when `migrate_complete(job)` says so
//!    (`'manual'`), or once a named migration is applied.
//!
//! What cannot be carried over (views, rules, generated columns, policies,
//! publication column lists, expression or partial indexes, CHECK
//! constraints, foreign keys from the column, triggers on it, statistics
//! objects, identity) is refused at submit, with the list.

use super::ddl::{
    caught, check_target, lock_policy, next_step, qualified, require_writable, run_step,
    LockPolicy, Ran,
};
use super::model::{Driver, Facts, JobKind, StepReport, Work};
use crate::api::args::{gate_options, interval_ms, migration_option, run_at_option};
use crate::catalog::jobs::{self, Job};
use crate::catalog::{as_owner, builds, SpiOrBug};
use crate::engine::history::Outcome;
use crate::engine::jobs::JobState;
use crate::engine::keyset::{display_ident, display_qualified, quote_ident};
use crate::engine::locks::LockMode;
use crate::error::{MigrateError, OrReport};
use crate::runner::outcome::{fail, finish_linked_run, succeed};
use crate::sys::{self, Caught, Identity};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::PgRelation;
use serde::{Deserialize, Serialize};

pub static FACTS: Facts = Facts {
    name: "alter_type",
    noun: "type change",
    table_lock: LockMode::AccessExclusive,
    locks_index: false,
    one_per_table: Some("definition change"),
    counts_rows: false,
    on_index: false,
    orphaned: "its worker stopped; it goes on at the step where it stopped",
};

/// When the old column goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Complete {
    /// Right after the cut-over.
    Auto,
    /// When migrate_complete(job) is called.
    Manual,
    /// Once this migration is applied.
    Migration { app: String, name: String },
}

/// What a job needs to know, stored in its spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlterTypeSpec {
    pub column: String,
    /// The column of the new type while the job runs.
    pub shadow: String,
    /// The old column's name after the cut-over, until it is dropped.
    pub retired: String,
    /// Both types as `format_type` prints them under a pinned search_path.
    pub new_type: String,
    pub old_type: String,
    /// The caller's expression, or None for a plain cast.
    pub using: Option<String>,
    /// The caller's search_path, under which `using` runs.
    pub search_path: String,
    /// The old column is NOT NULL: so is the new one.
    pub not_null: bool,
    /// The helper check that proves the shadow column has no NULL.
    pub check: String,
    /// The triggers (and their functions, in the table's schema).
    pub forward: String,
    pub backward: String,
    pub complete: Complete,
    /// The backfill's pacing, as migrate_backfill takes it.
    #[serde(default)]
    pub backfill: BackfillPace,
    /// migrate_rollback after the cut-over turned the job round: it now
    /// changes the column back, the same way.
    #[serde(default)]
    pub rolled_back: bool,
    /// The submitter's maintenance_work_mem and
    /// max_parallel_maintenance_workers, for the index builds it queues
    /// (a job queued before they were kept builds with the server's).
    #[serde(default)]
    pub build_settings: Vec<(String, String)>,
    #[serde(flatten)]
    pub policy: LockPolicy,
}

/// What the type change passes on to its backfill.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackfillPace {
    pub target_batch_ms: Option<i32>,
    pub max_rows_per_second: Option<i32>,
    pub max_replay_lag_ms: Option<i64>,
    /// As migrate_backfill's max_wal_per_second ('20MB').
    #[serde(default)]
    pub max_wal_per_second: Option<String>,
}

const EXPAND: usize = 0;
const BACKFILL: usize = 1;
const CHECK_ADD: usize = 2;
const CHECK_VALIDATE: usize = 3;
const INDEXES: usize = 4;
const CUT_OVER: usize = 5;
const VALIDATE_FKS: usize = 6;
const ANALYZE: usize = 7;
const CONTRACT: usize = 8;

const STEPS: [&str; 9] = [
    "adding the shadow column and its trigger (a moment of ACCESS EXCLUSIVE)",
    "filling the shadow column (a backfill job)",
    "adding the NOT NULL check on the shadow column NOT VALID (a moment of ACCESS EXCLUSIVE)",
    "validating the check (SHARE UPDATE EXCLUSIVE: reads and writes go on)",
    "building the indexes on the shadow column (index jobs, CONCURRENTLY)",
    "cut-over: swapping the columns (a moment of ACCESS EXCLUSIVE)",
    "validating the foreign keys that point at the column (SHARE UPDATE EXCLUSIVE)",
    "analyzing the new column",
    "contract: dropping the old column and its trigger (a moment of ACCESS EXCLUSIVE)",
];

pub struct AlterType;

impl JobKind for AlterType {
    fn facts(&self) -> &'static Facts {
        &FACTS
    }

    fn work(&self) -> Work {
        Work::Steps(step)
    }

    fn progress_line(&self, job: &Job) -> String {
        super::ddl::progress_line(job, &STEPS)
    }

    fn success_line(&self, job: &Job) -> String {
        let column = job.spec["column"].as_str().unwrap_or_default();
        let to = job.spec["new_type"].as_str().unwrap_or_default();
        let back = job.spec["rolled_back"].as_bool().unwrap_or(false);
        format!(
            "job {} {}: column {} of {} is of type {to}{}",
            job.id,
            if back { "rolled back" } else { "succeeded" },
            display_ident(column),
            job.relation,
            if back { " again" } else { "" }
        )
    }
}

/// `name` with `suffix`, cut to fit in 63 bytes.
fn suffixed(name: &str, suffix: &str) -> String {
    let mut base = name.to_string();
    while base.len() + suffix.len() > 63 {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// The name an index gets while it is built on the shadow column.
fn new_index_name(index: &str) -> String {
    suffixed(index, "_pgm_new")
}

/// The name an old index keeps after the cut-over, until it is dropped.
fn old_index_name(index: &str) -> String {
    suffixed(index, "_pgm_old")
}

/// A dollar-quote tag that does not occur in `body`.
fn dollar_tag(body: &str) -> String {
    let mut n = 0;
    loop {
        let tag = format!("$pgm{n}$");
        if !body.contains(&tag) {
            return tag;
        }
        n += 1;
    }
}

/// The trigger function that sets `to` from `from` on every write.
fn trigger_function(schema: &str, name: &str, to: &str, value: &str, search_path: &str) -> String {
    let body = format!(
        "BEGIN\n    NEW.{} := {value};\n    RETURN NEW;\nEND",
        quote_ident(to)
    );
    let tag = dollar_tag(&body);
    format!(
        "CREATE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql SET search_path = {} AS {tag}\n{body}\n{tag};
         REVOKE ALL ON FUNCTION {}.{}() FROM PUBLIC;
         COMMENT ON FUNCTION {}.{}() IS 'pg_migrate: keeps a column in step during a type change'",
        quote_ident(schema),
        quote_ident(name),
        crate::error::literal(search_path),
        quote_ident(schema),
        quote_ident(name),
        quote_ident(schema),
        quote_ident(name),
    )
}

/// The value the shadow column takes from a row (`NEW`).
fn forward_value(spec: &AlterTypeSpec) -> String {
    match &spec.using {
        None => format!("(NEW.{})::{}", quote_ident(&spec.column), spec.new_type),
        Some(e) => format!(
            "(SELECT (\n{e}\n)::{} FROM (SELECT NEW.*) AS pgm_row)",
            spec.new_type
        ),
    }
}

/// The backfill's set clause for the shadow column.
fn backfill_set(spec: &AlterTypeSpec) -> String {
    let expr = spec
        .using
        .clone()
        .unwrap_or_else(|| quote_ident(&spec.column));
    format!(
        "{} = (\n{expr}\n)::{}",
        quote_ident(&spec.shadow),
        spec.new_type
    )
}

fn step(job: &Job, driver: Driver) -> StepReport {
    let (spec, table) = match super::job::spec_and_table::<AlterTypeSpec>(job) {
        Ok(found) => found,
        Err(e) => return fail(job, &e),
    };
    let t = qualified(&table);
    let mut n = next_step(job);
    if !spec.not_null && (n == CHECK_ADD || n == CHECK_VALIDATE) {
        n = INDEXES;
    }
    if n >= STEPS.len() {
        return succeed(job);
    }
    as_owner(|| builds::set_phase(job.id, Some(STEPS[n])));
    let extra: Vec<String> = job
        .cursor
        .as_ref()
        .map(|c| c.iter().skip(1).cloned().collect())
        .unwrap_or_default();
    let schema = quote_ident(&table.schema);
    let sql = match n {
        EXPAND => format!(
            "ALTER TABLE {t} ADD COLUMN {} {};
             {};
             CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {schema}.{}()",
            quote_ident(&spec.shadow),
            spec.new_type,
            trigger_function(
                &table.schema,
                &spec.forward,
                &spec.shadow,
                &forward_value(&spec),
                if spec.using.is_some() { &spec.search_path } else { sys::PINNED_PATH },
            ),
            quote_ident(&spec.forward),
            quote_ident(&spec.forward),
        ),
        BACKFILL => return backfill_step(job, &spec, &extra, driver),
        CHECK_ADD => format!(
            "ALTER TABLE {t} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID",
            quote_ident(&spec.check),
            quote_ident(&spec.shadow)
        ),
        CHECK_VALIDATE => format!(
            "ALTER TABLE {t} VALIDATE CONSTRAINT {}",
            quote_ident(&spec.check)
        ),
        INDEXES => return indexes_step(job, &spec, &table, &extra, driver),
        CUT_OVER => return cut_over_step(job, &spec, &table),
        VALIDATE_FKS => {
            let Some(first) = extra.first() else {
                return next(job, ANALYZE, &[]);
            };
            let fk = as_owner(|| foreign_key(first.parse().unwrap_or(0)));
            let Some((child, name)) = fk else {
                // Dropped by someone since: nothing to validate.
                return next(job, VALIDATE_FKS, &extra[1..]);
            };
            let sql = format!(
                "ALTER TABLE {child} VALIDATE CONSTRAINT {}",
                quote_ident(&name)
            );
            return match run_step(job, spec.policy, &sql, n, STEPS.len(), STEPS[n]) {
                Ran::Done => next(job, VALIDATE_FKS, &extra[1..]),
                Ran::Later(report) => report,
                Ran::Failed { error, .. } => fail(job, &error),
            };
        }
        ANALYZE => format!("ANALYZE {t} ({})", quote_ident(&spec.column)),
        _ => {
            if let Some(report) = hold_before_contract(job, &spec, &extra) {
                return report;
            }
            format!(
                "DROP TRIGGER IF EXISTS {} ON {t};
                 DROP FUNCTION IF EXISTS {schema}.{}();
                 ALTER TABLE {t} DROP COLUMN IF EXISTS {}",
                quote_ident(&spec.backward),
                quote_ident(&spec.backward),
                quote_ident(&spec.retired)
            )
        }
    };
    match run_step(job, spec.policy, &sql, n, STEPS.len(), STEPS[n]) {
        Ran::Done => next(job, n + 1, &[]),
        Ran::Later(report) => report,
        Ran::Failed { error, .. } => {
            let mut error = error;
            if n == CHECK_VALIDATE && error.sqlstate == "23514" {
                error.message = format!(
                    "column {} of {} has rows whose new value is NULL",
                    display_ident(&spec.column),
                    job.relation
                );
                error.hint = Some(format!(
                    "Only the expression can make NULL of a value that is not NULL: check using_expr, then migrate_retry({}).",
                    job.id
                ));
            }
            fail(job, &error)
        }
    }
}

/// Go on at step `n` with `extra` after it in the cursor, or succeed.
fn next(job: &Job, n: usize, extra: &[String]) -> StepReport {
    if n >= STEPS.len() {
        return succeed(job);
    }
    let mut cursor = vec![n.to_string()];
    cursor.extend(extra.iter().cloned());
    as_owner(|| jobs::advance(job.id, &cursor, Some(STEPS[n])));
    StepReport::again(0, None)
}

/// Wait behind `children` (job ids): this step runs again once they have
/// all succeeded.
fn wait_behind(job: &Job, n: usize, children: &[i64], what: &str, driver: Driver) -> StepReport {
    let mut cursor = vec![n.to_string()];
    cursor.extend(children.iter().map(|c| c.to_string()));
    let list = children
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let reason = format!(
        "step {} of {}: waits for {what} (job {list})",
        n + 1,
        STEPS.len()
    );
    as_owner(|| {
        jobs::advance(job.id, &cursor, Some(STEPS[n]));
        jobs::wait_behind(job.id, children, None, &reason);
    });
    let notice = match driver {
        Driver::Session => Some(format!(
            "job {}: {reason}; the background workers go on with it (CALL migrate_wait({}) follows it)",
            job.id, job.id
        )),
        Driver::Worker => None,
    };
    StepReport {
        state: JobState::Waiting,
        done: true,
        sleep_ms: 0,
        notice,
    }
}

/// The state of each of `children` (None: gone).
fn child_states(children: &[i64]) -> Vec<(i64, Option<JobState>)> {
    as_owner(|| {
        children
            .iter()
            .map(|c| (*c, jobs::get(*c, false).map(|j| j.state)))
            .collect()
    })
}

/// Have the jobs this step waited for all succeeded?  Err: the job fails
/// with this error.
fn children_done(job: &Job, children: &[i64], what: &str) -> Result<bool, Caught> {
    for (id, state) in child_states(children) {
        match state {
            Some(JobState::Succeeded) => {}
            Some(JobState::Failed) | Some(JobState::Cancelled) | None => {
                return Err(caught(
                    "55000",
                    format!("{what} (job {id}) of job {} did not succeed", job.id),
                    None,
                    Some(format!(
                        "Find why in migrate_progress, then migrate_retry({id}) and migrate_retry({}); or migrate_rollback({}) undoes the change.",
                        job.id, job.id
                    )),
                ))
            }
            Some(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// Run `f` as the job's owner in a subtransaction that is kept; its error.
fn as_job_owner<R>(
    job: &Job,
    search_path: Option<&str>,
    f: impl FnOnce() -> R,
) -> Result<R, Caught> {
    sys::subtransaction(true, || {
        let _identity = Identity::become_role(job.owner, true);
        if let Some(path) = search_path {
            sys::set_local("search_path", path);
        }
        f()
    })
}

fn backfill_step(job: &Job, spec: &AlterTypeSpec, extra: &[String], driver: Driver) -> StepReport {
    let children: Vec<i64> = extra.iter().filter_map(|c| c.parse().ok()).collect();
    if !children.is_empty() {
        return match children_done(job, &children, "the backfill") {
            Ok(true) => next(job, CHECK_ADD, &[]),
            Ok(false) => wait_behind(job, BACKFILL, &children, "its backfill", driver),
            Err(e) => fail(job, &e),
        };
    }
    let set = backfill_set(spec);
    let filter = format!("{} IS NULL", quote_ident(&spec.shadow));
    let queued = as_job_owner(job, Some(&spec.search_path), || {
        // SAFETY: the job's table exists (spec_and_table found it), and the
        // lock is held to the end of the transaction.
        let rel = unsafe { PgRelation::with_lock(job.relid, pg_sys::AccessShareLock as _) };
        crate::kinds::backfill::submit::migrate_backfill(
            Some(rel),
            Some(&set),
            Some(&filter),
            None,
            Some(0),
            Some(Interval::from_micros(spec.policy.lock_timeout_ms * 1000)),
            Some(Interval::from_micros(60_000_000)),
            Some(5),
            None,
            None,
            spec.backfill.target_batch_ms,
            None,
            spec.backfill
                .max_replay_lag_ms
                .map(|ms| Interval::from_micros(ms * 1000)),
            None,
            spec.backfill.max_rows_per_second,
            spec.backfill.max_wal_per_second.as_deref(),
            None,
            None,
            None,
            Some("fail"),
            None,
            None,
            Some(1),
        )
    });
    match queued {
        Ok(child) => wait_behind(job, BACKFILL, &[child], "its backfill", driver),
        Err(e) => fail(job, &e),
    }
}

/// An index on the column, as the index step rebuilds it.
struct ColumnIndex {
    name: String,
    unique: bool,
    /// The primary key or unique constraint it backs.
    constraint: Option<(String, bool)>,
    /// CREATE INDEX for the shadow column.
    create: String,
}

/// The indexes of `relid` that use column `column` (plain column indexes
/// only; submit refused the others), each as it is built on `shadow`.
fn column_indexes(relid: pg_sys::Oid, table: &str, column: &str, shadow: &str) -> Vec<ColumnIndex> {
    sys::pinned(|| {
        Spi::connect(|c| {
            let rows = c.select(
                "SELECT i.relname::text, x.indisunique, con.conname::text, con.contype::text = 'p',
                        am.amname::text, x.indnkeyatts::int,
                        (SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.n)
                           FROM pg_catalog.unnest(x.indkey::pg_catalog.int2[]) WITH ORDINALITY k(attnum, n)
                           JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum),
                        (SELECT pg_catalog.array_agg(o.opt::int ORDER BY o.n)
                           FROM pg_catalog.unnest(x.indoption::pg_catalog.int2[]) WITH ORDINALITY o(opt, n))
                   FROM pg_catalog.pg_index x
                   JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
                   JOIN pg_catalog.pg_am am ON am.oid = i.relam
                   LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = x.indexrelid AND con.contype IN ('p', 'u')
                                                          AND con.conrelid = x.indrelid
                  WHERE x.indrelid = $1
                    AND (SELECT a.attnum FROM pg_catalog.pg_attribute a
                          WHERE a.attrelid = $1 AND a.attname = $2) = ANY (x.indkey::pg_catalog.int2[])
                  ORDER BY i.relname",
                None,
                &[relid.into(), column.into()],
            )?;
            let mut out = Vec::new();
            for r in rows {
                let name: String = r.get(1)?.unwrap_or_default();
                let unique: bool = r.get(2)?.unwrap_or(false);
                let con: Option<String> = r.get(3)?;
                let primary: bool = r.get(4)?.unwrap_or(false);
                let am: String = r.get(5)?.unwrap_or_default();
                let nkey: i32 = r.get(6)?.unwrap_or(0);
                let cols: Vec<String> = r.get(7)?.unwrap_or_default();
                let opts: Vec<i32> = r.get(8)?.unwrap_or_default();
                let col = |c: &String| {
                    if c == column {
                        quote_ident(shadow)
                    } else {
                        quote_ident(c)
                    }
                };
                let keys: Vec<String> = cols
                    .iter()
                    .take(nkey as usize)
                    .enumerate()
                    .map(|(i, c)| {
                        let o = opts.get(i).copied().unwrap_or(0);
                        let mut s = col(c);
                        if o & 1 != 0 {
                            s.push_str(" DESC");
                            if o & 2 == 0 {
                                s.push_str(" NULLS LAST");
                            }
                        } else if o & 2 != 0 {
                            s.push_str(" NULLS FIRST");
                        }
                        s
                    })
                    .collect();
                let include: Vec<String> = cols.iter().skip(nkey as usize).map(col).collect();
                let mut create = format!(
                    "CREATE {}INDEX {} ON {table} USING {} ({})",
                    if unique { "UNIQUE " } else { "" },
                    quote_ident(&new_index_name(&name)),
                    quote_ident(&am),
                    keys.join(", ")
                );
                if !include.is_empty() {
                    create.push_str(&format!(" INCLUDE ({})", include.join(", ")));
                }
                out.push(ColumnIndex {
                    name,
                    unique,
                    constraint: con.map(|c| (c, primary)),
                    create,
                });
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
        .or_bug("reading the catalog")
    })
}

fn indexes_step(
    job: &Job,
    spec: &AlterTypeSpec,
    table: &jobs::Table,
    extra: &[String],
    driver: Driver,
) -> StepReport {
    let children: Vec<i64> = extra.iter().filter_map(|c| c.parse().ok()).collect();
    if !children.is_empty() {
        return match children_done(job, &children, "an index build") {
            Ok(true) => next(job, CUT_OVER, &[]),
            Ok(false) => wait_behind(job, INDEXES, &children, "its index builds", driver),
            Err(e) => fail(job, &e),
        };
    }
    let t = qualified(table);
    let wanted = column_indexes(job.relid, &t, &spec.column, &spec.shadow);
    // An index already there (a step that ran before a crash, or one the
    // DBA built) is not built again.
    let existing: Vec<String> = sys::pinned(|| {
        Spi::connect(|c| {
            c.select(
                "SELECT i.relname::text FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
                  WHERE x.indrelid = $1 AND x.indisvalid",
                None,
                &[job.relid.into()],
            )
            .map(|rows| rows.filter_map(|r| r.get::<String>(1).ok().flatten()).collect())
        })
        .or_bug("reading the catalog")
    });
    let mut queued = Vec::new();
    for ix in wanted {
        if existing.contains(&new_index_name(&ix.name)) {
            continue;
        }
        let sql = ix.create.clone();
        let _ = ix.unique;
        match as_job_owner(job, None, || {
            crate::kinds::index::submit::queue_constraint_index(
                &sql,
                None,
                jobs::Gates::default(),
                &spec.build_settings,
            )
        }) {
            Ok(id) => queued.push(id),
            Err(e) => return fail(job, &e),
        }
    }
    if queued.is_empty() {
        return next(job, CUT_OVER, &[]);
    }
    wait_behind(job, INDEXES, &queued, "its index builds", driver)
}

/// A foreign key's table (qualified) and name, by the constraint's oid.
fn foreign_key(oid: u32) -> Option<(String, String)> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT n.nspname::text, r.relname::text, c.conname::text
               FROM pg_catalog.pg_constraint c
               JOIN pg_catalog.pg_class r ON r.oid = c.conrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
              WHERE c.oid = $1 AND c.contype = 'f'",
            None,
            &[pg_sys::Oid::from(oid).into()],
        )?;
        Ok::<_, pgrx::spi::Error>(rows.into_iter().next().map(|r| {
            let s: String = r.get(1).ok().flatten().unwrap_or_default();
            let t: String = r.get(2).ok().flatten().unwrap_or_default();
            let n: String = r.get(3).ok().flatten().unwrap_or_default();
            (format!("{}.{}", quote_ident(&s), quote_ident(&t)), n)
        }))
    })
    .ok()
    .flatten()
}

/// A foreign key that points at the column: where it is, and how to add it again.
struct IncomingKey {
    table: String,
    relid: pg_sys::Oid,
    name: String,
    definition: String,
}

fn incoming_keys(relid: pg_sys::Oid, column: &str) -> Vec<IncomingKey> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT n.nspname::text, r.relname::text, r.oid, c.conname::text, pg_catalog.pg_get_constraintdef(c.oid)
               FROM pg_catalog.pg_constraint c
               JOIN pg_catalog.pg_class r ON r.oid = c.conrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
              WHERE c.contype = 'f' AND c.confrelid = $1 AND c.conparentid = 0
                AND (SELECT a.attnum FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = $1 AND a.attname = $2) = ANY (c.confkey)
              ORDER BY r.relname, c.conname",
            None,
            &[relid.into(), column.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let s: String = r.get(1)?.unwrap_or_default();
            let t: String = r.get(2)?.unwrap_or_default();
            out.push(IncomingKey {
                table: format!("{}.{}", quote_ident(&s), quote_ident(&t)),
                relid: r.get(3)?.unwrap_or(pg_sys::Oid::INVALID),
                name: r.get(4)?.unwrap_or_default(),
                definition: r.get(5)?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .or_bug("reading the catalog")
}

/// The cut-over, in one subtransaction as the job's owner: Ok(oids of the
/// foreign keys added NOT VALID), or Err(None) when an index is missing
/// (the index step runs again), or Err(Some(error)).
fn cut_over(
    job: &Job,
    spec: &AlterTypeSpec,
    table: &jobs::Table,
) -> Result<Vec<String>, Option<Caught>> {
    let t = qualified(table);
    let schema = quote_ident(&table.schema);
    let ran = sys::subtransaction(true, || {
        let _identity = Identity::become_role(job.owner, true);
        sys::set_lock_timeout_local(spec.policy.lock_timeout_ms);
        sys::pinned(|| -> Result<Vec<String>, Option<String>> {
            let run = |sql: &str| Spi::run(sql).map_err(|e| Some(format!("{sql}: {e}")));
            run(&format!("LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"))?;
            let keys = incoming_keys(job.relid, &spec.column);
            for k in &keys {
                if k.relid != job.relid {
                    run(&format!(
                        "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                        k.table
                    ))?;
                }
            }
            // Every index on the old column has its twin on the shadow column.
            let old = column_indexes(job.relid, &t, &spec.column, &spec.shadow);
            let twins: Vec<String> = Spi::connect(|c| {
                c.select(
                    "SELECT i.relname::text FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
                      WHERE x.indrelid = $1 AND x.indisvalid",
                    None,
                    &[job.relid.into()],
                )
                .map(|rows| rows.filter_map(|r| r.get::<String>(1).ok().flatten()).collect())
            })
            .or_bug("reading the catalog");
            if old
                .iter()
                .any(|ix| !twins.contains(&new_index_name(&ix.name)))
            {
                return Err(None);
            }
            let default: Option<String> = Spi::get_one_with_args(
                "SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                  WHERE d.adrelid = $1 AND a.attname = $2",
                &[job.relid.into(), spec.column.as_str().into()],
            )
            .ok()
            .flatten();
            let sequences: Vec<(String, String)> = Spi::connect(|c| {
                c.select(
                    "SELECT pg_catalog.format('%I.%I', n.nspname, s.relname), q.seqtypid::pg_catalog.regtype::text
                       FROM pg_catalog.pg_depend d
                       JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                       JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
                       JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid
                       JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = $1
                        AND d.deptype = 'a' AND a.attname = $2",
                    None,
                    &[job.relid.into(), spec.column.as_str().into()],
                )
                .map(|rows| {
                    rows.filter_map(|r| Some((r.get::<String>(1).ok()??, r.get::<String>(2).ok()??)))
                        .collect()
                })
            })
            .or_bug("reading the catalog");
            let col = quote_ident(&spec.column);
            let shadow = quote_ident(&spec.shadow);
            for k in &keys {
                run(&format!(
                    "ALTER TABLE {} DROP CONSTRAINT {}",
                    k.table,
                    quote_ident(&k.name)
                ))?;
            }
            for ix in old.iter().filter(|ix| ix.constraint.is_some()) {
                let (con, _) = ix.constraint.as_ref().expect("filtered");
                run(&format!(
                    "ALTER TABLE {t} DROP CONSTRAINT {}",
                    quote_ident(con)
                ))?;
            }
            run(&format!(
                "DROP TRIGGER {} ON {t}; DROP FUNCTION {schema}.{}()",
                quote_ident(&spec.forward),
                quote_ident(&spec.forward)
            ))?;
            if spec.not_null {
                run(&format!(
                    "ALTER TABLE {t} ALTER COLUMN {shadow} SET NOT NULL; ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
                    quote_ident(&spec.check)
                ))?;
            }
            if let Some(d) = &default {
                run(&format!(
                    "ALTER TABLE {t} ALTER COLUMN {col} DROP DEFAULT; ALTER TABLE {t} ALTER COLUMN {shadow} SET DEFAULT ({d})::{}",
                    spec.new_type
                ))?;
            }
            // An identity moves with its sequence's name and options, going
            // on from the next value the old one would have given (no one
            // can take a value meanwhile: the table is locked).
            let identity: Option<String> = Spi::get_one_with_args::<String>(
                // One row, NULL without an identity (no row would be an
                // SPI error, not "none").
                "SELECT (SELECT pg_catalog.format(
                          'ADD GENERATED %s AS IDENTITY (SEQUENCE NAME %I.%I START WITH %s INCREMENT BY %s CACHE %s %s)',
                          CASE a.attidentity WHEN 'a' THEN 'ALWAYS' ELSE 'BY DEFAULT' END, n.nspname, s.relname,
                          coalesce(pg_catalog.pg_sequence_last_value(s.oid) OPERATOR(pg_catalog.+) q.seqincrement, q.seqstart),
                          q.seqincrement, q.seqcache, CASE WHEN q.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END)
                   FROM pg_catalog.pg_attribute a
                   JOIN pg_catalog.pg_depend d ON d.refobjid = a.attrelid AND d.refobjsubid = a.attnum
                                              AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype = 'i'
                   JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                   JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
                   JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid
                  WHERE a.attrelid = $1 AND a.attname = $2 AND a.attidentity <> '')",
                &[job.relid.into(), spec.column.as_str().into()],
            )
            .or_bug("reading the column's identity");
            if let Some(add) = &identity {
                run(&format!(
                    "ALTER TABLE {t} ALTER COLUMN {col} DROP IDENTITY; ALTER TABLE {t} ALTER COLUMN {shadow} {add}"
                ))?;
            }
            for (seq, seqtype) in &sequences {
                run(&format!("ALTER SEQUENCE {seq} OWNED BY {t}.{shadow}"))?;
                if spec.new_type == "bigint" && (seqtype == "integer" || seqtype == "smallint") {
                    run(&format!("ALTER SEQUENCE {seq} AS bigint"))?;
                }
            }
            run(&format!(
                "ALTER TABLE {t} RENAME COLUMN {col} TO {}; ALTER TABLE {t} RENAME COLUMN {shadow} TO {col}",
                quote_ident(&spec.retired)
            ))?;
            for ix in &old {
                let twin = quote_ident(&new_index_name(&ix.name));
                match &ix.constraint {
                    Some((con, primary)) => run(&format!(
                        "ALTER TABLE {t} ADD CONSTRAINT {} {} USING INDEX {twin}",
                        quote_ident(con),
                        if *primary { "PRIMARY KEY" } else { "UNIQUE" }
                    ))?,
                    None => run(&format!(
                        "ALTER INDEX {schema}.{} RENAME TO {}; ALTER INDEX {schema}.{twin} RENAME TO {}",
                        quote_ident(&ix.name),
                        quote_ident(&old_index_name(&ix.name)),
                        quote_ident(&ix.name)
                    ))?,
                }
            }
            run(&format!(
                "{};
                 CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {schema}.{}()",
                trigger_function(
                    &table.schema,
                    &spec.backward,
                    &spec.retired,
                    &format!("(NEW.{col})::{}", spec.old_type),
                    sys::PINNED_PATH
                ),
                quote_ident(&spec.backward),
                quote_ident(&spec.backward),
            ))?;
            let mut added = Vec::new();
            for k in &keys {
                let def = k.definition.trim_end_matches(" NOT VALID");
                run(&format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} {def} NOT VALID",
                    k.table,
                    quote_ident(&k.name)
                ))?;
                let oid = Spi::get_one_with_args::<pg_sys::Oid>(
                    "SELECT c.oid FROM pg_catalog.pg_constraint c WHERE c.conrelid = $1 AND c.conname = $2",
                    &[k.relid.into(), k.name.as_str().into()],
                )
                .ok()
                .flatten();
                if let Some(oid) = oid {
                    added.push(oid.to_u32().to_string());
                }
            }
            Ok(added)
        })
    });
    match ran {
        Ok(Ok(added)) => Ok(added),
        Ok(Err(None)) => Err(None),
        Ok(Err(Some(message))) => Err(Some(caught("XX000", message, None, None))),
        Err(e) => Err(Some(e)),
    }
}

fn cut_over_step(job: &Job, spec: &AlterTypeSpec, table: &jobs::Table) -> StepReport {
    let started = std::time::Instant::now();
    match cut_over(job, spec, table) {
        Ok(added) => next(job, VALIDATE_FKS, &added),
        Err(None) => {
            // An index on the column appeared since the index step: build
            // its twin first.
            next(job, INDEXES, &[])
        }
        Err(Some(e)) => {
            // Lock timeouts are retried like every step's: run_step's rules
            // on a statement that fails the same way.
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match super::ddl::retry_or_fail(
                job,
                spec.policy,
                e,
                ms,
                CUT_OVER,
                STEPS.len(),
                STEPS[CUT_OVER],
            ) {
                Ran::Later(report) => report,
                Ran::Failed { error, .. } => fail(job, &error),
                Ran::Done => next(job, VALIDATE_FKS, &[]),
            }
        }
    }
}

/// Before the contract step: hold the job until it is told to go on.
fn hold_before_contract(job: &Job, spec: &AlterTypeSpec, extra: &[String]) -> Option<StepReport> {
    if extra.first().map(String::as_str) == Some("complete") {
        return None;
    }
    match &spec.complete {
        Complete::Auto => None,
        Complete::Manual => {
            let reason = format!(
                "cut over: {} is of the new type; the old column stays, kept in step, until migrate_complete({}) drops it, or migrate_rollback({}) swaps it back",
                display_ident(&spec.column),
                job.id,
                job.id
            );
            as_owner(|| {
                jobs::advance(job.id, &[CONTRACT.to_string()], Some(STEPS[CONTRACT]));
                jobs::set_state(job.id, JobState::Paused, Some(&reason), false);
            });
            Some(StepReport {
                state: JobState::Paused,
                done: true,
                sleep_ms: 0,
                notice: Some(format!("job {}: {reason}", job.id)),
            })
        }
        Complete::Migration { app, name } => {
            let reason = format!(
                "cut over; the old column is dropped once migration {app}.{name} is applied"
            );
            as_owner(|| {
                jobs::advance(
                    job.id,
                    &[CONTRACT.to_string(), "complete".to_string()],
                    Some(STEPS[CONTRACT]),
                );
                jobs::wait_behind(job.id, &[], Some((app, name)), &reason);
            });
            Some(StepReport::done(JobState::Waiting))
        }
    }
}

/// migrate_complete(job): a type change held after its cut-over goes on
/// and drops the old column.
pub fn complete(job: &Job) {
    let at_contract = next_step(job) == CONTRACT;
    if job.kind != FACTS.name || !at_contract || job.state != JobState::Paused {
        MigrateError::JobState {
            job_id: job.id,
            action: "completed",
            state: job.state.as_str(),
            hint: "migrate_complete() ends a type change (migrate_alter_type with complete => 'manual') that is paused after its cut-over; migrate_progress shows where the job is.",
        }
        .report();
    }
    as_owner(|| {
        jobs::set_cursor(job.id, &[CONTRACT.to_string(), "complete".to_string()]);
        jobs::set_state(job.id, JobState::Queued, None, false);
    });
    crate::kinds::queue::announce(job.id, false);
}

/// The unfinished jobs (backfill, index builds) a type change waits for,
/// each with whether a worker or session drives it now: migrate_rollback
/// cancels them first.
pub fn unfinished_children(job: &Job) -> Vec<(i64, bool)> {
    if job.kind != FACTS.name {
        return vec![];
    }
    let children: Vec<i64> = job
        .cursor
        .as_ref()
        .map(|c| c.iter().skip(1).filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    as_owner(|| {
        children
            .iter()
            .filter_map(|c| jobs::get(*c, false))
            .filter(|j| !j.state.is_terminal())
            .map(|j| (j.id, j.driven_elsewhere))
            .collect()
    })
}

/// migrate_rollback(job): before the cut-over, drop what the job added
/// (shadow column, its indexes and check, the trigger) in the caller's
/// transaction, and end the job (its backfill and index jobs are cancelled
/// first, `unfinished_children`).
pub fn rollback(job: &Job) {
    let n = next_step(job);
    if job.kind != FACTS.name {
        MigrateError::JobState {
            job_id: job.id,
            action: "rolled back",
            state: job.state.as_str(),
            hint: "migrate_rollback() undoes a type change (migrate_alter_type); cancel other jobs with migrate_cancel().",
        }
        .report();
    }
    if job.state == JobState::Succeeded {
        MigrateError::JobState {
            job_id: job.id,
            action: "rolled back",
            state: "succeeded (its old column is dropped)",
            hint: "Change the type back with another migrate_alter_type.",
        }
        .report();
    }
    if job.driven_elsewhere {
        MigrateError::JobDriven {
            job_id: job.id,
            pid: job.driver_pid.unwrap_or(0),
            by: "a pg_migrate background worker or a session (migrate_pause it first)".into(),
        }
        .report();
    }
    let (spec, table) = match super::job::spec_and_table::<AlterTypeSpec>(job) {
        Ok(found) => found,
        Err(e) => sys::raise_at(&e, "", 0, None),
    };
    if spec.rolled_back {
        MigrateError::JobState {
            job_id: job.id,
            action: "rolled back",
            state: "rolling back already",
            hint: "migrate_progress shows where the rollback is; once it has succeeded, migrate_alter_type changes the type again.",
        }
        .report();
    }
    sys::set_lock_timeout_local(spec.policy.lock_timeout_ms);
    if n > CUT_OVER {
        roll_back_after_cut_over(job, spec, &table);
        return;
    }
    let t = qualified(&table);
    let schema = quote_ident(&table.schema);
    let sql = format!(
        "DROP TRIGGER IF EXISTS {} ON {t};
         DROP FUNCTION IF EXISTS {schema}.{}();
         ALTER TABLE {t} DROP COLUMN IF EXISTS {}",
        quote_ident(&spec.forward),
        quote_ident(&spec.forward),
        quote_ident(&spec.shadow)
    );
    // Before its first step the job added nothing.
    if n > EXPAND {
        owner_runs(job, &sql);
    }
    let message = format!("rolled back by {}", crate::catalog::current_role_name());
    as_owner(|| {
        jobs::finish(job.id, JobState::Cancelled, Some((&message, "57014", None)));
        // Its history entry closes too, as for a cancelled job.
        finish_linked_run(
            job,
            Outcome::Failed,
            Some(&format!("job {} was {message}", job.id)),
        );
    });
}

/// After the cut-over the old column is still there, kept in step by the
/// backward trigger: the job turns round and changes the column back the
/// same way (indexes, cut-over, foreign keys, contract), with the roles of
/// the two columns swapped.  The old column's plain indexes are still
/// there and serve again; its primary key and unique indexes are built
/// again, concurrently.
fn roll_back_after_cut_over(job: &Job, spec: AlterTypeSpec, table: &jobs::Table) {
    let t = qualified(table);
    let schema = quote_ident(&table.schema);
    let back = AlterTypeSpec {
        shadow: spec.retired.clone(),
        retired: spec.shadow.clone(),
        new_type: spec.old_type.clone(),
        old_type: spec.new_type.clone(),
        using: None,
        forward: spec.backward.clone(),
        backward: spec.forward.clone(),
        complete: Complete::Auto,
        rolled_back: true,
        ..spec.clone()
    };
    let renames: Vec<String> = sys::pinned(|| {
        column_indexes(job.relid, &t, &spec.retired, &spec.column)
            .into_iter()
            .filter(|ix| ix.constraint.is_none() && ix.name == old_index_name(&original(&ix.name)))
            .map(|ix| {
                format!(
                    "ALTER INDEX {schema}.{} RENAME TO {}",
                    quote_ident(&ix.name),
                    quote_ident(&new_index_name(&original(&ix.name)))
                )
            })
            .collect()
    });
    for sql in renames {
        owner_runs(job, &sql);
    }
    as_owner(|| {
        jobs::set_spec(
            job.id,
            serde_json::to_value(&back).expect("spec serialises"),
        );
        jobs::set_cursor(job.id, &[INDEXES.to_string()]);
        jobs::set_state(job.id, JobState::Queued, None, false);
    });
    crate::kinds::queue::announce(job.id, false);
    pgrx::notice!(
        "job {}: rolling back: column {} of {} goes back to {} the same way (indexes, cut-over, contract); writes go on",
        job.id,
        display_ident(&spec.column),
        job.relation,
        spec.old_type
    );
}

/// Run `sql` as the job's owner, under a pinned search_path, in the
/// caller's transaction (migrate_rollback); its error is the caller's.
fn owner_runs(job: &Job, sql: &str) {
    let _identity = Identity::become_role(job.owner, true);
    sys::pinned(|| Spi::run(sql)).unwrap_or_else(|e| pgrx::error!("{e}"));
}

/// An index's name before `_pgm_old` was put on it.
fn original(name: &str) -> String {
    name.strip_suffix("_pgm_old").unwrap_or(name).to_string()
}

/// What is in the way of changing the column's type, as a list.
fn in_the_way(relid: pg_sys::Oid, attnum: i16) -> Vec<String> {
    sys::pinned(|| {
        Spi::connect(|c| {
            let rows = c.select(
                "SELECT what FROM (
                   SELECT 2 AS o, 'generated column' AS what FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = $1 AND a.attnum = $2 AND a.attgenerated <> ''
                   UNION ALL
                   SELECT 3, pg_catalog.format('generated column %I', a.attname)
                     FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attrdef ad ON ad.oid = d.objid
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
                    WHERE d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.refobjid = $1
                      AND d.refobjsubid = $2 AND a.attgenerated <> '' AND a.attnum <> $2
                   UNION ALL
                   SELECT 4, pg_catalog.format('view or rule %s', r.ev_class::pg_catalog.regclass)
                     FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
                    WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.refobjid = $1
                      AND d.refobjsubid = $2
                   UNION ALL
                   SELECT 5, pg_catalog.format('policy %I', p.polname)
                     FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_policy p ON p.oid = d.objid
                    WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.refobjid = $1
                      AND d.refobjsubid = $2
                   UNION ALL
                   SELECT 6, pg_catalog.format('%s constraint %I',
                                 CASE c.contype WHEN 'c' THEN 'CHECK' WHEN 'f' THEN 'FOREIGN KEY'
                                                WHEN 'x' THEN 'EXCLUDE' ELSE 'trigger' END, c.conname)
                     FROM pg_catalog.pg_constraint c
                    WHERE c.conrelid = $1 AND c.contype IN ('c', 'f', 'x', 't') AND $2 = ANY (c.conkey)
                   UNION ALL
                   SELECT 7, pg_catalog.format('foreign key %I of %s from a partitioned table',
                                 c.conname, c.conrelid::pg_catalog.regclass)
                     FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_class r ON r.oid = c.conrelid
                    WHERE c.confrelid = $1 AND c.contype = 'f' AND $2 = ANY (c.confkey)
                      AND (r.relkind = 'p' OR r.relispartition)
                   UNION ALL
                   SELECT 8, pg_catalog.format('foreign key %I of %s, which the caller does not own',
                                 c.conname, c.conrelid::pg_catalog.regclass)
                     FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_class r ON r.oid = c.conrelid
                    WHERE c.confrelid = $1 AND c.contype = 'f' AND $2 = ANY (c.confkey)
                      AND NOT pg_catalog.pg_has_role(r.relowner, 'USAGE')
                   UNION ALL
                   SELECT 9, pg_catalog.format('index %I (%s)', i.relname,
                                 CASE WHEN x.indexprs IS NOT NULL THEN 'an expression index'
                                      WHEN x.indpred IS NOT NULL THEN 'a partial index'
                                      WHEN x.indnullsnotdistinct THEN 'NULLS NOT DISTINCT'
                                      WHEN x.indisexclusion THEN 'an exclusion constraint'
                                      WHEN c.condeferrable THEN 'a deferrable constraint'
                                      WHEN x.indisreplident THEN 'the replica identity'
                                      ELSE 'a non-default operator class or collation' END)
                     FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
                     LEFT JOIN pg_catalog.pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid
                    WHERE x.indrelid = $1
                      AND ($2 = ANY (x.indkey::pg_catalog.int2[])
                           OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                         AND d.objid = x.indexrelid AND d.refobjid = $1 AND d.refobjsubid = $2))
                      AND (x.indexprs IS NOT NULL OR x.indpred IS NOT NULL OR x.indnullsnotdistinct
                           OR x.indisexclusion OR coalesce(c.condeferrable, false) OR x.indisreplident
                           OR EXISTS (SELECT 1 FROM pg_catalog.unnest(x.indclass::pg_catalog.oid[]) oc(opc)
                                       JOIN pg_catalog.pg_opclass o ON o.oid = oc.opc WHERE NOT o.opcdefault)
                           OR EXISTS (SELECT 1 FROM pg_catalog.unnest(x.indcollation::pg_catalog.oid[]) WITH ORDINALITY ic(coll, n)
                                       JOIN pg_catalog.pg_attribute a ON a.attrelid = $1
                                        AND a.attnum = (x.indkey::pg_catalog.int2[])[ic.n - 1]
                                       WHERE ic.coll <> 0 AND ic.coll <> a.attcollation))
                   UNION ALL
                   SELECT 10, pg_catalog.format('trigger %I (fires on updates of the column)', g.tgname)
                     FROM pg_catalog.pg_trigger g
                    WHERE g.tgrelid = $1 AND NOT g.tgisinternal AND $2 = ANY (g.tgattr::pg_catalog.int2[])
                   UNION ALL
                   SELECT 11, pg_catalog.format('statistics object %I', s.stxname)
                     FROM pg_catalog.pg_statistic_ext s
                    WHERE s.stxrelid = $1 AND ($2 = ANY (s.stxkeys::pg_catalog.int2[]) OR s.stxexprs IS NOT NULL)
                   UNION ALL
                   SELECT 12, pg_catalog.format('publication %I (a column list)', p.pubname)
                     FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
                    WHERE pr.prrelid = $1 AND $2 = ANY (pr.prattrs::pg_catalog.int2[])
                   UNION ALL
                   SELECT 13, 'inheritance (the table has a parent or children)'
                    WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = $1 OR h.inhparent = $1)
                   UNION ALL
                   SELECT 14, 'a typed table (OF type)'
                     FROM pg_catalog.pg_class r WHERE r.oid = $1 AND r.reloftype <> 0
                 ) w ORDER BY o, what",
                None,
                &[relid.into(), attnum.into()],
            )?;
            Ok::<_, pgrx::spi::Error>(
                rows.filter_map(|r| r.get::<String>(1).ok().flatten())
                    .collect(),
            )
        })
        .or_bug("reading the catalog")
    })
}

/// The type `text` names, resolved under the caller's search_path: its oid,
/// typmod, and its name as format_type prints it under a pinned path.
fn resolve_type(text: &str) -> (pg_sys::Oid, i32, String) {
    let c = std::ffi::CString::new(text).unwrap_or_else(|_| {
        MigrateError::InvalidValue {
            arg: "new_type",
            value: text.replace('\0', " "),
            allowed: "a type name without NUL characters",
        }
        .report()
    });
    let (mut oid, mut typmod) = (pg_sys::Oid::INVALID, -1i32);
    unsafe { pg_sys::parseTypeString(c.as_ptr(), &mut oid, &mut typmod, false) };
    let name = sys::pinned(|| {
        Spi::get_one_with_args::<String>(
            "SELECT pg_catalog.format_type($1, $2)",
            &[oid.into(), typmod.into()],
        )
    })
    .ok()
    .flatten()
    .unwrap_or_default();
    (oid, typmod, name)
}

/// Queue a job that changes the type of `column_name` of `relation` to
/// `new_type` by expand and contract (see the module's doc).  Checked now,
/// as the caller, who must own the table and the tables whose foreign
/// keys point at the column; background workers run it.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn migrate_alter_type(
    relation: Option<PgRelation>,
    column_name: Option<&str>,
    new_type: Option<&str>,
    using_expr: default!(Option<&str>, NULL),
    complete: default!(Option<&str>, "'auto'"),
    target_batch_ms: default!(Option<i32>, NULL),
    max_rows_per_second: default!(Option<i32>, NULL),
    max_replay_lag: default!(Option<Interval>, NULL),
    max_wal_per_second: default!(Option<&str>, NULL),
    lock_timeout: default!(Option<Interval>, "'2s'"),
    max_retries: default!(Option<i32>, 10),
    run_at: default!(Option<TimestampWithTimeZone>, NULL),
    migration: default!(Option<Vec<Option<String>>>, NULL),
    after_jobs: default!(Option<Vec<Option<i64>>>, NULL),
    after_migration: default!(Option<Vec<Option<String>>>, NULL),
) -> i64 {
    let relid = relation
        .ok_or(MigrateError::NullArgument { arg: "relation" })
        .or_report()
        .oid();
    let column = column_name
        .ok_or(MigrateError::NullArgument { arg: "column_name" })
        .or_report();
    let new_type_text = new_type
        .ok_or(MigrateError::NullArgument { arg: "new_type" })
        .or_report();
    let using = using_expr.filter(|u| !u.trim().is_empty());
    let complete = match complete {
        Some("auto") | None => Complete::Auto,
        Some("manual") => Complete::Manual,
        Some(other) => match other.strip_prefix("migration:") {
            Some(m) => {
                let Some((app, name)) = m.split_once('.').or_else(|| m.split_once(':')) else {
                    MigrateError::InvalidValue {
                        arg: "complete",
                        value: other.to_string(),
                        allowed: "'auto', 'manual' or 'migration:<app>.<name>'",
                    }
                    .report()
                };
                Complete::Migration {
                    app: app.to_string(),
                    name: name.to_string(),
                }
            }
            None => MigrateError::InvalidValue {
                arg: "complete",
                value: other.to_string(),
                allowed: "'auto', 'manual' or 'migration:<app>.<name>'",
            }
            .report(),
        },
    };
    let policy = lock_policy(lock_timeout, max_retries);
    // The backfill's options, checked as migrate_backfill checks them.
    crate::kinds::backfill::submit::pace_options(
        target_batch_ms,
        None,
        max_replay_lag,
        None,
        max_rows_per_second,
        max_wal_per_second,
        None,
        None,
        None,
    );
    let backfill = BackfillPace {
        target_batch_ms,
        max_rows_per_second,
        max_replay_lag_ms: max_replay_lag.map(|i| interval_ms("max_replay_lag", Some(i))),
        max_wal_per_second: max_wal_per_second.map(str::to_string),
    };
    let migration = migration_option(migration);
    let gates = gate_options(after_jobs, after_migration);
    require_writable(c"migrate_alter_type()");
    let target = check_target(
        relid,
        "migrate_alter_type()",
        "change its columns",
        (
            "A partitioned table's column changes type on the parent and every partition at once; the job does not run partition by partition yet.",
            "Run ALTER TABLE ... ALTER COLUMN ... TYPE in a maintenance window.",
        ),
    );
    if let Some(kind) = crate::kinds::backfill::citus::citus_table(relid) {
        MigrateError::CannotChange {
            what: format!("Citus {kind} {}", target.display),
            why: "pg_migrate does not change a column's type on a table Citus spreads over nodes: the trigger that keeps the shadow column in step, and the cut-over, would have to be made on every shard. Change the type with ALTER TABLE ... ALTER COLUMN ... TYPE (Citus runs it on every shard) in a maintenance window.",
        }
        .report();
    }
    let found = sys::pinned(|| {
        Spi::connect(|c| {
            let rows = c.select(
                "SELECT a.attnum, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atttypid, a.atttypmod
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
                None,
                &[relid.into(), column.into()],
            )?;
            Ok::<_, pgrx::spi::Error>(rows.into_iter().next().map(|r| {
                (
                    r.get::<i16>(1).ok().flatten().unwrap_or(0),
                    r.get::<String>(2).ok().flatten().unwrap_or_default(),
                    r.get::<bool>(3).ok().flatten().unwrap_or(false),
                    r.get::<pg_sys::Oid>(4).ok().flatten().unwrap_or(pg_sys::Oid::INVALID),
                    r.get::<i32>(5).ok().flatten().unwrap_or(-1),
                )
            }))
        })
        .ok()
        .flatten()
    });
    let Some((attnum, old_type, not_null, old_oid, old_mod)) = found else {
        MigrateError::NoSuchColumn {
            relation: target.display.clone(),
            column: column.to_string(),
        }
        .report()
    };
    let (new_oid, new_mod, new_type) = resolve_type(new_type_text);
    if new_oid == old_oid && new_mod == old_mod && using.is_none() {
        MigrateError::AlreadyOfType {
            relation: target.display.clone(),
            column: display_ident(column),
            type_name: old_type,
        }
        .report();
    }
    let blockers = in_the_way(relid, attnum);
    if !blockers.is_empty() {
        MigrateError::InTheWay {
            relation: target.display.clone(),
            column: display_ident(column),
            list: blockers.join(", "),
        }
        .report();
    }
    let shadow = suffixed(column, "_pgm_new");
    let retired = suffixed(column, "_pgm_old");
    let taken = sys::pinned(|| {
        Spi::get_one_with_args::<String>(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = $1 AND a.attname = ANY ($2) AND NOT a.attisdropped LIMIT 1",
            &[relid.into(), vec![shadow.clone(), retired.clone()].into()],
        )
    })
    .ok()
    .flatten();
    if let Some(name) = taken {
        MigrateError::InTheWay {
            relation: target.display.clone(),
            column: display_ident(column),
            list: format!(
                "column {} (the name the job needs; another type change of this column may be under way: migrate_progress shows it)",
                display_ident(&name)
            ),
        }
        .report();
    }
    let may_create = sys::pinned(|| {
        Spi::get_one_with_args::<bool>(
            "SELECT pg_catalog.has_schema_privilege($1::pg_catalog.text, 'CREATE')",
            &[target.schema.as_str().into()],
        )
    })
    .ok()
    .flatten()
    .unwrap_or(false);
    if !may_create {
        MigrateError::CannotChange {
            what: format!("the type of column {} of {}", display_ident(column), target.display),
            why: "The job adds a trigger function to the table's schema, and the caller has no CREATE privilege on that schema.",
        }
        .report();
    }
    // The expression: one expression, and it must give the new type (and
    // the new type must cast back, for the trigger that keeps the old
    // column in step after the cut-over), tried as the caller now.
    if let Some(e) = using {
        if let Err(r) = crate::kinds::backfill::clause::check_where(e) {
            sys::raise_at(
                &r.error,
                e,
                r.position,
                Some("The error is in using_expr.".into()),
            );
        }
    }
    let expr = using
        .map(String::from)
        .unwrap_or_else(|| quote_ident(column));
    let table = format!(
        "{}.{}",
        quote_ident(&target.schema),
        quote_ident(&target.table)
    );
    // The default moves to the new column, cast: it must cast too (LIMIT
    // 0: nothing is evaluated, no sequence value is taken).
    let default = sys::pinned(|| {
        Spi::get_one_with_args::<String>(
            "SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d
              WHERE d.adrelid = $1 AND d.adnum = $2",
            &[relid.into(), attnum.into()],
        )
    })
    .ok()
    .flatten();
    let default_cast = default
        .as_ref()
        .map(|d| format!("; SELECT ({d})::{new_type} LIMIT 0"))
        .unwrap_or_default();
    let tried = sys::subtransaction(false, || {
        Spi::run(&format!(
            "SELECT (\n{expr}\n)::{new_type} FROM {table} LIMIT 0;
             SELECT (NULL::{new_type})::{old_type}{default_cast}"
        ))
    });
    match tried {
        Ok(Ok(())) => {}
        Ok(Err(e)) => pgrx::error!("{e}"),
        Err(mut e) => {
            e.hint = Some(format!(
                "using_expr (default: the column cast to the new type) must give {new_type} for every row, {new_type} must cast back to {old_type} (the old column is kept in step until the contract), and the column's default must cast to {new_type}."
            ));
            sys::raise_at(&e, "", 0, None)
        }
    }
    let spec = AlterTypeSpec {
        column: column.to_string(),
        shadow,
        retired,
        new_type: new_type.clone(),
        old_type: old_type.clone(),
        using: using.map(String::from),
        search_path: sys::setting("search_path"),
        not_null,
        check: suffixed(column, "_pgm_not_null"),
        forward: format!("pgm_{}_{}_fwd", relid.to_u32(), attnum),
        backward: format!("pgm_{}_{}_back", relid.to_u32(), attnum),
        complete,
        backfill,
        rolled_back: false,
        build_settings: crate::kinds::index::submit::build_settings(),
        policy,
    };
    let shown = display_qualified(&target.schema, &target.table);
    let command = format!(
        "-- expand, backfill, indexes, cut-over, contract of:\nALTER TABLE {shown} ALTER COLUMN {} TYPE {new_type}{};",
        display_ident(column),
        using.map(|u| format!(" USING ({u})")).unwrap_or_default()
    );
    super::ddl::queue(super::ddl::NewChange {
        kind: FACTS.name,
        relid,
        target: &target,
        spec: serde_json::to_value(&spec).expect("spec serialises"),
        command,
        description: format!(
            "type of {}.{} to {new_type} by pg_migrate",
            shown,
            display_ident(column)
        ),
        run_at: run_at_option(run_at),
        migration,
        gates: &gates,
    })
}

#[cfg(test)]
mod tests {
    use crate::kinds::alter_type::{
        backfill_set, dollar_tag, forward_value, new_index_name, old_index_name, original,
        suffixed, trigger_function, AlterTypeSpec, BackfillPace, Complete,
    };
    use crate::kinds::ddl::LockPolicy;

    #[test]
    fn names_fit_and_are_found_again() {
        let long = "x".repeat(70);
        for n in [
            suffixed(&long, "_pgm_new"),
            new_index_name(&long),
            old_index_name(&long),
        ] {
            assert!(n.len() <= 63, "{n}");
        }
        assert_eq!(new_index_name("orders_pkey"), "orders_pkey_pgm_new");
        assert_eq!(
            original(&old_index_name("orders_score_idx")),
            "orders_score_idx"
        );
        assert_eq!(original("plain"), "plain");
    }

    #[test]
    fn the_dollar_quote_never_closes_early() {
        assert_eq!(dollar_tag("NEW.a := 1"), "$pgm0$");
        assert_eq!(dollar_tag("x $pgm0$ y"), "$pgm1$");
        assert_eq!(dollar_tag("$pgm0$ $pgm1$"), "$pgm2$");
    }

    fn spec(using: Option<&str>) -> AlterTypeSpec {
        AlterTypeSpec {
            column: "left".into(),
            shadow: "left_pgm_new".into(),
            retired: "left_pgm_old".into(),
            new_type: "bigint".into(),
            old_type: "integer".into(),
            using: using.map(String::from),
            search_path: "\"$user\", public".into(),
            not_null: true,
            check: "left_pgm_not_null".into(),
            forward: "pgm_1_2_fwd".into(),
            backward: "pgm_1_2_back".into(),
            complete: Complete::Auto,
            backfill: BackfillPace::default(),
            rolled_back: false,
            build_settings: Vec::new(),
            policy: LockPolicy {
                lock_timeout_ms: 2000,
                max_retries: 10,
            },
        }
    }

    #[test]
    fn generated_sql_quotes_every_name() {
        let s = spec(None);
        assert_eq!(forward_value(&s), "(NEW.\"left\")::bigint");
        assert_eq!(
            backfill_set(&s),
            "\"left_pgm_new\" = (\n\"left\"\n)::bigint"
        );
        let u = spec(Some("left * 2"));
        assert_eq!(
            forward_value(&u),
            "(SELECT (\nleft * 2\n)::bigint FROM (SELECT NEW.*) AS pgm_row)"
        );
        let f = trigger_function(
            "my schema",
            "pgm_1_2_fwd",
            "left_pgm_new",
            "1",
            "pg_catalog, pg_temp",
        );
        assert!(
            f.starts_with("CREATE FUNCTION \"my schema\".\"pgm_1_2_fwd\"() RETURNS trigger"),
            "{f}"
        );
        assert!(f.contains("SET search_path = 'pg_catalog, pg_temp'"), "{f}");
        assert!(
            f.contains("REVOKE ALL ON FUNCTION \"my schema\".\"pgm_1_2_fwd\"() FROM PUBLIC"),
            "{f}"
        );
    }

    #[test]
    fn specs_read_back_and_old_specs_still_read() {
        let s = spec(Some("x"));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["lock_timeout_ms"], 2000);
        let back: AlterTypeSpec = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back.complete, Complete::Auto);
        let mut old = v;
        old.as_object_mut().unwrap().remove("backfill");
        old.as_object_mut().unwrap().remove("rolled_back");
        let read: AlterTypeSpec = serde_json::from_value(old).unwrap();
        assert!(!read.rolled_back);
        let m: Complete =
            serde_json::from_str(r#"{"migration":{"app":"shop","name":"0003"}}"#).unwrap();
        assert_eq!(
            m,
            Complete::Migration {
                app: "shop".into(),
                name: "0003".into()
            }
        );
    }
}
