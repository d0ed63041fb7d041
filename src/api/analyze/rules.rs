//! The rules of each statement: what it locks, rewrites and scans, and the
//! safer recipe (ALTER TABLE's are in `alter_table`).

use super::alter_table::alter_table;
use super::lookup::{
    children, has_storage, matview_sources, oids, owned_sequences, referenced_tables,
    referencing_tables, rel_display, relkind,
};
use super::model::{Analysis, Found, Script};
use super::nodes::{cstr, is, names, nodes, str_val};
use super::walk::read_relations;
use crate::engine::locks::{self, LockMode};
use crate::error::literal as lit;
use crate::ffi::get_default_partition_oid;
use pgrx::prelude::*;
use std::ffi::{c_void, CString};

use pg_sys::AlterTableType as At;
use pg_sys::ConstrType as Ct;
use pg_sys::NodeTag as T;
use pg_sys::ObjectType as Ob;

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
                            // A partitioned index goes with its partitions'
                            // indexes: each partition is locked as well.
                            if relkind(idx) == b'I' {
                                for c in children(heap) {
                                    a.lock(c, mode).why = Some(
                                        "a partition: its index goes with the partitioned index"
                                            .into(),
                                    );
                                }
                            }
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
