//! migrate_create_index, migrate_drop_index, migrate_reindex: check the
//! statement at submit with PostgreSQL's own parser and the catalogs, queue
//! an index job, return its id.  A background worker runs it.

use super::facts;
use crate::api::args::{
    gate_options, int_arg, interval_ms, may_write_history, migration_option, qualified_display,
    relkind_name, start_linked_run, window_option,
};
use crate::catalog::jobs::{self, NewJob};
use crate::catalog::{as_owner, current_role_name};
use crate::engine::cron::Cron;
use crate::engine::index::{self as rules, IndexAction, IndexSpec};
use crate::engine::keyset::quote_ident;
use crate::error::{MigrateError, OrReport};
use crate::kinds::queue::announce;
use crate::sys;
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::PgRelation;
use std::ffi::{CStr, CString};

/// Session settings an index statement runs under, as the submitter had
/// them: names in expressions and the default tablespace resolve the same,
/// and the build gets the same memory and parallel workers.
const CAPTURED_SETTINGS: [&str; 8] = [
    "search_path",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "extra_float_digits",
    "default_tablespace",
    "maintenance_work_mem",
    "max_parallel_maintenance_workers",
];

/// Options every index job takes.
struct Common {
    run_at: Option<TimestampWithTimeZone>,
    window: Option<crate::engine::pace::WindowSpec>,
    max_wait_ms: i64,
    max_retries: i32,
    retry_delay_ms: i64,
    migration: Option<(String, String)>,
    settings: Vec<(String, String)>,
    gates: jobs::Gates,
}

#[allow(clippy::too_many_arguments)] // the SQL functions' own options
fn common(
    run_at: Option<TimestampWithTimeZone>,
    window_start: Option<&str>,
    window_length: Option<Interval>,
    max_wait: Option<Interval>,
    max_retries: Option<i32>,
    retry_delay: Option<Interval>,
    maintenance_work_mem: Option<&str>,
    migration: Option<Vec<Option<String>>>,
    after_jobs: Option<Vec<Option<i64>>>,
    after_migration: Option<Vec<Option<String>>>,
) -> Common {
    let gates = gate_options(after_jobs, after_migration);
    let window = window_option(window_start, window_length);
    let max_wait_ms = max_wait.map_or(0, |i| interval_ms("max_wait", Some(i)));
    let max_retries = int_arg(
        "max_retries",
        max_retries,
        0,
        100,
        "max_retries from 0 to 100",
    );
    let retry_delay_ms = interval_ms("retry_delay", retry_delay);
    if retry_delay_ms < 1000 {
        MigrateError::OutOfRange {
            arg: "retry_delay",
            value: format!("{retry_delay_ms} ms"),
            allowed: "a retry_delay of at least one second, such as '1 min'",
        }
        .report();
    }
    let mut settings = captured_settings();
    if let Some(mem) = maintenance_work_mem {
        // PostgreSQL's own check of the value, in a subtransaction that is
        // rolled back.
        if sys::subtransaction(false, || sys::set_local("maintenance_work_mem", mem)).is_err() {
            MigrateError::InvalidValue {
                arg: "maintenance_work_mem",
                value: mem.to_string(),
                allowed: "a memory size from 1MB, such as '1GB'",
            }
            .report();
        }
        for s in settings
            .iter_mut()
            .filter(|(n, _)| n == "maintenance_work_mem")
        {
            s.1 = mem.to_string();
        }
    }
    Common {
        run_at: crate::api::args::run_at_option(run_at),
        window,
        max_wait_ms,
        max_retries,
        retry_delay_ms,
        migration: migration_option(migration),
        settings,
        gates,
    }
}

/// The submitter's settings an index statement runs under.
fn captured_settings() -> Vec<(String, String)> {
    CAPTURED_SETTINGS
        .iter()
        .map(|n| (n.to_string(), sys::setting(n)))
        .collect()
}

/// The settings a build's memory and parallel workers come from, as this
/// session has them: a job that queues its index builds later (a type
/// change, from a worker) keeps its submitter's and hands them on.
pub fn build_settings() -> Vec<(String, String)> {
    ["maintenance_work_mem", "max_parallel_maintenance_workers"]
        .iter()
        .map(|n| (n.to_string(), sys::setting(n)))
        .collect()
}

/// Queue the CREATE UNIQUE INDEX a unique or primary key constraint is
/// added on (migrate_add_constraint), or an index a type change rebuilds:
/// checked like migrate_create_index's statement, with its default
/// options, under this session's settings but for `build` (see
/// build_settings).
pub fn queue_constraint_index(
    sql: &str,
    run_at: Option<TimestampWithTimeZone>,
    gates: jobs::Gates,
    build: &[(String, String)],
) -> i64 {
    let mut settings = captured_settings();
    for (name, value) in build {
        for s in settings.iter_mut().filter(|(n, _)| n == name) {
            s.1 = value.clone();
        }
    }
    let c = Common {
        run_at,
        window: None,
        max_wait_ms: 0,
        max_retries: 3,
        retry_delay_ms: 60_000,
        migration: None,
        settings,
        gates,
    };
    queue_create(sql, c)
}

/// Check a CREATE INDEX statement and queue its job.
fn queue_create(sql: &str, c: Common) -> i64 {
    check_common_target();
    let checked = check_create(sql);
    let table_schema = checked.table_schema.clone();
    queue(
        IndexAction::Create,
        checked.relid,
        &checked.table_schema,
        &checked.table,
        &table_schema,
        &checked.name,
        None,
        checked.statement,
        checked.if_not_exists,
        None,
        checked.partitioned,
        c,
    )
}

fn cstr(p: *const std::ffi::c_char) -> Option<String> {
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// What the checks found out about a CREATE INDEX statement.
struct Checked {
    relid: pg_sys::Oid,
    table_schema: String,
    table: String,
    name: String,
    if_not_exists: bool,
    statement: String,
    /// A partitioned table: the statement creates the index ON ONLY it.
    partitioned: bool,
}

/// May the caller act as the owner of `relid` (owner, member of the
/// owner's role, superuser)?
fn owns(relid: pg_sys::Oid) -> bool {
    sys::ask(
        "SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[relid.into()],
    )
}

fn am_has(am: pg_sys::Oid, property: &str) -> bool {
    sys::ask(
        "SELECT pg_catalog.pg_indexam_has_property($1, $2)",
        &[am.into(), property.into()],
    )
}

fn may_create_in_tablespace(oid: pg_sys::Oid) -> bool {
    sys::ask(
        "SELECT pg_catalog.has_tablespace_privilege($1, 'CREATE')",
        &[oid.into()],
    )
}

/// The one raw statement in `sql`.
unsafe fn parse(sql: &CString) -> (*mut pg_sys::RawStmt, usize) {
    unsafe {
        let list = pgrx::PgList::<pg_sys::RawStmt>::from_pg(pg_sys::raw_parser(
            sql.as_ptr(),
            pg_sys::RawParseMode::RAW_PARSE_DEFAULT,
        ));
        let n = list.len();
        (list.get_ptr(0).unwrap_or(std::ptr::null_mut()), n)
    }
}

/// Check a CREATE INDEX statement as the caller, without building
/// anything, and write it with CONCURRENTLY and a name.
fn check_create(sql: &str) -> Checked {
    let csql = CString::new(sql).unwrap_or_default();
    let checked = sys::subtransaction(false, || {
        sys::capturing_position(|| unsafe { check_create_inner(sql, &csql) })
    });
    match checked {
        Ok(c) => c,
        Err(e) => {
            let position = sys::last_position();
            let hint = (position > 0).then(|| sys::hint_in("index_sql", e.hint.as_deref()));
            sys::raise_at(&e, sql, position, hint)
        }
    }
}

unsafe fn check_create_inner(sql: &str, csql: &CString) -> Checked {
    unsafe {
        let (raw, n) = parse(csql);
        if n != 1 {
            MigrateError::NotCreateIndex {
                found: format!("It has {n} statements."),
            }
            .report();
        }
        let node = (*raw).stmt;
        if (*node).type_ != pg_sys::NodeTag::T_IndexStmt {
            let tag = cstr(pg_sys::CreateCommandName(node)).unwrap_or_else(|| "other".into());
            MigrateError::NotCreateIndex {
                found: format!("It is a {tag} statement."),
            }
            .report();
        }
        let original = pg_sys::copyObjectImpl(node.cast()) as *mut pg_sys::IndexStmt;
        let stmt = node as *mut pg_sys::IndexStmt;
        let rv = (*stmt).relation;
        let relid = pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
            0,
            None,
            std::ptr::null_mut(),
        );
        let rel = PgRelation::with_lock(relid, pg_sys::NoLock as pg_sys::LOCKMODE);
        let (relkind, persistence, namespace) = {
            let form = rel.rd_rel;
            (
                (*form).relkind as u8,
                (*form).relpersistence as u8,
                (*form).relnamespace,
            )
        };
        let table_schema = rel.namespace().to_string();
        let table = rel.name().to_string();
        let display = qualified_display(&table_schema, &table);
        let partitioned = relkind == b'p';
        match relkind {
            b'r' | b'm' => {}
            b'p' if !(*rv).inh => MigrateError::CannotIndex {
                what: format!("ONLY the partitioned table {display}"),
                why: "An index ON ONLY a partitioned table stays invalid until each partition's index is attached to it: leave out ONLY, and the job builds each partition's index concurrently and attaches it.".into(),
            }
            .report(),
            b'p' => check_partitions(relid, &display, false),
            other => MigrateError::CannotIndex {
                what: format!("{} {display}", relkind_name(other)),
                why: "Indexes are built on tables and materialized views.".into(),
            }
            .report(),
        }
        if namespace == pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE)
            || pg_sys::IsCatalogRelationOid(relid)
        {
            MigrateError::CannotIndex {
                what: format!("system catalog {display}"),
                why: "pg_migrate builds indexes on user tables only.".into(),
            }
            .report();
        }
        if persistence == b't' {
            MigrateError::CannotIndex {
                what: format!("temporary table {display}"),
                why: "A temporary table exists only in the session that created it; the job's worker cannot see it. Index it in that session.".into(),
            }
            .report();
        }
        if !owns(relid) {
            MigrateError::NotTableOwner {
                relation: display.clone(),
                to: "index it",
            }
            .report();
        }

        // Access method and what it can do.
        let am_name = cstr((*stmt).accessMethod).unwrap_or_else(|| "btree".into());
        let am_c = CString::new(am_name.clone()).unwrap_or_default();
        let am = pg_sys::get_index_am_oid(am_c.as_ptr(), false);
        let params = pgrx::PgList::<pg_sys::IndexElem>::from_pg((*stmt).indexParams);
        let included = pgrx::PgList::<pg_sys::IndexElem>::from_pg((*stmt).indexIncludingParams);
        let refuse_am = |what: &'static str| -> ! {
            MigrateError::IndexAmUnsupported {
                am: am_name.clone(),
                what,
            }
            .report()
        };
        if (*stmt).unique && !am_has(am, "can_unique") {
            refuse_am("unique indexes");
        }
        if !included.is_empty() && !am_has(am, "can_include") {
            refuse_am("included columns");
        }
        if params.len() > 1 && !am_has(am, "can_multi_col") {
            refuse_am("multicolumn indexes");
        }

        // Expressions and the predicate, as CREATE INDEX analyses them.
        let transformed = transform(
            relid,
            pg_sys::copyObjectImpl(node.cast()) as *mut pg_sys::IndexStmt,
            csql,
        );
        let elems = pgrx::PgList::<pg_sys::IndexElem>::from_pg((*transformed).indexParams);
        let mut column_names: Vec<String> = Vec::new();
        for elem in elems.iter_ptr() {
            let attr_type = match cstr((*elem).name) {
                Some(column) => {
                    let c = CString::new(column.clone()).unwrap_or_default();
                    let attnum = pg_sys::get_attnum(relid, c.as_ptr());
                    if attnum == 0 {
                        MigrateError::NoSuchIndexColumn { column }.report();
                    }
                    if attnum < 0 {
                        MigrateError::CannotIndex {
                            what: format!("system column \"{column}\" of {display}"),
                            why: "PostgreSQL does not index system columns.".into(),
                        }
                        .report();
                    }
                    pg_sys::get_atttype(relid, attnum)
                }
                None => {
                    let expr = (*elem).expr;
                    if pg_sys::contain_mutable_functions_after_planning(expr.cast()) {
                        mutable("index expression");
                    }
                    pg_sys::exprType(expr)
                }
            };
            if !(*elem).collation.is_null() {
                pg_sys::get_collation_oid((*elem).collation, false);
            }
            pg_sys::ResolveOpClass((*elem).opclass, attr_type, am_c.as_ptr(), am);
            column_names.push(
                cstr((*elem).indexcolname)
                    .or_else(|| cstr((*elem).name))
                    .unwrap_or_else(|| "expr".into()),
            );
        }
        for elem in pgrx::PgList::<pg_sys::IndexElem>::from_pg((*transformed).indexIncludingParams)
            .iter_ptr()
        {
            let Some(column) = cstr((*elem).name) else {
                MigrateError::CannotIndex {
                    what: format!("an expression in INCLUDE on {display}"),
                    why: "PostgreSQL includes only plain columns.".into(),
                }
                .report()
            };
            let c = CString::new(column.clone()).unwrap_or_default();
            if pg_sys::get_attnum(relid, c.as_ptr()) <= 0 {
                MigrateError::NoSuchIndexColumn { column }.report();
            }
            column_names.push(column);
        }
        if !(*transformed).whereClause.is_null()
            && pg_sys::contain_mutable_functions_after_planning((*transformed).whereClause.cast())
        {
            mutable("index predicate");
        }
        if let Some(space) = cstr((*stmt).tableSpace) {
            let c = CString::new(space.clone()).unwrap_or_default();
            let oid = pg_sys::get_tablespace_oid(c.as_ptr(), false);
            if oid == pg_sys::GLOBALTABLESPACE_OID {
                pgrx::pg_sys::panic::ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    "only shared relations can be placed in pg_global tablespace",
                    "pg_migrate",
                )
                .set_hint("Leave out TABLESPACE, or name another tablespace.")
                .report(PgLogLevel::ERROR);
            }
            if !may_create_in_tablespace(oid) {
                pgrx::pg_sys::panic::ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    format!("permission denied for tablespace {space}"),
                    "pg_migrate",
                )
                .set_hint("The index would be created there; that needs CREATE on the tablespace.")
                .report(PgLogLevel::ERROR);
            }
        }

        // The index's name: given, or chosen as PostgreSQL would.
        let name = match cstr((*stmt).idxname) {
            Some(n) => n,
            None => {
                let addition = rules::name_addition(&rules::unique_column_names(&column_names));
                let t = CString::new(table.clone()).unwrap_or_default();
                let a = CString::new(addition).unwrap_or_default();
                cstr(pg_sys::ChooseRelationName(
                    t.as_ptr(),
                    a.as_ptr(),
                    c"idx".as_ptr(),
                    namespace,
                    false,
                ))
                .unwrap_or_default()
            }
        };
        let cname = CString::new(name.clone()).unwrap_or_default();
        if pg_sys::get_relname_relid(cname.as_ptr(), namespace) != pg_sys::Oid::INVALID
            && !(*stmt).if_not_exists
        {
            MigrateError::IndexExists { name }.report();
        }

        // Written again: every clause before the table from the parse tree,
        // CONCURRENTLY and the name always there, the rest as the user wrote
        // it.  Parsed once more, it must say exactly what the user said.
        let start = (*rv).location.max(0) as usize;
        let end = if (*raw).stmt_len > 0 {
            ((*raw).stmt_location + (*raw).stmt_len) as usize
        } else {
            sql.len()
        };
        let rest = sql.get(start..end.min(sql.len())).unwrap_or("");
        // On a partitioned table: the index ON ONLY it, without
        // CONCURRENTLY (it has no rows of its own).
        let statement = format!(
            "{}{}",
            rules::create_prefix(
                (*stmt).unique,
                !partitioned,
                (*stmt).if_not_exists,
                &name,
                !(*rv).inh || partitioned
            ),
            rest.trim_end()
        );
        let again = CString::new(statement.clone()).unwrap_or_default();
        let (raw2, n2) = parse(&again);
        (*original).concurrent = !partitioned;
        if partitioned {
            (*(*original).relation).inh = false;
        }
        (*original).idxname = pg_sys::pstrdup(cname.as_ptr());
        if n2 != 1 || !pg_sys::equal(original.cast(), (*raw2).stmt.cast()) {
            pgrx::error!(
                "pg_migrate: could not write the statement with CONCURRENTLY: {statement}"
            );
        }
        Checked {
            relid,
            table_schema,
            table,
            name,
            if_not_exists: (*stmt).if_not_exists,
            statement,
            partitioned,
        }
    }
}

/// A partitioned table's index is built (dropped, rebuilt) on every
/// partition as its owner: every partition must be one the caller may
/// index, and for a build one that can have an index (not a foreign table).
fn check_partitions(relid: pg_sys::Oid, display: &str, foreign_ok: bool) {
    let parts: Vec<(String, String, bool)> = Spi::connect(|c| {
        let rows = c.select(
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind::text,
                    pg_catalog.pg_has_role(c.relowner, 'USAGE')
               FROM pg_catalog.pg_partition_tree($1) t
               JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.relid
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
              WHERE t.level OPERATOR(pg_catalog.>) 0
              ORDER BY t.level, c.relname",
            None,
            &[relid.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<bool>(3)?.unwrap_or(false),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .unwrap_or_else(|e| pgrx::error!("pg_migrate: reading the partitions of {display}: {e}"));
    for (part, kind, owned) in parts {
        if kind == "f" && !foreign_ok {
            MigrateError::CannotIndex {
                what: format!("partitioned table {display}, whose partition {part} is a foreign table,"),
                why: "A foreign table has no index, so the index of the partitioned table could never become valid. Create that index with a plain CREATE INDEX, or detach the foreign partition first.".into(),
            }
            .report();
        }
        if !owned {
            MigrateError::NotTableOwner {
                relation: format!("{part} (a partition of {display})"),
                to: "index it",
            }
            .report();
        }
    }
}

fn mutable(what: &str) -> ! {
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
        format!("functions in {what} must be marked IMMUTABLE"),
        "pg_migrate",
    )
    .report(PgLogLevel::ERROR);
    unreachable!()
}

unsafe fn transform(
    relid: pg_sys::Oid,
    stmt: *mut pg_sys::IndexStmt,
    sql: &CString,
) -> *mut pg_sys::IndexStmt {
    unsafe { crate::ffi::transformIndexStmt(relid, stmt, sql.as_ptr()) }
}

fn check_common_target() {
    unsafe {
        pg_sys::PreventCommandIfReadOnly(c"an index job".as_ptr());
        pg_sys::PreventCommandDuringRecovery(c"an index job".as_ptr());
    }
}

/// Queue the job.
#[allow(clippy::too_many_arguments)]
fn queue(
    action: IndexAction,
    relid: pg_sys::Oid,
    table_schema: &str,
    table: &str,
    index_schema: &str,
    index_name: &str,
    index_oid: Option<pg_sys::Oid>,
    statement: String,
    if_not_exists: bool,
    schedule: Option<String>,
    partitioned: bool,
    c: Common,
) -> i64 {
    let spec = IndexSpec {
        action,
        statement: if action == IndexAction::Create {
            statement.clone()
        } else {
            String::new()
        },
        schema: index_schema.to_string(),
        name: index_name.to_string(),
        if_not_exists,
        max_retries: c.max_retries,
        retry_delay_ms: c.retry_delay_ms,
        max_wait_ms: c.max_wait_ms,
        window: c.window,
        schedule,
        settings: c.settings,
        run_now: false,
        partitioned,
    };
    let owner = unsafe { pg_sys::GetUserId() };
    let role = current_role_name();
    let link_allowed = c.migration.is_none() || may_write_history();
    let index = format!("{}.{}", quote_ident(index_schema), quote_ident(index_name));
    let description = match action {
        IndexAction::Create => format!("index build {index} by pg_migrate"),
        IndexAction::Drop => format!("drop of index {index} by pg_migrate"),
        IndexAction::Reindex => format!("rebuild of index {index} by pg_migrate"),
    };
    let id = as_owner(|| {
        let run = start_linked_run(c.migration.as_ref(), link_allowed, &description, &role);
        jobs::insert(NewJob {
            kind: facts::of(action).name,
            relid,
            relation: &qualified_display(table_schema, table),
            owner,
            spec: serde_json::to_value(&spec).expect("spec serialises"),
            command: &statement,
            batch_size: None,
            run_at: c.run_at,
            migration: run,
            index_oid,
            gates: &c.gates,
        })
    });
    announce(id, true);
    id
}

/// Queue a CREATE INDEX CONCURRENTLY: `index_sql` is any CREATE [UNIQUE]
/// INDEX statement; CONCURRENTLY is added, and a name when it has none.
/// Checked now as the caller; a background worker runs it, at `run_at` or
/// inside its window, and cleans up and retries when it fails.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn migrate_create_index(
    index_sql: Option<&str>,
    run_at: default!(Option<TimestampWithTimeZone>, NULL),
    window_start: default!(Option<&str>, NULL),
    window_length: default!(Option<Interval>, NULL),
    max_wait: default!(Option<Interval>, NULL),
    max_retries: default!(Option<i32>, 3),
    retry_delay: default!(Option<Interval>, "'1 min'"),
    maintenance_work_mem: default!(Option<&str>, NULL),
    migration: default!(Option<Vec<Option<String>>>, NULL),
    after_jobs: default!(Option<Vec<Option<i64>>>, NULL),
    after_migration: default!(Option<Vec<Option<String>>>, NULL),
) -> i64 {
    let sql = index_sql
        .ok_or(MigrateError::NullArgument { arg: "index_sql" })
        .or_report();
    if sql.trim().is_empty() {
        MigrateError::EmptyArgument { arg: "index_sql" }.report();
    }
    let c = common(
        run_at,
        window_start,
        window_length,
        max_wait,
        max_retries,
        retry_delay,
        maintenance_work_mem,
        migration,
        after_jobs,
        after_migration,
    );
    queue_create(sql, c)
}

/// An index a drop or reindex job may work on: its table, schema, name.
struct IndexTarget {
    table: pg_sys::Oid,
    table_schema: String,
    table_name: String,
    schema: String,
    name: String,
    /// A partitioned index: the index of a partitioned table.
    partitioned: bool,
}

fn check_index(index: &PgRelation, to: &'static str) -> IndexTarget {
    let relid = index.oid();
    let (relkind, namespace) =
        unsafe { ((*index.rd_rel).relkind as u8, (*index.rd_rel).relnamespace) };
    let display = qualified_display(index.namespace(), index.name());
    match relkind {
        b'i' | b'I' => {}
        other => MigrateError::NotAnIndex {
            relation: display,
            kind: relkind_name(other),
        }
        .report(),
    }
    if namespace == pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE)
        || unsafe { pg_sys::IsCatalogRelationOid(relid) }
    {
        MigrateError::CannotIndex {
            what: format!("system catalog index {display}"),
            why: "pg_migrate works on indexes of user tables only.".into(),
        }
        .report();
    }
    let table = crate::sys::pinned(|| {
        Spi::connect(|c| {
            c.select(
                "SELECT i.indrelid, n.nspname::text, t.relname::text
               FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
              WHERE i.indexrelid = $1",
                None,
                &[relid.into()],
            )
            .map(|rows| {
                let r = rows.first();
                (
                    r.get::<pg_sys::Oid>(1).ok().flatten(),
                    r.get::<String>(2).ok().flatten(),
                    r.get::<String>(3).ok().flatten(),
                )
            })
        })
    })
    .unwrap_or_else(|e| pgrx::error!("pg_migrate: reading the index: {e}"));
    let (Some(table), Some(table_schema), Some(table_name)) = table else {
        pgrx::error!("pg_migrate: index {display} has no table");
    };
    if !owns(table) {
        MigrateError::NotTableOwner {
            relation: qualified_display(&table_schema, &table_name),
            to,
        }
        .report();
    }
    let partitioned = relkind == b'I';
    if partitioned {
        check_partitions(table, &qualified_display(&table_schema, &table_name), true);
    }
    IndexTarget {
        table,
        table_schema,
        table_name,
        schema: index.namespace().to_string(),
        name: index.name().to_string(),
        partitioned,
    }
}

/// Queue a DROP INDEX CONCURRENTLY of `index`.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn migrate_drop_index(
    index: Option<PgRelation>,
    run_at: default!(Option<TimestampWithTimeZone>, NULL),
    window_start: default!(Option<&str>, NULL),
    window_length: default!(Option<Interval>, NULL),
    max_wait: default!(Option<Interval>, NULL),
    max_retries: default!(Option<i32>, 3),
    retry_delay: default!(Option<Interval>, "'1 min'"),
    migration: default!(Option<Vec<Option<String>>>, NULL),
    after_jobs: default!(Option<Vec<Option<i64>>>, NULL),
    after_migration: default!(Option<Vec<Option<String>>>, NULL),
) -> i64 {
    let index = index
        .ok_or(MigrateError::NullArgument { arg: "index" })
        .or_report();
    let c = common(
        run_at,
        window_start,
        window_length,
        max_wait,
        max_retries,
        retry_delay,
        None,
        migration,
        after_jobs,
        after_migration,
    );
    check_common_target();
    let t = check_index(&index, "drop its indexes");
    // PostgreSQL 15 drops a partitioned index only with ACCESS EXCLUSIVE
    // on the table and every partition: never wait long for those.
    let mut c = c;
    if t.partitioned && c.max_wait_ms == 0 {
        c.max_wait_ms = rules::PARTITIONED_DROP_WAIT_MS;
    }
    let constraint = crate::sys::pinned(|| {
        Spi::connect(|c| {
            c.select(
                "SELECT format('%I', con.conname), format('%I.%I', n.nspname, t.relname)
               FROM pg_catalog.pg_constraint con
               JOIN pg_catalog.pg_class t ON t.oid = con.conrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
              WHERE con.conindid = $1
              ORDER BY con.oid LIMIT 1",
                None,
                &[index.oid().into()],
            )
            .map(|rows| {
                if rows.is_empty() {
                    None
                } else {
                    let r = rows.first();
                    Some((
                        r.get::<String>(1).ok().flatten().unwrap_or_default(),
                        r.get::<String>(2).ok().flatten().unwrap_or_default(),
                    ))
                }
            })
        })
    })
    .unwrap_or_else(|e| pgrx::error!("pg_migrate: reading constraints: {e}"));
    if let Some((constraint, table)) = constraint {
        MigrateError::IndexOfConstraint {
            index: qualified_display(&t.schema, &t.name),
            constraint,
            table,
        }
        .report();
    }
    let statement = rules::drop_statement(&t.schema, &t.name, t.partitioned);
    queue(
        IndexAction::Drop,
        t.table,
        &t.table_schema,
        &t.table_name,
        &t.schema,
        &t.name,
        Some(index.oid()),
        statement,
        false,
        None,
        t.partitioned,
        c,
    )
}

/// Queue a REINDEX INDEX CONCURRENTLY of `index`; with `schedule` (cron),
/// again at every match.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn migrate_reindex(
    index: Option<PgRelation>,
    run_at: default!(Option<TimestampWithTimeZone>, NULL),
    window_start: default!(Option<&str>, NULL),
    window_length: default!(Option<Interval>, NULL),
    schedule: default!(Option<&str>, NULL),
    max_wait: default!(Option<Interval>, NULL),
    max_retries: default!(Option<i32>, 3),
    retry_delay: default!(Option<Interval>, "'1 min'"),
    maintenance_work_mem: default!(Option<&str>, NULL),
    migration: default!(Option<Vec<Option<String>>>, NULL),
    after_jobs: default!(Option<Vec<Option<i64>>>, NULL),
    after_migration: default!(Option<Vec<Option<String>>>, NULL),
) -> i64 {
    let index = index
        .ok_or(MigrateError::NullArgument { arg: "index" })
        .or_report();
    let mut c = common(
        run_at,
        window_start,
        window_length,
        max_wait,
        max_retries,
        retry_delay,
        maintenance_work_mem,
        migration,
        after_jobs,
        after_migration,
    );
    let cron = schedule.map(|s| match Cron::parse(s) {
        Ok(cron) => cron,
        Err(e) => MigrateError::InvalidValue {
            arg: "schedule",
            value: s.to_string(),
            allowed: "a cron expression of five fields, such as '0 3 * * 0' (Sundays at 03:00)",
        }
        .report_with_detail(e.why),
    });
    check_common_target();
    let t = check_index(&index, "rebuild its indexes");
    let exclusion = crate::sys::pinned(|| {
        Spi::connect(|c| {
            c.select(
                "SELECT indisexclusion FROM pg_catalog.pg_index WHERE indexrelid = $1",
                None,
                &[index.oid().into()],
            )?
            .first()
            .get_one::<bool>()
        })
    })
    .ok()
    .flatten()
    .unwrap_or(false);
    if exclusion {
        MigrateError::CannotIndex {
            what: format!(
                "exclusion constraint index {}",
                qualified_display(&t.schema, &t.name)
            ),
            why: "PostgreSQL does not rebuild indexes of exclusion constraints concurrently."
                .into(),
        }
        .report();
    }
    if let (Some(cron), None) = (&cron, c.run_at) {
        let tz = sys::setting("TimeZone");
        c.run_at = crate::runner::pace::next_match(cron, &tz);
    }
    let statement = rules::statement_for(IndexAction::Reindex, &t.schema, &t.name, "");
    queue(
        IndexAction::Reindex,
        t.table,
        &t.table_schema,
        &t.table_name,
        &t.schema,
        &t.name,
        Some(index.oid()),
        statement,
        false,
        schedule.map(String::from),
        t.partitioned,
        c,
    )
}
