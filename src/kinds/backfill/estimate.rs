//! migrate_estimate: what a backfill will cost, from a sample run that is
//! rolled back.

use super::run::{run_batch, Range};
use super::submit::{check_target, validate};
use crate::api::args::int_arg;
use crate::catalog::jobs as catalog_jobs;
use crate::engine::keyset::{quote_ident, Backfill, Walk};
use crate::engine::pace::{self, OnError};
use crate::error::{MigrateError, OrReport};
use crate::gucs;
use crate::runner::pace::wal_bytes_now;
use crate::sys;
use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::PgRelation;
use std::time::Instant;

/// Estimate a backfill before running it: run its real batch statement on
/// ten ranges of the table that start at random rows (found through
/// TABLESAMPLE SYSTEM), each in a subtransaction that is always rolled
/// back, and extrapolate to the table the rows it would change, how long it
/// would take and how much WAL it would write.  The sampled rows are locked
/// and their WAL written while it runs, as for any UPDATE; nothing stays.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out here
fn migrate_estimate(
    relation: Option<PgRelation>,
    set_clause: Option<&str>,
    where_clause: default!(Option<&str>, NULL),
    sample_rows: default!(Option<i32>, 10000),
) -> TableIterator<
    'static,
    (
        name!(rows_total, i64),
        name!(rows_to_update, i64),
        name!(sample_rows, i64),
        name!(sample_updated, i64),
        name!(sample_ms, f64),
        name!(estimated_duration, Interval),
        name!(estimated_wal_bytes, i64),
        name!(estimated_wal, String),
        name!(batch_size, i64),
        name!(batches, i64),
    ),
> {
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
    let want = int_arg(
        "sample_rows",
        sample_rows,
        1,
        1_000_000,
        "a sample_rows from 1 to 1000000",
    ) as i64;
    unsafe { pg_sys::PreventCommandDuringRecovery(c"migrate_estimate()".as_ptr()) };

    let target = check_target(&rel, where_clause, OnError::Fail);
    let b = Backfill {
        schema: rel.namespace(),
        table: rel.name(),
        walk: &target.walk,
        set_clause,
        where_clause,
    };
    validate(&b);

    let relid = rel.oid();
    let total = crate::catalog::as_owner(|| catalog_jobs::row_estimate(relid)).max(0);
    let pages = crate::catalog::as_owner(|| catalog_jobs::table(relid)).map_or(0, |t| t.pages);
    let table = format!("{}.{}", quote_ident(b.schema), quote_ident(b.table));

    // The real batch statement, on RANGES ranges that start at random places
    // of the table (found with TABLESAMPLE SYSTEM: random pages, never the
    // whole table), each in a subtransaction that is always rolled back.
    const RANGES: i64 = 10;
    let per_range = (want / RANGES).max(1);
    // Enough pages that the sample is very unlikely to come back short:
    // about fifty rows and four pages per range are expected.
    let by_rows = if total <= RANGES * 50 {
        100.0
    } else {
        RANGES as f64 * 50.0 * 100.0 / total as f64
    };
    let by_pages = if pages <= RANGES * 4 {
        100.0
    } else {
        RANGES as f64 * 4.0 * 100.0 / pages as f64
    };
    let percent = by_rows.max(by_pages).min(100.0);
    // Key walk: ten random start keys and the table's last key; ctid walk:
    // ten block ranges spread over the table.
    let mut key_starts: Vec<Vec<String>> = Vec::new();
    let mut upper: Option<Vec<String>> = None;
    let mut blocks: Vec<(i64, i64)> = Vec::new();
    match &target.walk {
        Walk::Key { columns } => {
            let keys: Vec<String> = columns
                .iter()
                .map(|c| format!("{}::pg_catalog.text", quote_ident(&c.name)))
                .collect();
            let sample = format!(
                "SELECT ARRAY[{}] FROM {table} TABLESAMPLE SYSTEM ($1) ORDER BY pg_catalog.random() LIMIT {RANGES}",
                keys.join(", ")
            );
            let upper_sql = b.bound_sql(true).expect("a key walk");
            (key_starts, upper) = crate::sys::pinned(|| {
                Spi::connect(|c| {
                    // A sample that still came back short (few pages, or pages
                    // of dead rows) is drawn again from four times as many pages.
                    let mut percent = percent;
                    let starts: Vec<Vec<String>> = loop {
                        let starts: Vec<Vec<String>> = c
                            .select(sample.as_str(), None, &[percent.into()])?
                            .map(|r| r.get::<Vec<String>>(1).map(|k| k.unwrap_or_default()))
                            .collect::<Result<_, _>>()?;
                        if starts.len() as i64 >= RANGES || percent >= 100.0 {
                            break starts;
                        }
                        percent = (percent * 4.0).min(100.0);
                    };
                    let upper = c
                        .select(upper_sql.as_str(), None, &[])?
                        .next()
                        .and_then(|r| r.get::<Vec<String>>(1).ok().flatten());
                    Ok::<_, pgrx::spi::SpiError>((starts, upper))
                })
            })
            .unwrap_or_else(|e| pgrx::error!("pg_migrate: sampling keys: {e}"));
        }
        Walk::Ctid => {
            let per_page = (total as f64 / pages.max(1) as f64).max(1.0);
            let span = ((per_range as f64 / per_page).ceil() as i64).max(1);
            blocks = (0..RANGES)
                .map(|i| {
                    let start = if pages > span {
                        (pages - span) * i / (RANGES - 1).max(1)
                    } else {
                        0
                    };
                    (start, start + span)
                })
                .collect();
        }
    }
    let ranges: Vec<Range<'_>> = match &upper {
        Some(u) => key_starts
            .iter()
            .map(|start| Range::Keys {
                cursor: Some(start.as_slice()),
                upper: u,
                limit: per_range,
            })
            .collect(),
        None => blocks
            .iter()
            .map(|(start, end)| Range::Blocks {
                start: *start,
                end: *end,
            })
            .collect(),
    };
    let wal_before = wal_bytes_now();
    let started = Instant::now();
    let mut examined = 0i64;
    let mut updated = 0i64;
    for range in ranges {
        match sys::subtransaction(false, || run_batch(&b, range)) {
            Ok((c, u, _)) => {
                examined += c;
                updated += u;
            }
            Err(e) => sys::raise_at(
                &e,
                "",
                0,
                Some("A sample batch raised this; the backfill would fail the same way (or skip such rows with on_error => 'skip').".into()),
            ),
        }
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let wal = wal_bytes_now() - wal_before;

    let total = total.max(examined);
    let per_row_ms = if examined > 0 {
        ms / examined as f64
    } else {
        0.0
    };
    let to_update = if examined > 0 {
        (updated as f64 / examined as f64 * total as f64).round() as i64
    } else {
        0
    };
    let wal_total = if examined > 0 {
        (wal as f64 / examined as f64 * total as f64).round() as i64
    } else {
        0
    };
    let duration_ms = per_row_ms * total as f64;
    let sizing = pace::Sizing {
        target_ms: gucs::target_batch_ms() as f64,
        min: pace::MIN_BATCH_SIZE,
        max: gucs::max_batch_size(),
    };
    let batch = if per_row_ms > 0.0 {
        ((sizing.target_ms / per_row_ms).round() as i64).clamp(sizing.min, sizing.max)
    } else {
        sizing.max
    };
    let batches = if total == 0 {
        0
    } else {
        (total + batch - 1) / batch
    };
    TableIterator::once((
        total,
        to_update,
        examined,
        updated,
        (ms * 10.0).round() / 10.0,
        Interval::from_micros((duration_ms * 1000.0).round() as i64),
        wal_total,
        pace::bytes_text(wal_total),
        batch,
        batches,
    ))
}
