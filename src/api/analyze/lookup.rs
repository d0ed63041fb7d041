//! Catalog facts: what a relation is (kind, name, children), the tables and
//! sequences tied to it, its constraints, and whether a column change
//! rewrites it.

use super::nodes::cstr;
use crate::engine::keyset::display_ident as quote_ident;
use crate::ffi::find_all_inheritors;
use crate::sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgList;
use std::ffi::{c_void, CString};

use pg_sys::NodeTag as T;

pub(super) unsafe fn children(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    unsafe {
        let list = find_all_inheritors(relid, pg_sys::NoLock as i32, std::ptr::null_mut());
        PgList::<pg_sys::Oid>::from_pg(list)
            .iter_oid()
            .filter(|o| *o != relid)
            .collect()
    }
}

pub(super) fn relkind(relid: pg_sys::Oid) -> u8 {
    unsafe { pg_sys::get_rel_relkind(relid) as u8 }
}

pub(super) fn has_storage(kind: u8) -> bool {
    matches!(kind, b'r' | b'm' | b't' | b'S')
}

pub(super) fn rel_display(relid: pg_sys::Oid) -> String {
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

pub(super) fn rel_name(relid: pg_sys::Oid) -> String {
    cstr(unsafe { pg_sys::get_rel_name(relid) }).unwrap_or_default()
}

/// The referenced table of a foreign key constraint, by name.
pub(super) fn constraint(relid: pg_sys::Oid, name: &str) -> Option<(u8, bool, pg_sys::Oid)> {
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
pub(super) fn referenced_tables(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    oids(
        "SELECT DISTINCT confrelid FROM pg_catalog.pg_constraint WHERE conrelid = $1 AND contype = 'f' AND confrelid <> $1",
        &[relid.into()],
    )
}

/// Tables whose foreign keys point at `relid`.
pub(super) fn referencing_tables(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    oids(
        "SELECT DISTINCT conrelid FROM pg_catalog.pg_constraint WHERE confrelid = $1 AND contype = 'f' AND conrelid <> $1",
        &[relid.into()],
    )
}

/// The tables on the other side of the foreign keys that use column
/// `attnum` of `relid`, as referencing or referenced column.
pub(super) fn foreign_key_partners(relid: pg_sys::Oid, attnum: i16) -> Vec<pg_sys::Oid> {
    oids(
        "SELECT DISTINCT CASE WHEN conrelid = $1 THEN confrelid ELSE conrelid END
               FROM pg_catalog.pg_constraint
              WHERE contype = 'f' AND conrelid <> confrelid
                AND ((conrelid = $1 AND $2 = ANY (conkey)) OR (confrelid = $1 AND $2 = ANY (confkey)))",
        &[relid.into(), attnum.into()],
    )
}

/// Sequences the default of column `attnum` of `relid` uses.
pub(super) fn default_sequences(relid: pg_sys::Oid, attnum: i16) -> Vec<pg_sys::Oid> {
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
pub(super) fn same_tablespace(relid: pg_sys::Oid, tablespace: &str) -> bool {
    sys::ask(
        "SELECT coalesce(nullif(c.reltablespace, 0), d.dattablespace) = t.oid
           FROM pg_catalog.pg_class c, pg_catalog.pg_database d, pg_catalog.pg_tablespace t
          WHERE c.oid = $1 AND d.datname = pg_catalog.current_database() AND t.spcname = $2",
        &[relid.into(), tablespace.into()],
    )
}

/// Is `method` the table's access method already?
pub(super) fn same_access_method(relid: pg_sys::Oid, method: &str) -> bool {
    sys::ask(
        "SELECT c.relam OPERATOR(pg_catalog.=) a.oid
           FROM pg_catalog.pg_class c, pg_catalog.pg_am a
          WHERE c.oid OPERATOR(pg_catalog.=) $1 AND a.amname OPERATOR(pg_catalog.=) $2",
        &[relid.into(), method.into()],
    )
}

/// Sequences owned by columns of `relid`.
pub(super) fn owned_sequences(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    oids(
        "SELECT d.objid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class s ON s.oid = d.objid
          WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
            AND d.refobjid = $1 AND d.deptype IN ('a', 'i') AND s.relkind = 'S'",
        &[relid.into()],
    )
}

pub(super) fn oids(query: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<pg_sys::Oid> {
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
pub(super) unsafe fn not_null_proven(relid: pg_sys::Oid, attnum: i16) -> bool {
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
pub(super) unsafe fn change_rewrites(mut expr: *mut pg_sys::Node, attnum: i16) -> bool {
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

pub(super) unsafe fn attnum_of(relid: pg_sys::Oid, column: &str) -> i16 {
    let c = CString::new(column).unwrap_or_default();
    let n = unsafe { pg_sys::get_attnum(relid, c.as_ptr()) };
    if n <= 0 {
        column_missing(column, relid)
    }
    n
}

pub(super) fn column_not_null(relid: pg_sys::Oid, attnum: i16) -> bool {
    sys::ask(
        "SELECT attnotnull FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum = $2",
        &[relid.into(), attnum.into()],
    )
}

pub(super) fn matview_sources(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    oids(
        "SELECT DISTINCT d.refobjid FROM pg_catalog.pg_rewrite r
           JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
           JOIN pg_catalog.pg_class c ON c.oid = d.refobjid
          WHERE r.ev_class = $1 AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
            AND d.refobjid <> $1 AND c.relkind IN ('r', 'p', 'm', 'v', 'f')",
        &[relid.into()],
    )
}

/// What Citus does with a statement on `relid`: for a distributed table,
/// that it runs on each of its shards, on which nodes; for a reference
/// table, on its copy on every node.  None without Citus or for a table
/// Citus does not spread.
pub(super) fn citus_spread(relid: pg_sys::Oid) -> Option<String> {
    let row: Option<(String, String, i64, String)> = crate::sys::pinned(|| {
        Spi::connect(|client| {
            let citus = client
                .select(
                    "SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
                    None,
                    &[],
                )?
                .first()
                .get_one::<bool>()?
                .unwrap_or(false);
            if !citus {
                return Ok(None);
            }
            let rows = client.select(
                "SELECT p.partmethod::pg_catalog.text, p.repmodel::pg_catalog.text,
                        (SELECT count(*) FROM pg_catalog.pg_dist_shard s
                          WHERE s.logicalrelid OPERATOR(pg_catalog.=) p.logicalrelid),
                        coalesce((SELECT pg_catalog.string_agg(n.node, ', ' ORDER BY n.node)
                                    FROM (SELECT DISTINCT d.nodename OPERATOR(pg_catalog.||) ':'
                                                 OPERATOR(pg_catalog.||) d.nodeport::pg_catalog.text AS node
                                            FROM pg_catalog.pg_dist_shard s
                                            JOIN pg_catalog.pg_dist_placement pl ON pl.shardid OPERATOR(pg_catalog.=) s.shardid
                                            JOIN pg_catalog.pg_dist_node d ON d.groupid OPERATOR(pg_catalog.=) pl.groupid
                                           WHERE s.logicalrelid OPERATOR(pg_catalog.=) p.logicalrelid) n), '')
                   FROM pg_catalog.pg_dist_partition p
                  WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
                None,
                &[relid.into()],
            )?;
            Ok::<_, pgrx::spi::SpiError>(rows.into_iter().next().map(|r| {
                (
                    r.get::<String>(1).ok().flatten().unwrap_or_default(),
                    r.get::<String>(2).ok().flatten().unwrap_or_default(),
                    r.get::<i64>(3).ok().flatten().unwrap_or(0),
                    r.get::<String>(4).ok().flatten().unwrap_or_default(),
                )
            }))
        })
    })
    .ok()
    .flatten();
    let (method, repmodel, shards, nodes) = row?;
    if method != "n" {
        Some(format!(
            "{} is a Citus distributed table: the statement runs on each of its {shards} shards, on nodes {nodes} (migrate_backfill does it shard by shard, each on its node).",
            rel_display(relid)
        ))
    } else if repmodel == "t" {
        Some(format!(
            "{} is a Citus reference table: the statement runs on its copy on every node ({nodes}).",
            rel_display(relid)
        ))
    } else {
        None
    }
}
