//! migrate_backfill: validate everything at submit, queue the job, return.

use super::key::choose_key;
use crate::api::args::{
    gate_options, int_arg, interval_ms, may_write_history, migration_option, qualified_display,
    relkind_name, run_at_option, start_linked_run, window_option,
};
use crate::catalog::jobs::{self, NewJob};
use crate::catalog::{as_owner, current_role_name};
use crate::engine::keyset::{quote_ident, Backfill, BackfillSpec, Walk};
use crate::engine::pace;
use crate::error::{MigrateError, OrReport};
use crate::kinds::queue::announce;
use crate::sys;
use pgrx::datum::{DatumWithOid, Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::PgRelation;

/// Session settings a batch must see as the submitter saw them.
const CAPTURED_SETTINGS: [&str; 6] = [
    "search_path",
    "standard_conforming_strings",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "extra_float_digits",
];

/// Validate the job's statements as the caller, without running them:
/// prepare the plain UPDATE (syntax, columns, types), parse it (no key
/// column assigned), and EXPLAIN the batch statement (privileges).
pub fn validate(b: &Backfill<'_>) {
    // Each clause on its own first: nothing in one may reach the text
    // around it.
    let assigned = super::clause::check_or_raise(b.set_clause, b.where_clause);
    let plain = b.plain_update();
    let prepared = sys::subtransaction(false, || {
        sys::capturing_position(|| {
            Spi::connect(|client| client.prepare(plain.as_str(), &[]).map(|_| ()))
        })
    });
    match prepared {
        Ok(Ok(())) => {}
        Ok(Err(e)) => pgrx::error!("pg_migrate: preparing the update: {e}"),
        Err(e) => {
            // Point at the user's own text: which clause, which character.
            let position = sys::last_position();
            let set_start = plain
                .split('\n')
                .next()
                .map_or(0, |l| l.chars().count() + 1) as i32;
            let where_start = set_start + b.set_clause.chars().count() as i32 + 1;
            let in_where = b.where_clause.is_some() && position > where_start;
            let clause = if in_where {
                "where_clause"
            } else {
                "set_clause"
            };
            let hint = (position > 0).then(|| sys::hint_in(clause, e.hint.as_deref()));
            sys::raise_at(&e, &plain, position, hint);
        }
    }
    if let Walk::Key { columns } = b.walk {
        if let Some(k) = assigned
            .iter()
            .find(|a| columns.iter().any(|c| &c.name == *a))
        {
            MigrateError::KeyInSet { column: k.clone() }.report();
        }
    }
    let batch = b.batch(true);
    let (bounds, update): (Vec<DatumWithOid<'_>>, Vec<DatumWithOid<'_>>) = match b.walk {
        Walk::Key { columns } => {
            let keys = || (0..columns.len()).map(|_| DatumWithOid::null::<String>());
            let mut bounds: Vec<DatumWithOid<'_>> = keys().chain(keys()).collect();
            bounds.push(DatumWithOid::null::<i64>());
            (bounds, keys().chain(keys()).collect())
        }
        Walk::Ctid => (
            vec![DatumWithOid::null::<i64>(), DatumWithOid::null::<i64>()],
            vec![DatumWithOid::null::<i64>(), DatumWithOid::null::<i64>()],
        ),
    };
    for (sql, params) in [(&batch.bounds, &bounds), (&batch.update, &update)] {
        let explain = format!("EXPLAIN (COSTS OFF)\n{sql}");
        Spi::connect_mut(|client| client.update(explain.as_str(), None, params).map(|_| ()))
            .unwrap_or_else(|e| pgrx::error!("pg_migrate: checking the batch statements: {e}"));
    }
}

/// A backfill of a partitioned table updates its partitions directly:
/// every partition must be a table, and the submitter must have the
/// privileges PostgreSQL checks on each.  No row moves between partitions:
/// PostgreSQL makes every unique key of a partitioned table include its
/// partition keys, and a backfill never assigns its walk's key columns.
fn check_partitions(relid: pg_sys::Oid, role: &str) {
    let leaves: Vec<(String, String, bool, bool)> = crate::sys::pinned(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind::pg_catalog.text,
                            pg_catalog.has_any_column_privilege(c.oid, 'SELECT'),
                            pg_catalog.has_any_column_privilege(c.oid, 'UPDATE')
                       FROM pg_catalog.pg_partition_tree($1) t
                       JOIN pg_catalog.pg_class c ON c.oid = t.relid
                       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                      WHERE t.isleaf",
                    None,
                    &[relid.into()],
                )?
                .map(|r| {
                    Ok((
                        r.get(1)?.unwrap_or_default(),
                        r.get(2)?.unwrap_or_default(),
                        r.get(3)?.unwrap_or(false),
                        r.get(4)?.unwrap_or(false),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
    })
    .unwrap_or_else(|e| pgrx::error!("pg_migrate: reading partitions: {e}"));
    for (partition, relkind, select, update) in leaves {
        if relkind != "r" {
            MigrateError::CannotBackfill {
                what: format!("partition {partition}"),
                why: format!(
                    "It is a {}; pg_migrate backfills partitions that are ordinary tables.",
                    relkind_name(relkind.as_bytes().first().copied().unwrap_or(b'?'))
                ),
            }
            .report();
        }
        if !select || !update {
            MigrateError::PartitionPrivilege {
                partition,
                privilege: if select { "UPDATE" } else { "SELECT" },
                role: role.to_string(),
            }
            .report();
        }
    }
}

/// A table a backfill may work on, and how its batches walk it.
pub struct Target {
    pub qualified: String,
    pub walk: Walk,
}

/// Check that `rel` is a table pg_migrate may update, and choose how to
/// walk it.
pub fn check_target(
    rel: &PgRelation,
    where_clause: Option<&str>,
    on_error: pace::OnError,
) -> Target {
    let relid = rel.oid();
    let (relkind, persistence, namespace) = unsafe {
        let form = rel.rd_rel;
        (
            (*form).relkind as u8,
            (*form).relpersistence as u8,
            (*form).relnamespace,
        )
    };
    let qualified = format!("{}.{}", rel.namespace(), rel.name());
    if relkind != b'r' && relkind != b'p' {
        MigrateError::NotATable {
            relation: qualified,
            kind: relkind_name(relkind),
        }
        .report();
    }
    if namespace == pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE)
        || unsafe { pg_sys::IsCatalogRelationOid(relid) }
    {
        MigrateError::CannotBackfill {
            what: format!("system catalog {qualified}"),
            why: "pg_migrate changes user tables only.".into(),
        }
        .report();
    }
    if persistence == b't' {
        MigrateError::CannotBackfill {
            what: format!("temporary table {qualified}"),
            why: "A temporary table exists only in the session that created it; the job's workers cannot see it."
                .into(),
        }
        .report();
    }
    let walk = match choose_key(relid) {
        Some(columns) => Walk::Key { columns },
        None if relkind == b'p' => MigrateError::CannotBackfill {
            what: format!("partitioned table {qualified} without a primary key"),
            why: "Add a primary key (or a unique index on NOT NULL columns) so batches can walk it.".into(),
        }
        .report(),
        None if where_clause.is_none() => MigrateError::NeedsWhere { relation: qualified }.report(),
        None if on_error == pace::OnError::Skip => MigrateError::CannotBackfill {
            what: format!("{qualified} with on_error => 'skip'"),
            why: "Skipping a failing row needs a key to name it; the table has no primary key or unique NOT NULL index."
                .into(),
        }
        .report(),
        None => Walk::Ctid,
    };
    Target { qualified, walk }
}

/// The job's own pacing options, checked.
#[allow(clippy::too_many_arguments)]
pub fn pace_options(
    target_batch_ms: Option<i32>,
    max_batch_size: Option<i32>,
    max_replay_lag: Option<Interval>,
    max_slot_wal: Option<&str>,
    max_rows_per_second: Option<i32>,
    max_wal_per_second: Option<&str>,
    pause_during_vacuum: Option<bool>,
    window_start: Option<&str>,
    window_length: Option<Interval>,
) -> pace::PaceOptions {
    let range = |arg: &'static str, v: Option<i32>, min: i32, max: i32, allowed: &'static str| {
        v.map(|_| int_arg(arg, v, min, max, allowed) as i64)
    };
    let window = window_option(window_start, window_length);
    pace::PaceOptions {
        target_batch_ms: range(
            "target_batch_ms",
            target_batch_ms,
            10,
            60_000,
            "a target_batch_ms from 10 to 60000",
        ),
        max_batch_size: range(
            "max_batch_size",
            max_batch_size,
            1,
            1_000_000,
            "a max_batch_size from 1 to 1000000",
        ),
        max_replay_lag_ms: max_replay_lag.map(|i| interval_ms("max_replay_lag", Some(i))),
        max_slot_wal_bytes: max_slot_wal.map(|v| size_bytes("max_slot_wal", v)),
        max_rows_per_second: range(
            "max_rows_per_second",
            max_rows_per_second,
            0,
            i32::MAX,
            "0 (no budget) or more",
        ),
        max_wal_bytes_per_second: max_wal_per_second.map(|v| size_bytes("max_wal_per_second", v)),
        pause_during_vacuum,
        window,
    }
}

/// '5GB', '20 MB', '1048576': PostgreSQL's pg_size_bytes; never negative.
fn size_bytes(arg: &'static str, text: &str) -> i64 {
    let bytes = crate::sys::pinned(|| {
        Spi::connect(|c| {
            c.select("SELECT pg_catalog.pg_size_bytes($1)", None, &[text.into()])?
                .first()
                .get_one::<i64>()
        })
    })
    .ok()
    .flatten()
    .unwrap_or(0);
    if bytes < 0 {
        MigrateError::Negative { arg }.report();
    }
    bytes
}

/// Queue a backfill of `relation`: `UPDATE relation SET set_clause WHERE
/// where_clause`, in batches that each commit with the job's cursor.
/// Returns the job id at once; a background worker runs it (or CALL
/// migrate_run).
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
pub fn migrate_backfill(
    relation: Option<PgRelation>,
    set_clause: Option<&str>,
    where_clause: default!(Option<&str>, NULL),
    batch_size: default!(Option<i32>, NULL),
    sleep_ms: default!(Option<i32>, 0),
    lock_timeout: default!(Option<Interval>, "'1s'"),
    statement_timeout: default!(Option<Interval>, "'1min'"),
    max_retries: default!(Option<i32>, 5),
    run_at: default!(Option<TimestampWithTimeZone>, NULL),
    migration: default!(Option<Vec<Option<String>>>, NULL),
    target_batch_ms: default!(Option<i32>, NULL),
    max_batch_size: default!(Option<i32>, NULL),
    max_replay_lag: default!(Option<Interval>, NULL),
    max_slot_wal: default!(Option<&str>, NULL),
    max_rows_per_second: default!(Option<i32>, NULL),
    max_wal_per_second: default!(Option<&str>, NULL),
    pause_during_vacuum: default!(Option<bool>, NULL),
    window_start: default!(Option<&str>, NULL),
    window_length: default!(Option<Interval>, NULL),
    on_error: default!(Option<&str>, "'fail'"),
    after_jobs: default!(Option<Vec<Option<i64>>>, NULL),
    after_migration: default!(Option<Vec<Option<String>>>, NULL),
    parallel: default!(Option<i32>, 1),
) -> i64 {
    let gates = gate_options(after_jobs, after_migration);
    let rel = relation
        .ok_or(MigrateError::NullArgument { arg: "relation" })
        .or_report();
    let set_clause = set_clause
        .ok_or(MigrateError::NullArgument { arg: "set_clause" })
        .or_report();
    if set_clause.trim().is_empty() {
        MigrateError::EmptyArgument { arg: "set_clause" }.report();
    }
    let where_clause = where_clause.filter(|w| !w.trim().is_empty());
    let fixed_batch = batch_size.is_some();
    let batch_size = match batch_size {
        Some(_) => int_arg(
            "batch_size",
            batch_size,
            1,
            1_000_000,
            "a batch_size from 1 to 1000000",
        ),
        None => pace::FIRST_BATCH_SIZE.min(max_batch_size.unwrap_or(i32::MAX) as i64) as i32,
    };
    let pace = pace_options(
        target_batch_ms,
        max_batch_size,
        max_replay_lag,
        max_slot_wal,
        max_rows_per_second,
        max_wal_per_second,
        pause_during_vacuum,
        window_start,
        window_length,
    );
    let on_error = match on_error {
        Some("fail") => pace::OnError::Fail,
        Some("skip") => pace::OnError::Skip,
        other => MigrateError::InvalidValue {
            arg: "on_error",
            value: other.unwrap_or("NULL").to_string(),
            allowed: "'fail' (the default) or 'skip'",
        }
        .report(),
    };
    let sleep_ms = int_arg(
        "sleep_ms",
        sleep_ms,
        0,
        3_600_000,
        "a sleep_ms from 0 to 3600000 (one hour)",
    );
    let max_retries = int_arg(
        "max_retries",
        max_retries,
        0,
        100,
        "max_retries from 0 to 100",
    );
    let parallel = int_arg(
        "parallel",
        parallel,
        1,
        64,
        "a parallel from 1 (one batch at a time) to 64",
    );
    let lock_timeout_ms = interval_ms("lock_timeout", lock_timeout);
    let statement_timeout_ms = interval_ms("statement_timeout", statement_timeout);
    let migration = migration_option(migration);
    unsafe {
        pg_sys::PreventCommandIfReadOnly(c"migrate_backfill()".as_ptr());
        pg_sys::PreventCommandDuringRecovery(c"migrate_backfill()".as_ptr());
    }

    let target = check_target(&rel, where_clause, on_error);
    let relid = rel.oid();
    let walk = target.walk;
    let b = Backfill {
        schema: rel.namespace(),
        table: rel.name(),
        walk: &walk,
        set_clause,
        where_clause,
    };
    validate(&b);
    let role = current_role_name();
    let partitioned = unsafe { (*rel.rd_rel).relkind as u8 } == b'p';
    if partitioned {
        check_partitions(relid, &role);
    }

    let spec = BackfillSpec {
        set_clause: set_clause.to_string(),
        where_clause: where_clause.map(String::from),
        walk: walk.clone(),
        sleep_ms: sleep_ms as i64,
        lock_timeout_ms,
        statement_timeout_ms,
        max_retries,
        settings: CAPTURED_SETTINGS
            .iter()
            .map(|n| (n.to_string(), sys::setting(n)))
            .collect(),
        fixed_batch_size: fixed_batch.then_some(batch_size as i64),
        pace,
        on_error,
        parallel: (parallel > 1).then_some(parallel as i64),
        remote: None,
    };
    let owner = unsafe { pg_sys::GetUserId() };
    let command = b.plain_update();
    let link_allowed = migration.is_none() || may_write_history();
    let id = as_owner(|| {
        let description = format!(
            "backfill of {}.{} by pg_migrate",
            quote_ident(b.schema),
            quote_ident(b.table)
        );
        let run = start_linked_run(migration.as_ref(), link_allowed, &description, &role);
        jobs::insert(NewJob {
            kind: super::FACTS.name,
            relid,
            relation: &qualified_display(b.schema, b.table),
            owner,
            spec: serde_json::to_value(&spec).expect("spec serialises"),
            command: &command,
            batch_size: Some(batch_size),
            run_at: run_at_option(run_at),
            migration: run,
            index_oid: None,
            gates: &gates,
        })
    });
    announce(id, false);
    id
}
