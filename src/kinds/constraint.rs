//! migrate_add_constraint: add a CHECK, FOREIGN KEY, UNIQUE or PRIMARY KEY
//! constraint to a big, live table without holding a lock that stops the
//! application while the table is scanned.
//!
//! CHECK and FOREIGN KEY, two steps, each its own transaction:
//!
//! 1. `ADD CONSTRAINT ... NOT VALID`: a moment of ACCESS EXCLUSIVE (CHECK)
//!    or SHARE ROW EXCLUSIVE on both tables (FOREIGN KEY), no scan; new
//!    rows are checked from now on;
//! 2. `VALIDATE CONSTRAINT`: the scan, under SHARE UPDATE EXCLUSIVE, so
//!    reads and writes go on.
//!
//! UNIQUE and PRIMARY KEY: the unique index is built first by an index job
//! (CREATE UNIQUE INDEX CONCURRENTLY, cleaned up and retried like any
//! index job), a primary key's nullable columns are made NOT NULL first by
//! set_not_null jobs; this job waits for them (its gates), then adds the
//! constraint on the index in one step (`ADD CONSTRAINT ... USING INDEX`),
//! a moment of ACCESS EXCLUSIVE with no scan.
//!
//! The definition is checked at submit as the caller, in a subtransaction
//! that is rolled back, and stored as PostgreSQL prints it back with every
//! name qualified: the job runs exactly what was checked, whatever the
//! search_path of whoever drives it.

use super::ddl::{
    advance, caught, check_target, lock_policy, next_step, qualified, require_writable,
    run_as_owner, run_step, LockPolicy, Ran, Target,
};
use super::model::{Driver, Facts, JobKind, StepReport, Work};
use crate::api::args::{gate_options, migration_option, run_at_option};
use crate::catalog::jobs::{self, Gates, Job};
use crate::catalog::{as_owner, builds};
use crate::engine::keyset::{display_ident, display_qualified, quote_ident};
use crate::engine::locks::LockMode;
use crate::error::{MigrateError, OrReport};
use crate::runner::outcome::{fail, succeed};
use crate::sys;
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::PgRelation;
use serde::{Deserialize, Serialize};
use std::ffi::{CStr, CString};

pub static FACTS: Facts = Facts {
    name: "add_constraint",
    noun: "constraint",
    table_lock: LockMode::AccessExclusive,
    locks_index: false,
    one_per_table: Some("definition change"),
    counts_rows: false,
    on_index: false,
    orphaned: "its worker stopped; it goes on at the step where it stopped",
};

/// The kinds of constraint it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConKind {
    Check,
    ForeignKey,
    Unique,
    PrimaryKey,
}

impl ConKind {
    fn words(self) -> &'static str {
        match self {
            ConKind::Check => "CHECK",
            ConKind::ForeignKey => "FOREIGN KEY",
            ConKind::Unique => "UNIQUE",
            ConKind::PrimaryKey => "PRIMARY KEY",
        }
    }

    /// Added NOT VALID, then validated (otherwise: on an index, one step).
    fn validated(self) -> bool {
        matches!(self, ConKind::Check | ConKind::ForeignKey)
    }

    fn steps(self) -> &'static [&'static str] {
        match self {
            ConKind::Check => &CHECK_STEPS,
            ConKind::ForeignKey => &FK_STEPS,
            ConKind::Unique | ConKind::PrimaryKey => &INDEX_STEPS,
        }
    }
}

const CHECK_STEPS: [&str; 2] = [
    "adding the constraint NOT VALID (a moment of ACCESS EXCLUSIVE, no scan)",
    "validating the constraint (SHARE UPDATE EXCLUSIVE: reads and writes go on)",
];
const FK_STEPS: [&str; 2] = [
    "adding the constraint NOT VALID (a moment of SHARE ROW EXCLUSIVE on both tables, no scan)",
    "validating the constraint (SHARE UPDATE EXCLUSIVE: reads and writes go on)",
];
const INDEX_STEPS: [&str; 1] =
    ["adding the constraint on its unique index (a moment of ACCESS EXCLUSIVE, no scan)"];

/// What a job needs to know, stored in its spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConstraintSpec {
    pub kind: ConKind,
    /// The constraint's name.
    pub name: String,
    /// What follows `ADD CONSTRAINT name`, names qualified, without NOT
    /// VALID (CHECK, FOREIGN KEY) or as `UNIQUE USING INDEX ...`.
    pub definition: String,
    /// UNIQUE, PRIMARY KEY: the index job it waits for (None: the index
    /// existed).
    pub index_job: Option<i64>,
    #[serde(flatten)]
    pub policy: LockPolicy,
}

/// Step `n` as SQL on `table`; `ident` quotes the name (always, to run it;
/// only where needed, to show it).
fn statement(n: usize, table: &str, spec: &ConstraintSpec, ident: fn(&str) -> String) -> String {
    let name = ident(&spec.name);
    match (n, spec.kind.validated()) {
        (0, true) => format!(
            "ALTER TABLE {table} ADD CONSTRAINT {name} {} NOT VALID",
            spec.definition
        ),
        (_, true) => format!("ALTER TABLE {table} VALIDATE CONSTRAINT {name}"),
        (_, false) => format!(
            "ALTER TABLE {table} ADD CONSTRAINT {name} {}",
            spec.definition
        ),
    }
}

pub struct AddConstraint;

impl JobKind for AddConstraint {
    fn facts(&self) -> &'static Facts {
        &FACTS
    }

    fn work(&self) -> Work {
        Work::Steps(step)
    }

    fn progress_line(&self, job: &Job) -> String {
        let steps = super::job::spec_of::<ConstraintSpec>(job)
            .map(|s| s.kind.steps())
            .unwrap_or(&CHECK_STEPS);
        super::ddl::progress_line(job, steps)
    }

    fn success_line(&self, job: &Job) -> String {
        let name = job.spec["name"].as_str().unwrap_or_default();
        format!(
            "job {} succeeded: constraint {} of {} is valid",
            job.id,
            display_ident(name),
            job.relation
        )
    }
}

/// The constraint of this name on the table: its kind letter and whether it
/// is validated.
fn existing(relid: pg_sys::Oid, name: &str) -> Option<(String, bool)> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT c.contype::text, c.convalidated FROM pg_catalog.pg_constraint c
              WHERE c.conrelid = $1 AND c.conname = $2",
            None,
            &[relid.into(), name.into()],
        )?;
        Ok::<_, pgrx::spi::Error>(match rows.into_iter().next() {
            Some(r) => Some((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<bool>(2)?.unwrap_or(false),
            )),
            None => None,
        })
    })
    .ok()
    .flatten()
}

fn step(job: &Job, _driver: Driver) -> StepReport {
    let (spec, table) = match super::job::spec_and_table::<ConstraintSpec>(job) {
        Ok(found) => found,
        Err(e) => return fail(job, &e),
    };
    let qualified = qualified(&table);
    let steps = spec.kind.steps();
    let mut n = next_step(job);
    let found = sys::pinned(|| existing(job.relid, &spec.name));
    // Steps already done (before a crash, or by other means) are skipped,
    // not repeated.
    match (&found, spec.kind.validated()) {
        (Some((_, true)), _) => return succeed(job),
        (Some((_, false)), true) if n == 0 => n = 1,
        (None, true) if n == 1 => {
            return fail(
                job,
                &caught(
                    "42704",
                    format!(
                        "constraint {} of {} was dropped while the job ran",
                        display_ident(&spec.name),
                        job.relation
                    ),
                    None,
                    Some(format!(
                        "migrate_retry({}) adds it again from the first step.",
                        job.id
                    )),
                ),
            );
        }
        _ => {}
    }
    if n >= steps.len() {
        return succeed(job);
    }
    let sql = statement(n, &qualified, &spec, quote_ident);
    as_owner(|| builds::set_phase(job.id, Some(steps[n])));
    match run_step(job, spec.policy, &sql, n, steps.len(), steps[n]) {
        Ran::Done => advance(job, n + 1, steps),
        Ran::Later(report) => report,
        Ran::Failed {
            error,
            gave_up: true,
        } => fail(job, &error),
        Ran::Failed { mut error, .. } => {
            if n == 1 && (error.sqlstate == "23514" || error.sqlstate == "23503") {
                // A row breaks it: the NOT VALID constraint goes, so the
                // table is as the job found it (it would refuse writes the
                // application still makes), and a retry starts again.
                if spec.kind == ConKind::Check {
                    let expr = spec
                        .definition
                        .strip_prefix("CHECK ")
                        .unwrap_or(&spec.definition);
                    error.detail = Some(format!(
                        "{}Rows that break it: SELECT * FROM {} WHERE NOT {expr};",
                        error.detail.map(|d| format!("{d} ")).unwrap_or_default(),
                        job.relation
                    ));
                }
                let drop = format!(
                    "ALTER TABLE {qualified} DROP CONSTRAINT IF EXISTS {}",
                    quote_ident(&spec.name)
                );
                let name = display_ident(&spec.name);
                error.hint = Some(if run_as_owner(job, spec.policy, &drop).is_none() {
                    as_owner(|| jobs::set_cursor(job.id, &["0".to_string()]));
                    format!(
                        "Fix those rows, then migrate_retry({}) adds the constraint again from the first step (the NOT VALID constraint {name} was dropped).",
                        job.id
                    )
                } else {
                    format!(
                        "The NOT VALID constraint {name} could not be dropped now: it checks new rows. Fix the rows, then migrate_retry({}) validates it again, or drop it with ALTER TABLE {} DROP CONSTRAINT {name}.",
                        job.id, job.relation
                    )
                });
            }
            fail(job, &error)
        }
    }
}

// ---- submit ----------------------------------------------------------------

/// What the parser says the definition is.
struct Parsed {
    kind: ConKind,
    name: Option<String>,
    /// UNIQUE, PRIMARY KEY: key columns, INCLUDE columns, NULLS NOT
    /// DISTINCT, an existing index (USING INDEX), the deferrable words.
    keys: Vec<String>,
    include: Vec<String>,
    nulls_not_distinct: bool,
    using_index: Option<String>,
    deferrable: &'static str,
    /// NOT VALID was said.
    not_valid: bool,
}

fn cstr(p: *const std::ffi::c_char) -> Option<String> {
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Column names from a list of String nodes.
unsafe fn names(list: *mut pg_sys::List) -> Vec<String> {
    unsafe {
        pgrx::PgList::<pg_sys::Node>::from_pg(list)
            .iter_ptr()
            .filter_map(|n| cstr((*(n as *mut pg_sys::String)).sval))
            .collect()
    }
}

/// Why a definition is refused at parse time.
enum Refused {
    /// Not one constraint: what it is instead.
    Bad(String),
    /// A constraint this function does not add.
    Kind(MigrateError),
}

fn bad(found: &str) -> ! {
    MigrateError::BadConstraint {
        found: found.to_string(),
    }
    .report()
}

/// Parse `sql`, which must be one ALTER TABLE with one ADD of a constraint.
fn parse(sql: &str) -> Parsed {
    let csql = CString::new(sql).unwrap_or_else(|_| bad("It contains a NUL character."));
    let parsed = sys::subtransaction(false, || unsafe { parse_inner(&csql) });
    match parsed {
        Ok(Ok(p)) => p,
        Ok(Err(Refused::Bad(found))) => bad(&found),
        Ok(Err(Refused::Kind(e))) => e.report(),
        Err(e) => MigrateError::BadConstraint {
            found: format!("It does not parse: {}.", e.message),
        }
        .report(),
    }
}

unsafe fn parse_inner(sql: &CStr) -> Result<Parsed, Refused> {
    unsafe {
        let list = pgrx::PgList::<pg_sys::RawStmt>::from_pg(pg_sys::raw_parser(
            sql.as_ptr(),
            pg_sys::RawParseMode::RAW_PARSE_DEFAULT,
        ));
        if list.len() != 1 {
            return Err(Refused::Bad(format!("It makes {} statements.", list.len())));
        }
        let stmt = (*list.get_ptr(0).expect("one statement")).stmt;
        if (*stmt).type_ != pg_sys::NodeTag::T_AlterTableStmt {
            return Err(Refused::Bad(
                "It does not make one ALTER TABLE ... ADD.".into(),
            ));
        }
        let alter = stmt as *mut pg_sys::AlterTableStmt;
        let cmds = pgrx::PgList::<pg_sys::AlterTableCmd>::from_pg((*alter).cmds);
        if cmds.len() != 1 {
            return Err(Refused::Bad(format!(
                "It makes {} changes of the table.",
                cmds.len()
            )));
        }
        let cmd = cmds.get_ptr(0).expect("one command");
        if (*cmd).subtype != pg_sys::AlterTableType::AT_AddConstraint {
            return Err(Refused::Bad(
                "It is not a constraint (a column definition?).".into(),
            ));
        }
        let def = (*cmd).def;
        if def.is_null() || (*def).type_ != pg_sys::NodeTag::T_Constraint {
            return Err(Refused::Bad("It is not a constraint.".into()));
        }
        let con = def as *mut pg_sys::Constraint;
        let kind = match (*con).contype {
            pg_sys::ConstrType::CONSTR_CHECK => ConKind::Check,
            pg_sys::ConstrType::CONSTR_FOREIGN => ConKind::ForeignKey,
            pg_sys::ConstrType::CONSTR_UNIQUE => ConKind::Unique,
            pg_sys::ConstrType::CONSTR_PRIMARY => ConKind::PrimaryKey,
            pg_sys::ConstrType::CONSTR_EXCLUSION => {
                return Err(Refused::Kind(MigrateError::ConstraintKind {
                    what: "EXCLUDE constraints".into(),
                    instead: "Build its index with migrate_create_index() (CREATE INDEX ... USING gist (...)), then add the constraint with ALTER TABLE ... ADD CONSTRAINT: an exclusion constraint cannot be added on an existing index, so that step scans the table.",
                }))
            }
            _ => return Err(Refused::Bad("It is not a CHECK, FOREIGN KEY, UNIQUE or PRIMARY KEY constraint.".into())),
        };
        if matches!(kind, ConKind::Unique | ConKind::PrimaryKey)
            && (!(*con).options.is_null() || !(*con).indexspace.is_null())
        {
            return Err(Refused::Kind(MigrateError::ConstraintKind {
                what: format!("{} constraints with WITH (...) or USING INDEX TABLESPACE", kind.words()),
                instead: "Build the index with migrate_create_index('CREATE UNIQUE INDEX name ON ... WITH (...) TABLESPACE ...'), then migrate_add_constraint(table, 'CONSTRAINT name UNIQUE USING INDEX name').",
            }));
        }
        let deferrable = match ((*con).deferrable, (*con).initdeferred) {
            (true, true) => " DEFERRABLE INITIALLY DEFERRED",
            (true, false) => " DEFERRABLE",
            _ => "",
        };
        Ok(Parsed {
            kind,
            name: cstr((*con).conname),
            keys: names((*con).keys),
            include: names((*con).including),
            nulls_not_distinct: (*con).nulls_not_distinct,
            using_index: cstr((*con).indexname),
            deferrable,
            not_valid: (*con).skip_validation,
        })
    }
}

/// Add a CHECK or FOREIGN KEY constraint NOT VALID as the caller, in a
/// subtransaction that is rolled back: PostgreSQL checks every name, type
/// and privilege; what it prints back, with every name qualified, is what
/// the job will run.  Returns the constraint's name and definition.
fn dry_run(
    sql: &str,
    relid: pg_sys::Oid,
    policy: LockPolicy,
    before: &[String],
) -> (String, String) {
    let ran = sys::subtransaction(false, || {
        sys::set_local(
            "lock_timeout",
            &format!("{}ms", policy.lock_timeout_ms.max(1)),
        );
        Spi::run(sql).unwrap_or_else(|e| pgrx::error!("{e}"));
        sys::pinned(|| {
            Spi::connect(|c| {
                let rows = c.select(
                    "SELECT c.conname::text, pg_catalog.pg_get_constraintdef(c.oid)
                       FROM pg_catalog.pg_constraint c
                      WHERE c.conrelid = $1 AND c.conname::text <> ALL ($2)",
                    None,
                    &[relid.into(), before.to_vec().into()],
                )?;
                Ok::<_, pgrx::spi::Error>(match rows.into_iter().next() {
                    Some(r) => Some((
                        r.get::<String>(1)?.unwrap_or_default(),
                        r.get::<String>(2)?.unwrap_or_default(),
                    )),
                    None => None,
                })
            })
            .ok()
            .flatten()
        })
    });
    match ran {
        Ok(Some((name, def))) => {
            let def = def
                .strip_suffix(" NOT VALID")
                .map(str::to_string)
                .unwrap_or(def);
            (name, def)
        }
        Ok(None) => pgrx::error!("pg_migrate internal error: the checked constraint was not found"),
        Err(mut e) => {
            if e.sqlstate == "55P03" {
                e.hint = Some(
                    "Checking the definition takes the lock its first step takes, for a moment; another session holds the table now. Try again, or find it with migrate_blockers().".into(),
                );
            }
            sys::raise_at(&e, "", 0, e.hint.clone())
        }
    }
}

/// Names of the table's constraints now.
fn constraint_names(relid: pg_sys::Oid) -> Vec<String> {
    Spi::connect(|c| {
        c.select(
            "SELECT c.conname::text FROM pg_catalog.pg_constraint c WHERE c.conrelid = $1",
            None,
            &[relid.into()],
        )
        .map(|rows| {
            rows.filter_map(|r| r.get::<String>(1).ok().flatten())
                .collect()
        })
    })
    .unwrap_or_default()
}

/// Is this name taken by a relation in the schema (an index's name)?
fn relation_exists(schema: &str, name: &str) -> bool {
    sys::ask(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = $1 AND c.relname = $2)",
        &[schema.into(), name.into()],
    )
}

/// A default name as PostgreSQL would give it, cut to 63 bytes.
fn default_name(table: &str, keys: &[String], kind: ConKind) -> String {
    let mut name = match kind {
        ConKind::PrimaryKey => format!("{table}_pkey"),
        _ => format!("{table}_{}_key", keys.join("_")),
    };
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// Queue a job that adds the constraint `definition` to `relation` (see the
/// module's doc).  Checked now, as the caller, who must own the table; a
/// background worker (or CALL migrate_run) runs it.  Returns the id of the
/// job that adds the constraint (a UNIQUE or PRIMARY KEY's index build and
/// NOT NULL jobs are queued before it, and it waits for them).
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn migrate_add_constraint(
    relation: Option<PgRelation>,
    definition: Option<&str>,
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
    let definition = definition
        .ok_or(MigrateError::NullArgument { arg: "definition" })
        .or_report();
    if definition.trim().is_empty() {
        MigrateError::EmptyArgument { arg: "definition" }.report();
    }
    let policy = lock_policy(lock_timeout, max_retries);
    let migration = migration_option(migration);
    let mut gates = gate_options(after_jobs, after_migration);
    let run_at = run_at_option(run_at);
    require_writable(c"migrate_add_constraint()");
    let target = check_target(
        relid,
        "migrate_add_constraint()",
        "change its constraints",
        (
            "A partitioned table's NOT VALID constraint cannot be validated partition by partition by one job yet.",
            "Add the constraint to each partition with migrate_add_constraint, then to the parent.",
        ),
    );
    let table = format!(
        "{}.{}",
        quote_ident(&target.schema),
        quote_ident(&target.table)
    );
    let parsed = parse(&format!("ALTER TABLE {table} ADD {definition}"));
    // A CHECK or FOREIGN KEY is checked by adding it NOT VALID, with NOT
    // VALID on a line of its own (no comment in the definition can hide
    // it); the text parsed again is exactly the text the dry run runs.
    let sql = format!("ALTER TABLE {table} ADD {definition}\nNOT VALID");
    if parsed.kind.validated() {
        let again = parse(&sql);
        if !again.not_valid || again.kind != parsed.kind {
            bad("It does not stay one constraint when NOT VALID follows it.");
        }
    }
    let before = sys::pinned(|| constraint_names(relid));
    if let Some(name) = &parsed.name {
        if before.contains(name) {
            MigrateError::ConstraintExists {
                name: name.clone(),
                relation: target.display.clone(),
            }
            .report();
        }
    }
    let shown = display_qualified(&target.schema, &target.table);
    let mut notices = Vec::new();
    let (name, definition, index_job) = if parsed.kind.validated() {
        let (name, def) = dry_run(&sql, relid, policy, &before);
        (name, def, None)
    } else {
        let (name, def, index_job) = unique_parts(
            relid,
            &target,
            &parsed,
            &before,
            policy,
            run_at,
            &gates,
            &mut notices,
        );
        (name, def, index_job)
    };
    if let Some(id) = index_job {
        gates.jobs.push(id);
    }
    for n in &notices {
        if let Some(id) = n.0 {
            if !gates.jobs.contains(&id) {
                gates.jobs.push(id);
            }
        }
    }
    let spec = ConstraintSpec {
        kind: parsed.kind,
        name: name.clone(),
        definition,
        index_job,
        policy,
    };
    let command = (0..parsed.kind.steps().len())
        .map(|n| format!("{};", statement(n, &shown, &spec, display_ident)))
        .collect::<Vec<_>>()
        .join("\n");
    let id = super::ddl::queue(super::ddl::NewChange {
        kind: FACTS.name,
        relid,
        target: &target,
        spec: serde_json::to_value(&spec).expect("spec serialises"),
        command,
        description: format!(
            "constraint {} on {} by pg_migrate",
            display_ident(&name),
            shown
        ),
        run_at,
        migration,
        gates: &gates,
    });
    for (_, line) in notices {
        pgrx::notice!("{line}; job {id} waits for it");
    }
    id
}

/// UNIQUE and PRIMARY KEY: the constraint's name, its definition on the
/// index, and the index job queued to build that index (None when the
/// definition names an existing index).  A primary key's nullable columns
/// get set_not_null jobs, listed in `notices` with their ids.
#[allow(clippy::too_many_arguments)]
fn unique_parts(
    relid: pg_sys::Oid,
    target: &Target,
    parsed: &Parsed,
    before: &[String],
    policy: LockPolicy,
    run_at: Option<TimestampWithTimeZone>,
    gates: &Gates,
    notices: &mut Vec<(Option<i64>, String)>,
) -> (String, String, Option<i64>) {
    let words = parsed.kind.words();
    if parsed.kind == ConKind::PrimaryKey {
        let has_pk = sys::pinned(|| {
            sys::ask(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conrelid = $1 AND c.contype = 'p')",
                &[relid.into()],
            )
        });
        if has_pk {
            MigrateError::HasPrimaryKey {
                relation: target.display.clone(),
            }
            .report();
        }
    }
    if let Some(index) = &parsed.using_index {
        let name = parsed.name.clone().unwrap_or_else(|| index.clone());
        let on_table = sys::pinned(|| {
            sys::ask(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
                                 WHERE i.indrelid = $1 AND c.relname = $2)",
                &[relid.into(), index.as_str().into()],
            )
        });
        if !on_table {
            MigrateError::NotAnIndexOf {
                index: display_ident(index),
                relation: target.display.clone(),
            }
            .report();
        }
        let def = format!(
            "{words} USING INDEX {}{}",
            quote_ident(index),
            parsed.deferrable
        );
        return (name, def, None);
    }
    let columns = sys::pinned(|| column_facts(relid));
    for c in parsed.keys.iter().chain(parsed.include.iter()) {
        if !columns.iter().any(|(n, _)| n == c) {
            MigrateError::NoSuchColumn {
                relation: target.display.clone(),
                column: c.clone(),
            }
            .report();
        }
    }
    // Citus keeps a distributed table's keys unique shard by shard.
    if let Some(column) = crate::kinds::backfill::citus::distribution_column(relid) {
        if !parsed.keys.contains(&column) {
            MigrateError::CitusKey {
                key: words.to_string(),
                relation: target.display.clone(),
                column: display_ident(&column),
            }
            .report();
        }
    }
    let name = parsed
        .name
        .clone()
        .unwrap_or_else(|| default_name(&target.table, &parsed.keys, parsed.kind));
    if before.contains(&name) {
        MigrateError::ConstraintExists {
            name: name.clone(),
            relation: target.display.clone(),
        }
        .report();
    }
    if sys::pinned(|| relation_exists(&target.schema, &name)) {
        MigrateError::IndexExists {
            name: display_qualified(&target.schema, &name),
        }
        .report();
    }
    // A primary key's columns must be NOT NULL: made so first, without a
    // scan under ACCESS EXCLUSIVE, by set_not_null jobs.
    let mut index_gates = gates.clone();
    if parsed.kind == ConKind::PrimaryKey {
        for key in &parsed.keys {
            let nullable = columns.iter().any(|(n, not_null)| n == key && !not_null);
            if nullable {
                let id = super::not_null::queue(relid, target, key, policy, run_at, None, gates);
                notices.push((
                    Some(id),
                    format!(
                        "job {id} makes column {} NOT NULL first",
                        display_ident(key)
                    ),
                ));
                index_gates.jobs.push(id);
            }
        }
    }
    let list = |cols: &[String]| {
        cols.iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut index_sql = format!(
        "CREATE UNIQUE INDEX {} ON {}.{} ({})",
        quote_ident(&name),
        quote_ident(&target.schema),
        quote_ident(&target.table),
        list(&parsed.keys)
    );
    if !parsed.include.is_empty() {
        index_sql.push_str(&format!(" INCLUDE ({})", list(&parsed.include)));
    }
    if parsed.nulls_not_distinct {
        index_sql.push_str(" NULLS NOT DISTINCT");
    }
    let index_job =
        crate::kinds::index::submit::queue_constraint_index(&index_sql, run_at, index_gates, &[]);
    notices.push((
        None,
        format!(
            "job {index_job} builds its unique index {} first",
            display_ident(&name)
        ),
    ));
    let def = format!(
        "{words} USING INDEX {}{}",
        quote_ident(&name),
        parsed.deferrable
    );
    (name, def, Some(index_job))
}

/// The table's columns and whether each is NOT NULL.
fn column_facts(relid: pg_sys::Oid) -> Vec<(String, bool)> {
    Spi::connect(|c| {
        c.select(
            "SELECT a.attname::text, a.attnotnull FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            None,
            &[relid.into()],
        )
        .map(|rows| {
            rows.filter_map(|r| {
                Some((
                    r.get::<String>(1).ok().flatten()?,
                    r.get::<bool>(2).ok().flatten()?,
                ))
            })
            .collect()
        })
    })
    .unwrap_or_default()
}
