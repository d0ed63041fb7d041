//! The rules of ALTER TABLE: what each subcommand locks, rewrites and scans,
//! and the safer recipe.

use super::lookup::{
    attnum_of, change_rewrites, children, column_not_null, constraint, default_sequences,
    foreign_key_partners, has_storage, not_null_proven, rel_display, rel_name, relkind,
    same_access_method, same_tablespace,
};
use super::model::{Analysis, Found, Script};
use super::nodes::{cstr, is, names, nodes, str_val};
use super::walk::sequences_named_in;
use crate::engine::keyset::display_ident as quote_ident;
use crate::engine::locks::{self, LockMode};
use crate::ffi::get_default_partition_oid;
use crate::sys;
use pgrx::prelude::*;
use std::ffi::CString;

use pg_sys::AlterTableType as At;
use pg_sys::ConstrType as Ct;
use pg_sys::NodeTag as T;

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

#[allow(clippy::collapsible_match)]
pub(super) unsafe fn alter_table(
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
                        a.recipe.push(locks::recipe_change_type(&table, &name, &tn));
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
                                    let definition = format!("{add} ({})", cols.join(", "));
                                    a.recipe.push(locks::recipe_using_index(
                                        &table,
                                        &idx,
                                        &create,
                                        &add,
                                        &definition,
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
