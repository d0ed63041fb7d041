//! migrate_analyze: what each statement of a migration script locks, and
//! whether it rewrites or scans a table, from PostgreSQL's own parser and
//! the live catalog, without executing anything.  The lock level of ALTER
//! TABLE is PostgreSQL's own (AlterTableGetLockLevel); rewrites of a type
//! change are decided by the same coercion and simplification PostgreSQL
//! applies; SET NOT NULL is checked against the valid CHECK constraints
//! with PostgreSQL's own predicate prover.

use crate::engine::keyset::display_ident as quote_ident;
use crate::engine::locks::{self, Effect, LockMode, Rates, Risk};
use crate::error::MigrateError;
use crate::sys;
use pgrx::prelude::*;
use pgrx::PgList;
use std::collections::HashMap;
use std::ffi::{c_void, CStr, CString};

use pg_sys::AlterTableType as At;
use pg_sys::ConstrType as Ct;
use pg_sys::NodeTag as T;
use pg_sys::ObjectType as Ob;

/// Longest script accepted (bytes).
pub const MAX_SCRIPT: usize = 10 * 1024 * 1024;

use crate::ffi::{find_all_inheritors, get_default_partition_oid};

// ---- small node helpers ----------------------------------------------------

pub(crate) fn cstr(p: *const std::ffi::c_char) -> Option<String> {
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

unsafe fn is(node: *mut pg_sys::Node, tag: T) -> bool {
    !node.is_null() && unsafe { (*node).type_ } == tag
}

/// The text of a String (Value before PostgreSQL 15) node.
unsafe fn str_val(node: *mut pg_sys::Node) -> String {
    #[cfg(any(feature = "pg13", feature = "pg14"))]
    unsafe {
        cstr((*(node as *mut pg_sys::Value)).val.str_).unwrap_or_default()
    }
    #[cfg(not(any(feature = "pg13", feature = "pg14")))]
    unsafe {
        cstr((*(node as *mut pg_sys::String)).sval).unwrap_or_default()
    }
}

unsafe fn nodes<N>(list: *mut pg_sys::List) -> Vec<*mut N> {
    unsafe { PgList::<N>::from_pg(list).iter_ptr().collect() }
}

unsafe fn names(list: *mut pg_sys::List) -> Vec<String> {
    unsafe {
        nodes::<pg_sys::Node>(list)
            .into_iter()
            .map(|n| str_val(n))
            .collect()
    }
}

unsafe fn children(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    unsafe {
        let list = find_all_inheritors(relid, pg_sys::NoLock as i32, std::ptr::null_mut());
        PgList::<pg_sys::Oid>::from_pg(list)
            .iter_oid()
            .filter(|o| *o != relid)
            .collect()
    }
}

fn relkind(relid: pg_sys::Oid) -> u8 {
    unsafe { pg_sys::get_rel_relkind(relid) as u8 }
}

fn has_storage(kind: u8) -> bool {
    matches!(kind, b'r' | b'm' | b't' | b'S')
}

fn rel_display(relid: pg_sys::Oid) -> String {
    unsafe {
        let name = cstr(pg_sys::get_rel_name(relid)).unwrap_or_default();
        let ns = pg_sys::get_rel_namespace(relid);
        if pg_sys::RelationIsVisible(relid) {
            quote_ident(&name)
        } else {
            let schema = cstr(pg_sys::get_namespace_name(ns)).unwrap_or_default();
            format!("{}.{}", quote_ident(&schema), quote_ident(&name))
        }
    }
}

fn rel_name(relid: pg_sys::Oid) -> String {
    cstr(unsafe { pg_sys::get_rel_name(relid) }).unwrap_or_default()
}

// ---- what a statement does ----------------------------------------------

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
    fn lock(&mut self, relid: pg_sys::Oid, mode: LockMode) -> &mut Target {
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

    fn lock_new(&mut self, name: String, mode: LockMode, statement: usize) {
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

enum Found {
    Oid(pg_sys::Oid),
    New(String, usize),
    Missing,
}

impl Script<'_> {
    /// Look a relation up without locking it.
    unsafe fn find(&self, rv: *mut pg_sys::RangeVar) -> Found {
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
    unsafe fn need(&self, rv: *mut pg_sys::RangeVar) -> Found {
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
    unsafe fn not_an_index(&self, rv: *mut pg_sys::RangeVar) -> ! {
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
    unsafe fn lock_rv(
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

// ---- relations a query reads --------------------------------------------

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
unsafe fn read_relations(node: *mut pg_sys::Node) -> Vec<*mut pg_sys::RangeVar> {
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

// ---- catalog facts ----------------------------------------------------------

/// The referenced table of a foreign key constraint, by name.
fn constraint(relid: pg_sys::Oid, name: &str) -> Option<(u8, bool, pg_sys::Oid)> {
    crate::sys::pinned(|| {
        Spi::connect(|c| {
            let r = c.select(
                "SELECT contype::text, convalidated, confrelid FROM pg_catalog.pg_constraint
              WHERE conrelid = $1 AND conname = $2",
                None,
                &[relid.into(), name.into()],
            )?;
            if r.is_empty() {
                return Ok::<_, pgrx::spi::Error>(None);
            }
            let row = r.first();
            Ok(Some((
                row.get::<String>(1)?
                    .unwrap_or_default()
                    .bytes()
                    .next()
                    .unwrap_or(b'?'),
                row.get::<bool>(2)?.unwrap_or(true),
                row.get::<pg_sys::Oid>(3)?.unwrap_or(pg_sys::Oid::INVALID),
            )))
        })
    })
    .ok()
    .flatten()
}

/// Tables the foreign keys of `relid` point at.
fn referenced_tables(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    oids(
        "SELECT DISTINCT confrelid FROM pg_catalog.pg_constraint WHERE conrelid = $1 AND contype = 'f' AND confrelid <> $1",
        &[relid.into()],
    )
}

/// Tables whose foreign keys point at `relid`.
fn referencing_tables(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    oids(
        "SELECT DISTINCT conrelid FROM pg_catalog.pg_constraint WHERE confrelid = $1 AND contype = 'f' AND conrelid <> $1",
        &[relid.into()],
    )
}

/// The tables on the other side of the foreign keys that use column
/// `attnum` of `relid`, as referencing or referenced column.
fn foreign_key_partners(relid: pg_sys::Oid, attnum: i16) -> Vec<pg_sys::Oid> {
    oids(
        "SELECT DISTINCT CASE WHEN conrelid = $1 THEN confrelid ELSE conrelid END
               FROM pg_catalog.pg_constraint
              WHERE contype = 'f' AND conrelid <> confrelid
                AND ((conrelid = $1 AND $2 = ANY (conkey)) OR (confrelid = $1 AND $2 = ANY (confkey)))",
        &[relid.into(), attnum.into()],
    )
}

/// Sequences the default of column `attnum` of `relid` uses.
fn default_sequences(relid: pg_sys::Oid, attnum: i16) -> Vec<pg_sys::Oid> {
    oids(
        "SELECT DISTINCT d.refobjid FROM pg_catalog.pg_attrdef ad
               JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
                    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
               JOIN pg_catalog.pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
              WHERE ad.adrelid = $1 AND ad.adnum = $2",
        &[relid.into(), attnum.into()],
    )
}

/// Is `tablespace` the one `relid` is in already (then SET TABLESPACE
/// does nothing)?
fn same_tablespace(relid: pg_sys::Oid, tablespace: &str) -> bool {
    sys::ask(
        "SELECT coalesce(nullif(c.reltablespace, 0), d.dattablespace) = t.oid
           FROM pg_catalog.pg_class c, pg_catalog.pg_database d, pg_catalog.pg_tablespace t
          WHERE c.oid = $1 AND d.datname = pg_catalog.current_database() AND t.spcname = $2",
        &[relid.into(), tablespace.into()],
    )
}

/// Is `method` the table's access method already?
fn same_access_method(relid: pg_sys::Oid, method: &str) -> bool {
    sys::ask(
        "SELECT c.relam OPERATOR(pg_catalog.=) a.oid
           FROM pg_catalog.pg_class c, pg_catalog.pg_am a
          WHERE c.oid OPERATOR(pg_catalog.=) $1 AND a.amname OPERATOR(pg_catalog.=) $2",
        &[relid.into(), method.into()],
    )
}

/// Sequences a raw default names as `nextval('name')` (or currval,
/// setval): looked at when the default is stored.
unsafe fn sequences_named_in(node: *mut pg_sys::Node) -> Vec<*mut pg_sys::RangeVar> {
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
        #[cfg(any(feature = "pg13", feature = "pg14"))]
        {
            if (*c).val.type_ == T::T_String {
                return cstr((*c).val.val.str_);
            }
            None
        }
        #[cfg(not(any(feature = "pg13", feature = "pg14")))]
        {
            if (*c).isnull || (*c).val.node.type_ != T::T_String {
                return None;
            }
            cstr((*c).val.sval.sval)
        }
    }
}

/// Sequences owned by columns of `relid`.
fn owned_sequences(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    oids(
        "SELECT d.objid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class s ON s.oid = d.objid
          WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
            AND d.refobjid = $1 AND d.deptype IN ('a', 'i') AND s.relkind = 'S'",
        &[relid.into()],
    )
}

fn oids(query: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<pg_sys::Oid> {
    crate::sys::pinned(|| {
        Spi::connect(|c| {
            let mut out = vec![];
            for row in c.select(query, None, args)? {
                if let Some(o) = row.get::<pg_sys::Oid>(1)? {
                    out.push(o);
                }
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
    })
    .unwrap_or_default()
}

/// Do the valid CHECK constraints of `relid` prove `column IS NOT NULL`?
/// The same test PostgreSQL makes before it skips the scan of SET NOT NULL.
unsafe fn not_null_proven(relid: pg_sys::Oid, attnum: i16) -> bool {
    unsafe {
        let exprs: Vec<String> = crate::sys::pinned(|| Spi::connect(|c| {
            let mut out = vec![];
            for row in c.select(
                "SELECT conbin::text FROM pg_catalog.pg_constraint WHERE conrelid = $1 AND contype = 'c' AND convalidated",
                None,
                &[relid.into()],
            )? {
                if let Some(s) = row.get::<String>(1)? {
                    out.push(s);
                }
            }
            Ok::<_, pgrx::spi::Error>(out)
        }))
        .unwrap_or_default();
        if exprs.is_empty() {
            return false;
        }
        let (mut typ, mut typmod, mut coll) = (pg_sys::Oid::INVALID, 0i32, pg_sys::Oid::INVALID);
        pg_sys::get_atttypetypmodcoll(relid, attnum, &mut typ, &mut typmod, &mut coll);
        let mut existing: *mut pg_sys::List = std::ptr::null_mut();
        for e in exprs {
            let c = CString::new(e).unwrap_or_default();
            let node = pg_sys::stringToNode(c.as_ptr()) as *mut pg_sys::Node;
            let node = pg_sys::eval_const_expressions(std::ptr::null_mut(), node);
            let node = pg_sys::canonicalize_qual(node as *mut pg_sys::Expr, true);
            existing = pg_sys::list_concat(existing, pg_sys::make_ands_implicit(node));
        }
        let var = pg_sys::makeVar(1, attnum, typ, typmod, coll, 0);
        let test =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::NullTest>()) as *mut pg_sys::NullTest;
        (*test).xpr.type_ = T::T_NullTest;
        (*test).arg = var as *mut pg_sys::Expr;
        (*test).nulltesttype = pg_sys::NullTestType::IS_NOT_NULL;
        (*test).argisrow = false;
        (*test).location = -1;
        let tests = pg_sys::lappend(std::ptr::null_mut(), test as *mut c_void);
        pg_sys::predicate_implied_by(tests, existing, false)
    }
}

/// Does a column change need a rewrite?  PostgreSQL's own rule
/// (ATColumnChangeRequiresRewrite) over the simplified coercion.
unsafe fn change_rewrites(mut expr: *mut pg_sys::Node, attnum: i16) -> bool {
    unsafe {
        loop {
            if expr.is_null() {
                return true;
            }
            match (*expr).type_ {
                T::T_Var => return (*(expr as *mut pg_sys::Var)).varattno != attnum,
                T::T_RelabelType => expr = (*(expr as *mut pg_sys::RelabelType)).arg as _,
                T::T_CoerceToDomain => {
                    let d = expr as *mut pg_sys::CoerceToDomain;
                    if pg_sys::DomainHasConstraints((*d).resulttype) {
                        return true;
                    }
                    expr = (*d).arg as _;
                }
                T::T_FuncExpr => {
                    let f = expr as *mut pg_sys::FuncExpr;
                    let id = u32::from((*f).funcid);
                    if id == pg_sys::F_TIMESTAMPTZ_TIMESTAMP
                        || id == pg_sys::F_TIMESTAMP_TIMESTAMPTZ
                    {
                        if pg_sys::TimestampTimestampTzRequiresRewrite() {
                            return true;
                        }
                        expr = PgList::<pg_sys::Node>::from_pg((*f).args)
                            .get_ptr(0)
                            .unwrap_or(std::ptr::null_mut());
                    } else {
                        return true;
                    }
                }
                _ => return true,
            }
        }
    }
}

fn column_missing(column: &str, relid: pg_sys::Oid) -> ! {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
        format!(
            "column \"{column}\" of relation \"{}\" does not exist",
            rel_name(relid)
        ),
        "pg_migrate",
    )
    .report(PgLogLevel::ERROR);
    unreachable!()
}

use pgrx::pg_sys::panic::ErrorReport;

unsafe fn attnum_of(relid: pg_sys::Oid, column: &str) -> i16 {
    let c = CString::new(column).unwrap_or_default();
    let n = unsafe { pg_sys::get_attnum(relid, c.as_ptr()) };
    if n <= 0 {
        column_missing(column, relid)
    }
    n
}

fn column_not_null(relid: pg_sys::Oid, attnum: i16) -> bool {
    sys::ask(
        "SELECT attnotnull FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum = $2",
        &[relid.into(), attnum.into()],
    )
}

const SERIALS: [&str; 6] = [
    "serial",
    "serial4",
    "bigserial",
    "serial8",
    "smallserial",
    "serial2",
];

/// What ADD COLUMN does to a table with storage.
struct NewColumn {
    rewrites: bool,
    scans: bool,
    default: Option<String>,
    volatile: bool,
    not_null: bool,
    references: Vec<*mut pg_sys::RangeVar>,
    type_text: String,
}

unsafe fn new_column(script: &Script, cd: *mut pg_sys::ColumnDef) -> NewColumn {
    unsafe {
        let tn = (*cd).typeName;
        let type_names = names((*tn).names);
        let serial = type_names.len() == 1 && SERIALS.contains(&type_names[0].as_str());
        let type_text = cstr(pg_sys::TypeNameToString(tn)).unwrap_or_default();
        let (mut typid, mut typmod) = (pg_sys::Oid::INVALID, -1i32);
        let mut type_text = type_text;
        if !serial {
            pg_sys::typenameTypeIdAndMod(std::ptr::null_mut(), tn, &mut typid, &mut typmod);
            type_text = cstr(pg_sys::format_type_with_typemod(typid, typmod)).unwrap_or(type_text);
        }
        let mut out = NewColumn {
            rewrites: serial,
            scans: false,
            default: None,
            volatile: serial,
            not_null: (*cd).is_not_null,
            references: vec![],
            type_text,
        };
        let mut checks = false;
        let mut raw_default: *mut pg_sys::Node = (*cd).raw_default;
        for c in nodes::<pg_sys::Constraint>((*cd).constraints) {
            match (*c).contype {
                Ct::CONSTR_DEFAULT => raw_default = (*c).raw_expr,
                Ct::CONSTR_IDENTITY | Ct::CONSTR_GENERATED => {
                    out.rewrites = true;
                    out.volatile = true;
                }
                Ct::CONSTR_NOTNULL => out.not_null = true,
                Ct::CONSTR_CHECK | Ct::CONSTR_PRIMARY | Ct::CONSTR_UNIQUE => checks = true,
                Ct::CONSTR_FOREIGN => {
                    checks = true;
                    out.references.push((*c).pktable);
                }
                _ => {}
            }
        }
        if !raw_default.is_null() && !serial {
            let pstate = pg_sys::make_parsestate(std::ptr::null_mut());
            (*pstate).p_sourcetext = CString::new(script.sql).unwrap_or_default().into_raw();
            let name = CString::new(cstr((*cd).colname).unwrap_or_default()).unwrap_or_default();
            let cooked = pg_sys::cookDefault(pstate, raw_default, typid, typmod, name.as_ptr(), 0);
            out.default = cstr(pg_sys::deparse_expression(
                cooked,
                std::ptr::null_mut(),
                false,
                false,
            ));
            if pg_sys::contain_volatile_functions(cooked) {
                out.rewrites = true;
                out.volatile = true;
            }
        }
        if typid != pg_sys::Oid::INVALID && pg_sys::DomainHasConstraints(typid) {
            out.rewrites = true;
        }
        out.scans = !out.rewrites && (checks || (out.not_null && raw_default.is_null() && !serial));
        out
    }
}

// ---- statements ---------------------------------------------------------------

use crate::error::literal as lit;

#[allow(clippy::collapsible_match)]
unsafe fn alter_table(
    script: &Script,
    a: &mut Analysis,
    stmt: *mut pg_sys::AlterTableStmt,
    text: &str,
) {
    unsafe {
        let rv = (*stmt).relation;
        let relid = match if (*stmt).missing_ok {
            script.find(rv)
        } else {
            script.need(rv)
        } {
            Found::Oid(o) => o,
            Found::New(name, n) => {
                a.lock_new(name, LockMode::AccessExclusive, n);
                return;
            }
            Found::Missing => {
                a.notes
                    .push("The relation does not exist: IF EXISTS makes it a no-op.".into());
                return;
            }
        };
        let level = pg_sys::AlterTableGetLockLevel((*stmt).cmds);
        let mode = LockMode::from_level(level).unwrap_or(LockMode::AccessExclusive);
        let kind = relkind(relid);
        let storage = has_storage(kind);
        let table = rel_display(relid);
        let table_name = rel_name(relid);
        a.lock(relid, mode);
        let kids = if (*rv).inh { children(relid) } else { vec![] };
        let mut rewrites = false;
        let mut scans = false;
        let mut recurse = false;
        for cmd in nodes::<pg_sys::AlterTableCmd>((*stmt).cmds) {
            let name = cstr((*cmd).name).unwrap_or_default();
            let def = (*cmd).def;
            match (*cmd).subtype {
                At::AT_AddColumn => {
                    recurse = true;
                    if is(def, T::T_ColumnDef) {
                        let cd = def as *mut pg_sys::ColumnDef;
                        let nc = new_column(script, cd);
                        for c in nodes::<pg_sys::Constraint>((*cd).constraints) {
                            if (*c).contype == Ct::CONSTR_DEFAULT {
                                for seq in sequences_named_in((*c).raw_expr) {
                                    script.lock_rv(a, seq, LockMode::AccessShare, false, true);
                                }
                            }
                        }
                        for r in &nc.references {
                            script.lock_rv(a, *r, LockMode::ShareRowExclusive, false, false);
                        }
                        let partitioned = kind == b'p';
                        if storage || partitioned {
                            rewrites |= nc.rewrites;
                            scans |= nc.scans;
                        }
                        let col = cstr((*cd).colname).unwrap_or_default();
                        if nc.rewrites {
                            a.recipe.push(locks::recipe_add_column(
                                &table,
                                &table,
                                &col,
                                &nc.type_text,
                                nc.default.as_deref(),
                                nc.not_null,
                                &table_name,
                            ));
                        } else if nc.scans && nc.not_null {
                            a.recipe.push(locks::recipe_add_column(
                                &table,
                                &table,
                                &col,
                                &nc.type_text,
                                None,
                                true,
                                &table_name,
                            ));
                        }
                    }
                }
                At::AT_AlterColumnType => {
                    recurse = true;
                    let cd = def as *mut pg_sys::ColumnDef;
                    let attnum = attnum_of(relid, &name);
                    // Its default is cooked again (the sequences it names
                    // are looked at), and foreign keys over the column are
                    // dropped and added again on both sides.
                    for seq in default_sequences(relid, attnum) {
                        a.lock(seq, LockMode::AccessShare);
                    }
                    for other in foreign_key_partners(relid, attnum) {
                        a.lock(other, LockMode::AccessExclusive).why =
                            Some("the other side of a foreign key over the column: the constraint is dropped and added again".into());
                    }
                    let using = (*cd).raw_default;
                    let plain = using.is_null() || is_column(using, &name);
                    let (mut nt, mut nm) = (pg_sys::Oid::INVALID, -1i32);
                    pg_sys::typenameTypeIdAndMod(
                        std::ptr::null_mut(),
                        (*cd).typeName,
                        &mut nt,
                        &mut nm,
                    );
                    let tn = cstr(pg_sys::format_type_with_typemod(nt, nm)).unwrap_or_default();
                    let r = if plain {
                        let (mut ot, mut om, mut oc) =
                            (pg_sys::Oid::INVALID, 0i32, pg_sys::Oid::INVALID);
                        pg_sys::get_atttypetypmodcoll(relid, attnum, &mut ot, &mut om, &mut oc);
                        let var = pg_sys::makeVar(1, attnum, ot, om, oc, 0) as *mut pg_sys::Node;
                        let coerced = pg_sys::coerce_to_target_type(
                            std::ptr::null_mut(),
                            var,
                            ot,
                            nt,
                            nm,
                            pg_sys::CoercionContext::COERCION_ASSIGNMENT,
                            pg_sys::CoercionForm::COERCE_IMPLICIT_CAST,
                            -1,
                        );
                        if coerced.is_null() {
                            sys::raise_at(
                                &sys::Caught {
                                    sqlstate: "42804".into(),
                                    message: format!("column \"{name}\" cannot be cast automatically to type {tn}"),
                                    detail: Some(format!("Statement {} of the script.", script.number)),
                                    hint: None,
                                },
                                script.sql,
                                (*cd).location + 1,
                                Some(format!("You might need to specify \"USING {}::{tn}\".", quote_ident(&name))),
                            )
                        }
                        let planned = pg_sys::expression_planner(coerced as *mut pg_sys::Expr);
                        change_rewrites(planned as *mut pg_sys::Node, attnum)
                    } else {
                        true
                    };
                    if (storage || kind == b'p') && r {
                        rewrites = true;
                        a.recipe
                            .push(locks::recipe_change_type(&table, &table, &name, &tn));
                    }
                }
                At::AT_SetNotNull => {
                    recurse = true;
                    let attnum = attnum_of(relid, &name);
                    if !column_not_null(relid, attnum) {
                        let mut all = vec![relid];
                        all.extend(kids.iter().copied());
                        let s = all
                            .iter()
                            .any(|r| has_storage(relkind(*r)) && !not_null_proven(*r, attnum));
                        if s {
                            scans = true;
                            a.recipe
                                .push(locks::recipe_not_null(&table, &table_name, &name));
                        }
                    }
                }
                At::AT_AddConstraint => {
                    if !is(def, T::T_Constraint) {
                        continue;
                    }
                    let c = def as *mut pg_sys::Constraint;
                    match (*c).contype {
                        Ct::CONSTR_CHECK => {
                            recurse = true;
                            if !(*c).skip_validation {
                                scans = true;
                                a.recipe.push(locks::recipe_not_valid(
                                    &table,
                                    &constraint_text(text, (*c).location, script),
                                    cstr((*c).conname).as_deref(),
                                ));
                            }
                        }
                        Ct::CONSTR_FOREIGN => {
                            recurse = true;
                            script.lock_rv(
                                a,
                                (*c).pktable,
                                LockMode::ShareRowExclusive,
                                false,
                                false,
                            );
                            if !(*c).skip_validation {
                                scans = true;
                                a.recipe.push(locks::recipe_not_valid(
                                    &table,
                                    &constraint_text(text, (*c).location, script),
                                    cstr((*c).conname).as_deref(),
                                ));
                            }
                        }
                        Ct::CONSTR_PRIMARY | Ct::CONSTR_UNIQUE | Ct::CONSTR_EXCLUSION => {
                            if (*c).indexname.is_null() {
                                scans = true;
                                if (*c).contype != Ct::CONSTR_EXCLUSION {
                                    let primary = (*c).contype == Ct::CONSTR_PRIMARY;
                                    let cols: Vec<String> =
                                        names((*c).keys).iter().map(|k| quote_ident(k)).collect();
                                    let idx = cstr((*c).conname).unwrap_or_else(|| {
                                        format!(
                                            "{table_name}_{}",
                                            if primary { "pkey" } else { "key" }
                                        )
                                    });
                                    let create = format!(
                                        "CREATE UNIQUE INDEX {} ON {table} ({})",
                                        quote_ident(&idx),
                                        cols.join(", ")
                                    );
                                    let add = match cstr((*c).conname) {
                                        Some(n) => format!(
                                            "CONSTRAINT {} {}",
                                            quote_ident(&n),
                                            if primary { "PRIMARY KEY" } else { "UNIQUE" }
                                        ),
                                        None => (if primary { "PRIMARY KEY" } else { "UNIQUE" })
                                            .to_string(),
                                    };
                                    a.recipe.push(locks::recipe_using_index(
                                        &table, &idx, &create, &add,
                                    ));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                At::AT_ValidateConstraint => {
                    recurse = true;
                    if let Some((t, valid, conf)) = constraint(relid, &name) {
                        if !valid {
                            scans = true;
                        }
                        if t == b'f' && conf != pg_sys::Oid::INVALID {
                            a.lock(conf, LockMode::RowShare);
                        }
                    }
                }
                At::AT_DropConstraint => {
                    recurse = true;
                    if let Some((b'f', _, conf)) = constraint(relid, &name) {
                        if conf != relid && conf != pg_sys::Oid::INVALID {
                            a.lock(conf, LockMode::AccessExclusive);
                        }
                    }
                }
                At::AT_SetLogged | At::AT_SetUnLogged => {
                    rewrites |= storage;
                }
                At::AT_SetTableSpace => {
                    rewrites |= storage && !same_tablespace(relid, &name);
                }
                #[cfg(not(any(feature = "pg13", feature = "pg14")))]
                At::AT_SetAccessMethod => {
                    // To the method the table has already: nothing to do.
                    rewrites |= storage && !same_access_method(relid, &name);
                }
                At::AT_AttachPartition => {
                    let pc = def as *mut pg_sys::PartitionCmd;
                    if kind == b'p' {
                        if let Some(part) =
                            script.lock_rv(a, (*pc).name, LockMode::AccessExclusive, false, false)
                        {
                            for c in children(part) {
                                a.lock(c, LockMode::AccessExclusive);
                            }
                            let t = a.lock(part, LockMode::AccessExclusive);
                            t.scans = has_storage(relkind(part));
                            t.why = Some("the partition: its rows are checked against the bound unless its CHECK constraints imply it".into());
                        }
                        let default = get_default_partition_oid(relid);
                        if default != pg_sys::Oid::INVALID {
                            let t = a.lock(default, LockMode::AccessExclusive);
                            t.scans = true;
                            t.why = Some("the default partition: checked for rows that belong to the new partition".into());
                        }
                    }
                }
                At::AT_DetachPartition => {
                    let pc = def as *mut pg_sys::PartitionCmd;
                    let m = if (*pc).concurrent {
                        LockMode::ShareUpdateExclusive
                    } else {
                        LockMode::AccessExclusive
                    };
                    script.lock_rv(a, (*pc).name, m, false, false);
                    let default = get_default_partition_oid(relid);
                    if default != pg_sys::Oid::INVALID {
                        a.lock(default, LockMode::AccessExclusive);
                    }
                    if !(*pc).concurrent {
                        a.recipe.push(format!(
                            "ALTER TABLE {table} DETACH PARTITION {} CONCURRENTLY;  -- outside a transaction block; reads and writes on {table} go on",
                            script_rv_text((*pc).name)
                        ));
                    }
                }
                At::AT_AddInherit => {
                    script.lock_rv(
                        a,
                        def as *mut pg_sys::RangeVar,
                        LockMode::ShareUpdateExclusive,
                        false,
                        false,
                    );
                }
                At::AT_DropInherit => {
                    script.lock_rv(
                        a,
                        def as *mut pg_sys::RangeVar,
                        LockMode::AccessShare,
                        false,
                        false,
                    );
                }
                At::AT_ColumnDefault => {
                    recurse = true;
                    for seq in sequences_named_in(def) {
                        script.lock_rv(a, seq, LockMode::AccessShare, false, true);
                    }
                }
                At::AT_DropColumn
                | At::AT_DropNotNull
                | At::AT_SetStatistics
                | At::AT_SetStorage
                | At::AT_SetOptions
                | At::AT_ResetOptions
                | At::AT_AddIdentity
                | At::AT_SetIdentity
                | At::AT_DropIdentity
                | At::AT_DropExpression
                | At::AT_SetCompression => recurse = true,
                _ => {}
            }
        }
        if (rewrites || scans) && storage {
            let t = a.lock(relid, mode);
            t.rewrites |= rewrites;
            t.scans |= scans && !rewrites;
        }
        if recurse {
            for c in &kids {
                let t = a.lock(*c, mode);
                t.why
                    .get_or_insert_with(|| "a partition or child table".into());
                if has_storage(relkind(*c)) {
                    t.rewrites |= rewrites;
                    t.scans |= scans && !rewrites;
                }
            }
        }
        if a.recipe.is_empty() && mode.blocks_writes() {
            a.recipe.push(locks::exec_call(text));
        }
    }
}

unsafe fn script_rv_text(rv: *mut pg_sys::RangeVar) -> String {
    unsafe {
        let name = quote_ident(&cstr((*rv).relname).unwrap_or_default());
        match cstr((*rv).schemaname) {
            Some(s) => format!("{}.{name}", quote_ident(&s)),
            None => name,
        }
    }
}

/// "ADD CONSTRAINT ..." text of a table constraint, from the statement.
fn constraint_text(text: &str, location: i32, script: &Script) -> String {
    // The constraint starts at its location in the script; the statement's
    // text is a slice of the script, so cut from there to the end of the
    // statement (one constraint per statement in the recipes we give).
    let start = script.sql.find(text).unwrap_or(0);
    let loc = (location.max(0) as usize).saturating_sub(start);
    let rest = text
        .get(loc..)
        .unwrap_or(text)
        .trim()
        .trim_end_matches(';')
        .trim();
    let rest = rest
        .split_once(" NOT VALID")
        .map(|(a, _)| a)
        .unwrap_or(rest);
    format!("ADD {rest}")
}

/// Is `n` a reference to `column`, alone or cast?
unsafe fn is_column(n: *mut pg_sys::Node, column: &str) -> bool {
    unsafe {
        if is(n, T::T_TypeCast) {
            return is_column((*(n as *mut pg_sys::TypeCast)).arg, column);
        }
        if is(n, T::T_ColumnRef) {
            let fields = nodes::<pg_sys::Node>((*(n as *mut pg_sys::ColumnRef)).fields);
            return fields.len() == 1 && is(fields[0], T::T_String) && str_val(fields[0]) == column;
        }
        false
    }
}

unsafe fn reads(script: &Script, a: &mut Analysis, query: *mut pg_sys::Node, mode: LockMode) {
    unsafe {
        for rv in read_relations(query) {
            script.lock_rv(a, rv, mode, true, true);
        }
    }
}

unsafe fn has_option(list: *mut pg_sys::List, option: &str) -> bool {
    unsafe {
        nodes::<pg_sys::DefElem>(list).into_iter().any(|d| {
            cstr((*d).defname).as_deref() == Some(option)
                && ((*d).arg.is_null()
                    || !is((*d).arg, T::T_String)
                    || !matches!(str_val((*d).arg).as_str(), "false" | "off" | "0"))
        })
    }
}

/// Statements PostgreSQL runs only outside a transaction block (and so
/// never inside a function): Some(where to send them instead).
pub(crate) unsafe fn top_level_only(node: *mut pg_sys::Node) -> Option<&'static str> {
    unsafe {
        match (*node).type_ {
            T::T_IndexStmt if (*(node as *mut pg_sys::IndexStmt)).concurrent => Some(
                "Queue it with migrate_create_index(), which a background worker runs, cleans up and retries.",
            ),
            T::T_DropStmt if (*(node as *mut pg_sys::DropStmt)).concurrent => {
                Some("Queue it with migrate_drop_index().")
            }
            T::T_ReindexStmt => {
                let s = node as *mut pg_sys::ReindexStmt;
                if has_option((*s).params, "concurrently") {
                    Some("Queue it with migrate_reindex().")
                } else if (*s).kind != pg_sys::ReindexObjectType::REINDEX_OBJECT_INDEX
                    && (*s).kind != pg_sys::ReindexObjectType::REINDEX_OBJECT_TABLE
                {
                    Some("Run it directly.")
                } else {
                    None
                }
            }
            T::T_VacuumStmt if (*(node as *mut pg_sys::VacuumStmt)).is_vacuumcmd => {
                Some("Run it directly.")
            }
            T::T_ClusterStmt if (*(node as *mut pg_sys::ClusterStmt)).relation.is_null() => {
                Some("Run it directly.")
            }
            T::T_AlterTableStmt => {
                let s = node as *mut pg_sys::AlterTableStmt;
                nodes::<pg_sys::AlterTableCmd>((*s).cmds)
                    .into_iter()
                    .any(|c| {
                        (*c).subtype == At::AT_DetachPartition
                            && (*((*c).def as *mut pg_sys::PartitionCmd)).concurrent
                    })
                    .then_some("Run DETACH PARTITION ... CONCURRENTLY directly.")
            }
            T::T_CreatedbStmt
            | T::T_DropdbStmt
            | T::T_CreateTableSpaceStmt
            | T::T_DropTableSpaceStmt
            | T::T_AlterSystemStmt => Some("Run it directly."),
            _ => None,
        }
    }
}

/// Analyse one raw statement.
///
/// # Safety
/// `node` is a raw parse tree of `script`, in the current memory context.
pub unsafe fn statement(script: &mut Script, node: *mut pg_sys::Node, text: &str) -> Analysis {
    unsafe {
        let mut a = Analysis {
            command: cstr(pg_sys::CreateCommandName(node)).unwrap_or_else(|| "???".into()),
            in_transaction: top_level_only(node).is_none(),
            ..Default::default()
        };
        let n = script.number;
        use LockMode::*;
        match (*node).type_ {
            T::T_AlterTableStmt => alter_table(script, &mut a, node as _, text),
            T::T_IndexStmt => {
                let s = node as *mut pg_sys::IndexStmt;
                let mode = if (*s).concurrent {
                    ShareUpdateExclusive
                } else {
                    Share
                };
                if let Some(rel) = script.lock_rv(&mut a, (*s).relation, mode, true, false) {
                    let t = a.lock(rel, mode);
                    t.scans = true;
                    for c in children(rel) {
                        if (*(*s).relation).inh {
                            a.lock(c, mode).scans = has_storage(relkind(c));
                        }
                    }
                    if !(*s).concurrent {
                        a.recipe
                            .push(format!("SELECT migrate_create_index({});", lit(text)));
                    }
                }
                if let Some(name) = cstr((*s).idxname) {
                    script.created.insert(name, n);
                }
            }
            T::T_CreateStmt => {
                let s = node as *mut pg_sys::CreateStmt;
                let name = cstr((*(*s).relation).relname).unwrap_or_default();
                for e in nodes::<pg_sys::Node>((*s).tableElts) {
                    if is(e, T::T_ColumnDef) {
                        for c in nodes::<pg_sys::Constraint>(
                            (*(e as *mut pg_sys::ColumnDef)).constraints,
                        ) {
                            if (*c).contype == Ct::CONSTR_FOREIGN {
                                script.lock_rv(
                                    &mut a,
                                    (*c).pktable,
                                    ShareRowExclusive,
                                    false,
                                    false,
                                );
                            }
                        }
                    } else if is(e, T::T_Constraint) {
                        let c = e as *mut pg_sys::Constraint;
                        if (*c).contype == Ct::CONSTR_FOREIGN {
                            script.lock_rv(&mut a, (*c).pktable, ShareRowExclusive, false, false);
                        }
                    } else if is(e, T::T_TableLikeClause) {
                        script.lock_rv(
                            &mut a,
                            (*(e as *mut pg_sys::TableLikeClause)).relation,
                            AccessShare,
                            false,
                            false,
                        );
                    }
                }
                for c in nodes::<pg_sys::Constraint>((*s).constraints) {
                    if (*c).contype == Ct::CONSTR_FOREIGN {
                        script.lock_rv(&mut a, (*c).pktable, ShareRowExclusive, false, false);
                    }
                }
                let partition = !(*s).partbound.is_null();
                for parent in nodes::<pg_sys::RangeVar>((*s).inhRelations) {
                    let mode = if partition {
                        AccessExclusive
                    } else {
                        ShareUpdateExclusive
                    };
                    if let Some(p) = script.lock_rv(&mut a, parent, mode, false, false) {
                        a.lock(p, mode).why = Some(
                            if partition {
                                "the partitioned table"
                            } else {
                                "the parent table"
                            }
                            .into(),
                        );
                        if partition {
                            let default = get_default_partition_oid(p);
                            if default != pg_sys::Oid::INVALID {
                                let t = a.lock(default, AccessExclusive);
                                t.scans = true;
                                t.why = Some("the default partition: checked for rows that belong to the new partition".into());
                            }
                            for r in referenced_tables(p) {
                                a.lock(r, ShareRowExclusive);
                            }
                        }
                    }
                }
                script.created.insert(name, n);
            }
            T::T_ViewStmt => {
                let s = node as *mut pg_sys::ViewStmt;
                if (*s).replace {
                    script.lock_rv(&mut a, (*s).view, AccessExclusive, false, true);
                }
                reads(script, &mut a, (*s).query, AccessShare);
                script
                    .created
                    .insert(cstr((*(*s).view).relname).unwrap_or_default(), n);
            }
            T::T_CreateTableAsStmt => {
                let s = node as *mut pg_sys::CreateTableAsStmt;
                reads(script, &mut a, (*s).query, AccessShare);
                script
                    .created
                    .insert(cstr((*(*(*s).into).rel).relname).unwrap_or_default(), n);
            }
            T::T_CreateSeqStmt => {
                let s = node as *mut pg_sys::CreateSeqStmt;
                script
                    .created
                    .insert(cstr((*(*s).sequence).relname).unwrap_or_default(), n);
                owned_by(script, &mut a, (*s).options);
            }
            T::T_AlterSeqStmt => {
                let s = node as *mut pg_sys::AlterSeqStmt;
                if let Some(seq) = script.lock_rv(
                    &mut a,
                    (*s).sequence,
                    ShareRowExclusive,
                    false,
                    (*s).missing_ok,
                ) {
                    // Every option but OWNED BY writes the sequence anew:
                    // one page, whatever the sequence, so not a rewrite
                    // whose cost grows with anything.
                    let renewed = nodes::<pg_sys::DefElem>((*s).options)
                        .into_iter()
                        .any(|d| cstr((*d).defname).as_deref() != Some("owned_by"));
                    a.lock(seq, ShareRowExclusive);
                    if renewed {
                        a.notes.push(
                            "The sequence gets a new one-page file: no data is copied, the time does not grow with anything."
                                .into(),
                        );
                    }
                }
                owned_by(script, &mut a, (*s).options);
            }
            T::T_DropStmt => drop_stmt(script, &mut a, node as _, text),
            T::T_RenameStmt => {
                let s = node as *mut pg_sys::RenameStmt;
                let mode = match (*s).renameType {
                    Ob::OBJECT_INDEX => ShareUpdateExclusive,
                    _ => AccessExclusive,
                };
                match (*s).renameType {
                    Ob::OBJECT_TABLE
                    | Ob::OBJECT_VIEW
                    | Ob::OBJECT_MATVIEW
                    | Ob::OBJECT_SEQUENCE
                    | Ob::OBJECT_FOREIGN_TABLE
                    | Ob::OBJECT_INDEX
                    | Ob::OBJECT_TABCONSTRAINT
                    | Ob::OBJECT_TRIGGER
                    | Ob::OBJECT_RULE
                    | Ob::OBJECT_POLICY => {
                        script.lock_rv(&mut a, (*s).relation, mode, false, (*s).missing_ok);
                        if matches!(
                            (*s).renameType,
                            Ob::OBJECT_TABLE
                                | Ob::OBJECT_VIEW
                                | Ob::OBJECT_MATVIEW
                                | Ob::OBJECT_SEQUENCE
                                | Ob::OBJECT_FOREIGN_TABLE
                                | Ob::OBJECT_INDEX
                        ) {
                            if let Some(newname) = cstr((*s).newname) {
                                script.created.insert(newname, n);
                            }
                        }
                    }
                    Ob::OBJECT_COLUMN | Ob::OBJECT_ATTRIBUTE => {
                        script.lock_rv(&mut a, (*s).relation, mode, true, (*s).missing_ok);
                    }
                    _ => {}
                }
                if mode.blocks_writes() && !(*s).relation.is_null() {
                    a.recipe.push(locks::exec_call(text));
                }
            }
            T::T_AlterObjectSchemaStmt => {
                let s = node as *mut pg_sys::AlterObjectSchemaStmt;
                if !(*s).relation.is_null() {
                    script.lock_rv(
                        &mut a,
                        (*s).relation,
                        AccessExclusive,
                        false,
                        (*s).missing_ok,
                    );
                    a.recipe.push(locks::exec_call(text));
                }
            }
            T::T_TruncateStmt => {
                let s = node as *mut pg_sys::TruncateStmt;
                let mut emptied = vec![];
                for rv in nodes::<pg_sys::RangeVar>((*s).relations) {
                    if let Some(r) = script.lock_rv(&mut a, rv, AccessExclusive, true, false) {
                        emptied.push(r);
                        if (*rv).inh {
                            emptied.extend(children(r));
                        }
                    }
                }
                if (*s).behavior == pg_sys::DropBehavior::DROP_CASCADE {
                    // Tables whose foreign keys point at an emptied table
                    // are emptied too, and so on.
                    let mut i = 0;
                    while i < emptied.len() {
                        for r in referencing_tables(emptied[i]) {
                            if !emptied.contains(&r) {
                                emptied.push(r);
                            }
                        }
                        i += 1;
                    }
                }
                // Each emptied table gets a new, empty file: nothing is
                // copied, so it is not a rewrite and its time does not
                // grow with the table; the lock is what costs.
                for r in emptied {
                    a.lock(r, AccessExclusive);
                }
                a.notes.push(
                    "TRUNCATE empties the table: it gets a new, empty file (nothing is copied; the time does not grow with the table)."
                        .into(),
                );
            }
            T::T_ClusterStmt => {
                let s = node as *mut pg_sys::ClusterStmt;
                if (*s).relation.is_null() {
                    a.unknown = Some(
                        "CLUSTER without a table re-clusters every table clustered before".into(),
                    );
                } else if let Some(r) =
                    script.lock_rv(&mut a, (*s).relation, AccessExclusive, false, false)
                {
                    a.lock(r, AccessExclusive).rewrites = true;
                    a.recipe.push("pg_repack rebuilds a table in index order with locks held only for moments.".into());
                }
            }
            T::T_VacuumStmt => {
                let s = node as *mut pg_sys::VacuumStmt;
                let full = has_option((*s).options, "full");
                let mode = if full {
                    AccessExclusive
                } else {
                    ShareUpdateExclusive
                };
                for vr in nodes::<pg_sys::VacuumRelation>((*s).rels) {
                    if let Some(r) = script.lock_rv(&mut a, (*vr).relation, mode, true, false) {
                        let t = a.lock(r, mode);
                        t.rewrites = full;
                        t.scans = !full;
                    }
                }
                if (*s).rels.is_null() {
                    a.notes.push("Without a table it works through every table of the database, one at a time.".into());
                }
                if full {
                    a.recipe.push(
                        "pg_repack rebuilds a table with locks held only for moments.".into(),
                    );
                }
            }
            T::T_ReindexStmt => {
                let s = node as *mut pg_sys::ReindexStmt;
                let concurrent = has_option((*s).params, "concurrently");
                match (*s).kind {
                    pg_sys::ReindexObjectType::REINDEX_OBJECT_INDEX => {
                        if let Found::Oid(idx) = script.need((*s).relation) {
                            let heap = pg_sys::IndexGetRelation(idx, true);
                            if heap == pg_sys::Oid::INVALID {
                                script.not_an_index((*s).relation);
                            }
                            if concurrent {
                                a.lock(heap, ShareUpdateExclusive).scans = true;
                                a.lock(idx, ShareUpdateExclusive);
                            } else {
                                a.lock(heap, Share).scans = true;
                                a.lock(idx, AccessExclusive);
                                a.recipe.push(format!(
                                    "SELECT migrate_reindex({});",
                                    lit(&rel_display(idx))
                                ));
                            }
                        }
                    }
                    pg_sys::ReindexObjectType::REINDEX_OBJECT_TABLE => {
                        let mode = if concurrent {
                            ShareUpdateExclusive
                        } else {
                            Share
                        };
                        if let Some(r) = script.lock_rv(&mut a, (*s).relation, mode, false, false) {
                            a.lock(r, mode).scans = true;
                            if !concurrent {
                                a.recipe.push("Rebuild each index with migrate_reindex(index), one at a time.".into());
                            }
                        }
                    }
                    _ => {
                        a.unknown = Some("REINDEX of a schema, database or the system catalogs works through many tables".into());
                    }
                }
            }
            T::T_LockStmt => {
                let s = node as *mut pg_sys::LockStmt;
                let mode = LockMode::from_level((*s).mode).unwrap_or(AccessExclusive);
                for rv in nodes::<pg_sys::RangeVar>((*s).relations) {
                    script.lock_rv(&mut a, rv, mode, true, false);
                }
            }
            T::T_RefreshMatViewStmt => {
                let s = node as *mut pg_sys::RefreshMatViewStmt;
                let mode = if (*s).concurrent {
                    Exclusive
                } else {
                    AccessExclusive
                };
                if let Some(r) = script.lock_rv(&mut a, (*s).relation, mode, false, false) {
                    let t = a.lock(r, mode);
                    t.rewrites = !(*s).concurrent;
                    t.scans = (*s).concurrent;
                    for src in matview_sources(r) {
                        a.lock(src, AccessShare).scans = true;
                    }
                    if !(*s).concurrent {
                        a.recipe.push(format!(
                            "REFRESH MATERIALIZED VIEW CONCURRENTLY {};  -- needs a unique index on the view; reads go on",
                            rel_display(r)
                        ));
                    }
                }
            }
            T::T_CreateTrigStmt => {
                let s = node as *mut pg_sys::CreateTrigStmt;
                script.lock_rv(&mut a, (*s).relation, ShareRowExclusive, false, false);
                if !(*s).constrrel.is_null() {
                    script.lock_rv(&mut a, (*s).constrrel, AccessShare, false, false);
                }
                a.recipe.push(locks::exec_call(text));
            }
            T::T_CreatePolicyStmt => {
                let s = node as *mut pg_sys::CreatePolicyStmt;
                script.lock_rv(&mut a, (*s).table, AccessExclusive, false, false);
                a.recipe.push(locks::exec_call(text));
            }
            T::T_AlterPolicyStmt => {
                let s = node as *mut pg_sys::AlterPolicyStmt;
                script.lock_rv(&mut a, (*s).table, AccessExclusive, false, false);
                a.recipe.push(locks::exec_call(text));
            }
            T::T_RuleStmt => {
                let s = node as *mut pg_sys::RuleStmt;
                script.lock_rv(&mut a, (*s).relation, AccessExclusive, false, false);
            }
            T::T_CreateStatsStmt => {
                let s = node as *mut pg_sys::CreateStatsStmt;
                for rv in nodes::<pg_sys::Node>((*s).relations) {
                    if is(rv, T::T_RangeVar) {
                        script.lock_rv(&mut a, rv as _, ShareUpdateExclusive, false, false);
                    }
                }
            }
            T::T_CommentStmt => {
                let s = node as *mut pg_sys::CommentStmt;
                let obj = (*s).object;
                let rel_names: Option<Vec<String>> = match (*s).objtype {
                    Ob::OBJECT_TABLE
                    | Ob::OBJECT_VIEW
                    | Ob::OBJECT_MATVIEW
                    | Ob::OBJECT_SEQUENCE
                    | Ob::OBJECT_INDEX
                    | Ob::OBJECT_FOREIGN_TABLE => Some(names(obj as *mut pg_sys::List)),
                    Ob::OBJECT_COLUMN
                    | Ob::OBJECT_TABCONSTRAINT
                    | Ob::OBJECT_TRIGGER
                    | Ob::OBJECT_RULE
                    | Ob::OBJECT_POLICY => {
                        let mut v = names(obj as *mut pg_sys::List);
                        v.pop();
                        Some(v)
                    }
                    _ => None,
                };
                // Objects of a relation (constraint, trigger, rule, policy)
                // are looked up under ACCESS SHARE; the relation itself and
                // its columns under SHARE UPDATE EXCLUSIVE.
                let mode = match (*s).objtype {
                    Ob::OBJECT_TABCONSTRAINT
                    | Ob::OBJECT_TRIGGER
                    | Ob::OBJECT_RULE
                    | Ob::OBJECT_POLICY => AccessShare,
                    _ => ShareUpdateExclusive,
                };
                if let Some(v) = rel_names {
                    lock_names(script, &mut a, &v, mode, false);
                }
            }
            T::T_AlterDomainStmt => {
                let s = node as *mut pg_sys::AlterDomainStmt;
                let validating = match (*s).subtype as u8 {
                    b'C' => {
                        let c = (*s).def as *mut pg_sys::Constraint;
                        is((*s).def, T::T_Constraint) && !(*c).skip_validation
                    }
                    b'O' | b'V' => true,
                    _ => false,
                };
                if validating {
                    let tn = pg_sys::makeTypeNameFromNameList((*s).typeName);
                    let typid = pg_sys::typenameTypeId(std::ptr::null_mut(), tn);
                    for r in oids(
                        "SELECT DISTINCT a.attrelid FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
                          WHERE a.atttypid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'm', 'p')",
                        &[typid.into()],
                    ) {
                        let t = a.lock(r, Share);
                        t.scans = has_storage(relkind(r));
                        t.why = Some("a table with a column of the domain: checked against the new constraint".into());
                    }
                }
            }
            T::T_InsertStmt => {
                let s = node as *mut pg_sys::InsertStmt;
                script.lock_rv(&mut a, (*s).relation, RowExclusive, false, false);
                reads(script, &mut a, (*s).selectStmt, AccessShare);
            }
            T::T_UpdateStmt | T::T_DeleteStmt => {
                let (rel, from, filter) = if (*node).type_ == T::T_UpdateStmt {
                    let s = node as *mut pg_sys::UpdateStmt;
                    ((*s).relation, (*s).fromClause, (*s).whereClause)
                } else {
                    let s = node as *mut pg_sys::DeleteStmt;
                    ((*s).relation, (*s).usingClause, (*s).whereClause)
                };
                if let Some(r) = script.lock_rv(&mut a, rel, RowExclusive, true, false) {
                    let t = a.lock(r, RowExclusive);
                    t.locks_rows = true;
                    if (*node).type_ == T::T_UpdateStmt {
                        let table = rel_display(r);
                        let set_text = "<SET clause>";
                        a.recipe.push(format!(
                            "SELECT migrate_backfill({}, {}{});  -- batches that commit one by one",
                            lit(&table),
                            lit(set_text),
                            if filter.is_null() {
                                String::new()
                            } else {
                                ", '<WHERE clause>'".into()
                            }
                        ));
                    }
                }
                for f in nodes::<pg_sys::Node>(from) {
                    reads(script, &mut a, f, AccessShare);
                }
                reads(script, &mut a, filter, AccessShare);
            }
            T::T_SelectStmt => {
                let s = node as *mut pg_sys::SelectStmt;
                let mode = if (*s).lockingClause.is_null() {
                    AccessShare
                } else {
                    RowShare
                };
                reads(script, &mut a, node, mode);
            }
            T::T_CopyStmt => {
                let s = node as *mut pg_sys::CopyStmt;
                if !(*s).relation.is_null() {
                    script.lock_rv(
                        &mut a,
                        (*s).relation,
                        if (*s).is_from {
                            RowExclusive
                        } else {
                            AccessShare
                        },
                        false,
                        false,
                    );
                }
                reads(script, &mut a, (*s).query, AccessShare);
            }
            T::T_ExplainStmt => {
                let s = node as *mut pg_sys::ExplainStmt;
                let inner = statement(script, (*s).query, text);
                a.targets = inner.targets;
            }
            T::T_DoStmt | T::T_CallStmt => {
                a.unknown = Some(format!(
                    "{} runs code whose statements the analysis cannot see: migrate_trace shows what it locks",
                    a.command
                ));
            }
            _ => {}
        }
        a
    }
}

unsafe fn owned_by(script: &Script, a: &mut Analysis, options: *mut pg_sys::List) {
    unsafe {
        for d in nodes::<pg_sys::DefElem>(options) {
            if cstr((*d).defname).as_deref() == Some("owned_by") && is((*d).arg, T::T_List) {
                let mut v = names((*d).arg as *mut pg_sys::List);
                if v.len() >= 2 {
                    v.pop();
                    lock_names(script, a, &v, LockMode::AccessShare, false);
                }
            }
        }
    }
}

unsafe fn lock_names(
    script: &Script,
    a: &mut Analysis,
    v: &[String],
    mode: LockMode,
    recurse: bool,
) -> Option<pg_sys::Oid> {
    unsafe {
        let mut list: *mut pg_sys::List = std::ptr::null_mut();
        for s in v {
            let c = CString::new(s.as_str()).unwrap_or_default();
            list = pg_sys::lappend(
                list,
                pg_sys::makeString(pg_sys::pstrdup(c.as_ptr())) as *mut c_void,
            );
        }
        if list.is_null() {
            return None;
        }
        let rv = pg_sys::makeRangeVarFromNameList(list);
        (*rv).inh = recurse;
        script.lock_rv(a, rv, mode, recurse, true)
    }
}

fn matview_sources(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    oids(
        "SELECT DISTINCT d.refobjid FROM pg_catalog.pg_rewrite r
           JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
           JOIN pg_catalog.pg_class c ON c.oid = d.refobjid
          WHERE r.ev_class = $1 AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
            AND d.refobjid <> $1 AND c.relkind IN ('r', 'p', 'm', 'v', 'f')",
        &[relid.into()],
    )
}

unsafe fn drop_stmt(script: &mut Script, a: &mut Analysis, s: *mut pg_sys::DropStmt, text: &str) {
    unsafe {
        use LockMode::*;
        let objects = nodes::<pg_sys::Node>((*s).objects);
        match (*s).removeType {
            Ob::OBJECT_TABLE | Ob::OBJECT_FOREIGN_TABLE => {
                for o in objects {
                    let v = names(o as *mut pg_sys::List);
                    if let Some(r) = lock_names(script, a, &v, AccessExclusive, false) {
                        for c in children(r) {
                            a.lock(c, AccessExclusive);
                        }
                        for seq in owned_sequences(r) {
                            a.lock(seq, AccessExclusive);
                        }
                        for f in referenced_tables(r) {
                            a.lock(f, AccessExclusive).why =
                                Some("referenced by a foreign key of the dropped table: its trigger goes too".into());
                        }
                    }
                }
            }
            Ob::OBJECT_VIEW | Ob::OBJECT_MATVIEW | Ob::OBJECT_SEQUENCE => {
                for o in objects {
                    let v = names(o as *mut pg_sys::List);
                    lock_names(script, a, &v, AccessExclusive, false);
                }
            }
            Ob::OBJECT_INDEX => {
                let mode = if (*s).concurrent {
                    ShareUpdateExclusive
                } else {
                    AccessExclusive
                };
                for o in objects {
                    let v = names(o as *mut pg_sys::List);
                    if let Some(idx) = lock_names(script, a, &v, mode, false) {
                        let heap = pg_sys::IndexGetRelation(idx, true);
                        if heap != pg_sys::Oid::INVALID {
                            a.lock(heap, mode).why = Some("the table of the dropped index".into());
                            // Keep the table first.
                            let i = a
                                .targets
                                .iter()
                                .position(|t| t.relid == Some(heap))
                                .unwrap_or(0);
                            let t = a.targets.remove(i);
                            a.targets.insert(0, t);
                        }
                        if !(*s).concurrent {
                            a.recipe.push(format!(
                                "SELECT migrate_drop_index({});",
                                lit(&rel_display(idx))
                            ));
                        }
                    }
                }
            }
            Ob::OBJECT_TRIGGER | Ob::OBJECT_RULE | Ob::OBJECT_POLICY => {
                for o in objects {
                    let mut v = names(o as *mut pg_sys::List);
                    v.pop();
                    lock_names(script, a, &v, AccessExclusive, false);
                }
                a.recipe.push(locks::exec_call(text));
            }
            _ => {
                if (*s).behavior == pg_sys::DropBehavior::DROP_CASCADE {
                    a.notes.push("CASCADE also drops what depends on it; the tables that lose a column or constraint are not listed.".into());
                }
            }
        }
    }
}

// ---- the SQL function ---------------------------------------------------------

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

/// What each statement of `sql` locks, rewrites and scans, its risk and a
/// safer recipe, without executing anything.  Names resolve as the
/// caller's session resolves them.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
pub fn migrate_analyze(
    sql: &str,
) -> TableIterator<
    'static,
    (
        name!(statement, i32),
        name!(statement_sql, String),
        name!(command, String),
        name!(relation, Option<sys::RegClass>),
        name!(lock_mode, Option<String>),
        name!(blocks_reads, Option<bool>),
        name!(blocks_writes, Option<bool>),
        name!(rewrites, Option<bool>),
        name!(scans, Option<bool>),
        name!(in_transaction, bool),
        name!(table_bytes, Option<i64>),
        name!(row_estimate, Option<i64>),
        name!(estimated_duration, Option<pgrx::datum::Interval>),
        name!(risk, String),
        name!(reason, String),
        name!(recipe, Option<String>),
    ),
> {
    TableIterator::new(analyze(sql).into_iter().map(|r| {
        (
            r.0,
            r.1,
            r.2,
            r.3.map(sys::RegClass),
            r.4,
            r.5,
            r.6,
            r.7,
            r.8,
            r.9,
            r.10,
            r.11,
            r.12.map(sys::tenths_interval),
            r.13,
            r.14,
            r.15,
        )
    }))
}
