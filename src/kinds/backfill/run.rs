//! One batch of a backfill.
//!
//! The batch runs as the role that submitted the job, under the session
//! settings it had then (search_path, DateStyle, ...), inside a
//! subtransaction; it and the advance of the job's cursor commit together
//! in the step's transaction, so after a crash the job resumes at exactly
//! the next batch.

use super::clause;
use super::owner::as_job_owner;
use crate::catalog::as_owner;
use crate::catalog::jobs::{self, BatchDone, Job};
use crate::engine::jobs::{self as rules, ErrorClass, JobState};
use crate::engine::keyset::{Backfill, BackfillSpec, Walk};
use crate::engine::pace as pace_rules;
use crate::kinds::model::{Driver, StepReport};
use crate::runner::outcome::{fail, succeed};
use crate::runner::pace;
use crate::sys::{self, Caught};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

/// How often a foreground run prints progress.
const NOTICE_EVERY_SECS: u64 = 5;

thread_local! {
    static LAST_NOTICE: RefCell<HashMap<i64, Instant>> = RefCell::new(HashMap::new());
}

fn texts(values: &[String]) -> Vec<DatumWithOid<'static>> {
    values.iter().map(|v| v.as_str().into()).collect()
}

/// Keys covered, rows updated, last key.
pub type BatchResult = (i64, i64, Option<Vec<String>>);

/// Where one batch runs.
pub enum Range<'a> {
    /// The next `limit` keys after `cursor` (None: from the start), up to
    /// `upper`.
    Keys {
        cursor: Option<&'a [String]>,
        upper: &'a [String],
        limit: i64,
    },
    /// Blocks `[start, end)` of the heap.
    Blocks { start: i64, end: i64 },
}

/// Run one batch: find its bounds, then update its rows.  Call inside a
/// subtransaction, as the job's owner.
pub fn run_batch(b: &Backfill<'_>, range: Range<'_>) -> BatchResult {
    Spi::connect_mut(|client| match range {
        Range::Keys {
            cursor,
            upper,
            limit,
        } => {
            let batch = b.batch(cursor.is_some());
            let mut params: Vec<DatumWithOid<'_>> = cursor.map(texts).unwrap_or_default();
            params.extend(texts(upper));
            params.push(limit.into());
            let row = client.update(batch.bounds.as_str(), None, &params)?.first();
            let covered = row.get::<i64>(1)?.unwrap_or(0);
            let Some(last) = row.get::<Vec<String>>(2)? else {
                return Ok((0, 0, None));
            };
            let mut params: Vec<DatumWithOid<'_>> = cursor.map(texts).unwrap_or_default();
            params.extend(texts(&last));
            let updated = client.update(batch.update.as_str(), None, &params)?.len() as i64;
            Ok::<_, pgrx::spi::SpiError>((covered, updated, Some(last)))
        }
        Range::Blocks { start, end } => {
            let batch = b.batch(true);
            let params: Vec<DatumWithOid<'_>> = vec![start.into(), end.into()];
            let covered = client
                .update(batch.bounds.as_str(), None, &params)?
                .first()
                .get::<i64>(1)?
                .unwrap_or(0);
            let updated = client.update(batch.update.as_str(), None, &params)?.len() as i64;
            Ok((covered, updated, Some(vec![end.to_string()])))
        }
    })
    .unwrap_or_else(|e| pgrx::error!("pg_migrate: reading a batch result: {e}"))
}

/// Apply the submitter's session settings and the job's lock timeout for
/// the rest of this transaction.  Unless pg_migrate.synchronous_batches is
/// on, the commit does not wait for its WAL flush: the batch's rows and the
/// job's cursor are in the same transaction, so a crash loses both or
/// neither, and the batch is done again.  Any later commit that waits for
/// its flush (a client's next step after it saw the job end) flushes them
/// too.
fn apply_settings(spec: &BackfillSpec) {
    for (name, value) in &spec.settings {
        sys::set_local(name, value);
    }
    if !crate::gucs::synchronous_batches() {
        sys::set_local("synchronous_commit", "off");
    }
    sys::set_local(
        "lock_timeout",
        &format!("{}ms", spec.lock_timeout_ms.max(0)),
    );
}

pub fn step(job: &Job, driver: Driver) -> StepReport {
    let spec = match crate::kinds::job::spec_of::<BackfillSpec>(job) {
        Ok(spec) => spec,
        Err(e) => return fail(job, &e),
    };
    // The job's lock_timeout from here on: reading the table's size takes
    // its lock too, and a DDL holding the table must not hold the worker.
    apply_settings(&spec);
    let table = match sys::subtransaction(true, || crate::kinds::job::table_of(job)) {
        Ok(Ok(table)) => table,
        Ok(Err(e)) => return fail(job, &e),
        Err(e) => return retry_or_fail(job, &spec, &e, "reading the table"),
    };
    // A job stored by an older version was checked less strictly: its
    // clauses must pass today's check before they reach a batch.
    if let Err(r) = clause::check(&spec.set_clause, spec.where_clause.as_deref()) {
        let mut e = r.error;
        e.message = format!("{}: {}", r.arg, e.message);
        return fail(job, &e);
    }
    if let Some(shard) = &spec.remote {
        return super::citus::step(job, &spec, shard, driver);
    }
    if super::slices::splits(job, &spec, &table) {
        return super::slices::step(job, &spec, &table, driver);
    }
    let b = Backfill {
        schema: &table.schema,
        table: &table.name,
        walk: &spec.walk,
        set_clause: &spec.set_clause,
        where_clause: spec.where_clause.as_deref(),
    };

    // First step: fix the range of the job.
    let mut job = job.clone();
    if job.upper.is_none() {
        match bounds(&job, &spec, &b, table.pages) {
            Ok(None) => return succeed(&job),
            Ok(Some((lower, upper, estimate))) => {
                as_owner(|| jobs::set_bounds(job.id, lower.clone(), Some(upper.clone()), estimate));
                job.lower = lower;
                job.upper = Some(upper);
                job.rows_estimate = Some(estimate);
            }
            Err(e) => return retry_or_fail(&job, &spec, &e, "reading the key range"),
        }
    }
    let upper = job.upper.clone().expect("set above");
    let mut pacing = pace::resolve(&spec.pace);
    // A job queued after a like one starts at the size that one reached.
    if job.batches == 0 && spec.fixed_batch_size.is_none() {
        if let Some(size) = as_owner(|| jobs::inherited_batch_size(job.id)) {
            job.batch_size = size.clamp(pacing.sizing.min, pacing.sizing.max) as i32;
        }
    }
    // A slice spends its share of its job's budgets: the job's, divided
    // among the slices that run now.
    if let Some(parent) = job.parent {
        let running = as_owner(|| jobs::slices_running(parent)).max(1);
        let share = |budget: i64| {
            if budget > 0 {
                (budget / running).max(1)
            } else {
                budget
            }
        };
        pacing.max_rows_per_second = share(pacing.max_rows_per_second);
        pacing.max_wal_bytes_per_second = share(pacing.max_wal_bytes_per_second);
    }

    // A worker lets go of a job outside its maintenance window; CALL
    // migrate_run is an explicit "now" and runs it anyway.
    if driver == Driver::Worker {
        let tz = spec
            .settings
            .iter()
            .find(|(name, _)| name == "TimeZone")
            .map_or("UTC", |(_, v)| v.as_str());
        if let Some((why, until)) = pace::window_closed(&pacing, tz) {
            as_owner(|| jobs::release_until(job.id, &why, until));
            return StepReport::done(JobState::Waiting);
        }
    }
    // Throttles, read where they live.
    let signals = as_owner(|| pace::signals(job.relid, &pacing.limits));
    if let Some(why) = pace_rules::throttle_reason(&signals, &pacing.limits) {
        const LOOK_AGAIN_MS: i64 = 1000;
        as_owner(|| jobs::throttled(job.id, &why, LOOK_AGAIN_MS));
        return StepReport {
            state: JobState::Waiting,
            done: false,
            sleep_ms: LOOK_AGAIN_MS,
            notice: None,
        };
    }

    // The rows budget counts rows written.  A batch walks keys, of which
    // only those the where clause matches are written: the cap on keys per
    // batch grows by the share of keys written so far.
    let written_share = if job.rows_updated > 0 {
        job.rows_updated as f64 / job.rows_done.max(1) as f64
    } else {
        1.0
    };
    let rows_cap = pace_rules::budget_cap(pacing.max_rows_per_second, pacing.sizing.target_ms)
        .map(|rows| ((rows as f64 / written_share.max(1e-6)).round() as i64).max(rows))
        .unwrap_or(i64::MAX);
    // The WAL budget caps keys at the WAL per key seen so far.
    let wal_cap = |job_id| {
        pace_rules::wal_budget_cap(
            pacing.max_wal_bytes_per_second,
            pacing.sizing.target_ms,
            pace::wal_per_key(job_id),
        )
        .unwrap_or(i64::MAX)
    };
    let cap = rows_cap.min(wal_cap(job.id));
    let size = (job.batch_size as i64).min(cap).max(1);
    let (range, ctid_next) = match &spec.walk {
        Walk::Key { .. } => (
            Range::Keys {
                cursor: job.cursor.as_deref(),
                upper: &upper,
                limit: size,
            },
            None,
        ),
        Walk::Ctid => {
            let start: i64 = job
                .cursor
                .as_ref()
                .and_then(|c| c[0].parse().ok())
                .unwrap_or(0);
            let end_block: i64 = upper[0].parse().unwrap_or(0);
            if start >= end_block {
                return succeed(&job);
            }
            let per_page =
                (job.rows_estimate.unwrap_or(0) as f64 / table.pages.max(1) as f64).max(1.0);
            let pages = ((size as f64 / per_page).ceil() as i64).max(1);
            let next = (start + pages).min(end_block);
            (Range::Blocks { start, end: next }, Some(next))
        }
    };

    sys::report_activity(&format!(
        "pg_migrate: backfill job {} on {}.{}: batch {} of {} rows ({} rows so far)",
        job.id,
        table.schema,
        table.name,
        job.batches + 1,
        size,
        job.rows_done
    ));
    let wal_before = pace::wal_bytes_now();
    let started = Instant::now();
    let result = as_job_owner(&job, &spec, true, || run_batch(&b, range));
    let batch_ms = started.elapsed().as_secs_f64() * 1000.0;
    let wal_bytes = pace::wal_bytes_now() - wal_before;

    match result {
        Ok((covered, updated, last)) => {
            pace::note_wal(job.id, wal_bytes, covered);
            let (cursor, finished) = match ctid_next {
                Some(next) => (vec![next.to_string()], next.to_string() == upper[0]),
                None => match last {
                    Some(l) => (l, false),
                    None => return succeed(&job),
                },
            };
            let rows_done = job.rows_done + covered;
            let estimate = rules::refine_total(
                job.rows_estimate.unwrap_or(0),
                rows_done,
                key_fraction(&spec.walk, job.lower.as_deref(), &cursor, &upper),
            );
            let ms_per_row = if covered > 0 {
                Some(rules::ewma(job.ms_per_row, batch_ms / covered as f64, 0.3))
            } else {
                job.ms_per_row
            };
            let next_size = match spec.fixed_batch_size {
                Some(fixed) => fixed,
                None => pace_rules::next_batch_size(
                    size,
                    ms_per_row.unwrap_or(f64::NAN),
                    &pacing.sizing,
                ),
            }
            .min(rows_cap)
            .min(wal_cap(job.id));
            let (budget_ms, budget) =
                pace::budget_wait(job.id, started, batch_ms, updated, wal_bytes, &pacing);
            let wait = match budget {
                Some(which) if budget_ms > spec.sleep_ms as f64 => Some((
                    match which {
                        "rows" => format!(
                            "rate limit: {} rows/s",
                            rules::thousands(pacing.max_rows_per_second)
                        ),
                        _ => format!(
                            "WAL budget: {}/s",
                            pace_rules::bytes_text(pacing.max_wal_bytes_per_second)
                        ),
                    },
                    budget_ms.ceil() as i64,
                )),
                _ => None,
            };
            let sleep_ms = wait.as_ref().map_or(spec.sleep_ms, |(_, ms)| *ms);
            let seconds = (batch_ms + sleep_ms as f64) / 1000.0;
            let rate = rules::ewma(job.rate, covered as f64 / seconds.max(0.001), 0.3);
            let waiting = wait.is_some();
            as_owner(|| {
                jobs::after_batch(
                    job.id,
                    &BatchDone {
                        after_key: job.cursor.clone(),
                        cursor,
                        covered,
                        updated,
                        batch_size_used: size,
                        batch_ms,
                        wal_bytes,
                        retries: job.retries,
                        rate,
                        rows_estimate: estimate,
                        ms_per_row,
                        next_batch_size: next_size,
                        wait,
                        keep: pacing.history,
                    },
                )
            });
            if finished {
                return succeed(&job);
            }
            let notice = (driver == Driver::Session && notice_due(job.id))
                .then(|| rules::progress_line(job.id, rows_done, estimate, Some(rate)));
            StepReport {
                state: if waiting {
                    JobState::Waiting
                } else {
                    JobState::Running
                },
                done: false,
                sleep_ms,
                notice,
            }
        }
        Err(e) => {
            match if e.sqlstate == "42P01" && renamed(job.relid, &table.schema, &table.name) {
                // The table was renamed or moved between reading its name and
                // the batch: the next try uses its new name.
                ErrorClass::Retry("the table was renamed")
            } else {
                rules::classify(&e.sqlstate, batch_ms, spec.statement_timeout_ms)
            } {
                ErrorClass::Retry(reason) => {
                    // Narrow the batch: fewer rows, fewer locks.
                    let narrower = pace_rules::halved(size, pace_rules::MIN_BATCH_SIZE);
                    let seed = started.elapsed().as_nanos() as u64;
                    back_off(&job, &spec, &e, reason, Retrying::Batch(narrower), seed)
                }
                ErrorClass::Interrupted => match driver {
                    Driver::Session => {
                        // Let CALL migrate_run see the cancel: it pauses the job.
                        pgrx::pg_sys::panic::ErrorReport::new(
                            PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                            e.message.clone(),
                            "pg_migrate",
                        )
                        .report(PgLogLevel::ERROR);
                        unreachable!()
                    }
                    Driver::Worker => {
                        let why = "paused: its batch was cancelled (pg_cancel_backend); migrate_resume() continues it";
                        as_owner(|| jobs::set_state(job.id, JobState::Paused, Some(why), false));
                        StepReport::done(JobState::Paused)
                    }
                },
                ErrorClass::Fail => {
                    let found = match &spec.walk {
                        Walk::Key { .. } => failing_key(&job, &spec, &b, &upper, size),
                        Walk::Ctid => None,
                    };
                    if let (pace_rules::OnError::Skip, Some((index, keys))) =
                        (spec.on_error, &found)
                    {
                        return skip(&job, &spec, &b, keys, *index, &e);
                    }
                    let mut e = e;
                    let located = match (&spec.walk, &found) {
                        (Walk::Key { columns }, Some((index, keys))) => {
                            let names: Vec<&str> =
                                columns.iter().map(|c| c.name.as_str()).collect();
                            Some(format!(
                                "Failing row: ({})=({}).",
                                names.join(", "),
                                keys[*index].join(", ")
                            ))
                        }
                        (Walk::Key { .. }, None) => None,
                        (Walk::Ctid, _) => Some(format!(
                            "Failing batch: blocks {} to {} of the table.",
                            job.cursor
                                .as_ref()
                                .map(|c| c[0].clone())
                                .unwrap_or_else(|| "0".into()),
                            ctid_next.unwrap_or(0) - 1
                        )),
                    };
                    e.detail = match (located, e.detail.take()) {
                        (Some(l), Some(d)) => Some(format!("{l} {d}")),
                        (Some(l), None) => Some(l),
                        (None, d) => d,
                    };
                    fail(&job, &e)
                }
            }
        }
    }
}

/// Does table `relid` still exist under another name than `schema.name`?  Read
/// from the catalog cache, which the failed lookup has brought up to date
/// (the step's snapshot still sees the old name).
fn renamed(relid: pg_sys::Oid, schema: &str, name: &str) -> bool {
    // SAFETY: catalog cache lookups; NULL when the table is gone.
    unsafe {
        let now = pg_sys::get_rel_name(relid);
        if now.is_null() {
            return false;
        }
        let nsp = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        std::ffi::CStr::from_ptr(now).to_string_lossy() != name
            || (!nsp.is_null() && std::ffi::CStr::from_ptr(nsp).to_string_lossy() != schema)
    }
}

/// What is tried again after a transient error.
enum Retrying<'a> {
    /// The batch, with this many rows.
    Batch(i64),
    /// A step before the batches (reading the table, its key range).
    Before(&'a str),
}

/// An error outside a batch: a lock timeout, a deadlock or a serialization
/// failure is retried later as a batch's would be (a migration's DDL on the
/// table at that moment is not the job's fault); anything else fails the
/// job.
fn retry_or_fail(job: &Job, spec: &BackfillSpec, e: &Caught, what: &str) -> StepReport {
    match rules::classify(&e.sqlstate, 0.0, 0) {
        ErrorClass::Retry(reason) => back_off(job, spec, e, reason, Retrying::Before(what), 0),
        _ => fail(job, e),
    }
}

/// A transient error (`reason`): the job waits, backing off (with jitter,
/// so that jobs do not retry in step), and tries again; after
/// `max_retries` tries it fails.
fn back_off(
    job: &Job,
    spec: &BackfillSpec,
    e: &Caught,
    reason: &str,
    what: Retrying<'_>,
    seed: u64,
) -> StepReport {
    let attempt = job.retries + 1;
    let (tried, next_size) = match what {
        Retrying::Batch(rows) => ("the same batch".to_string(), rows),
        Retrying::Before(step) => (step.to_string(), i64::from(job.batch_size)),
    };
    if attempt > spec.max_retries {
        let mut e = e.clone();
        e.detail = Some(format!(
            "Gave up after {} retries of {tried} ({reason}).{}",
            spec.max_retries,
            e.detail
                .as_ref()
                .map(|d| format!(" {d}"))
                .unwrap_or_default()
        ));
        return fail(job, &e);
    }
    let backoff = pace_rules::jittered(
        rules::backoff_ms(attempt),
        (job.id as u64) << 20 ^ attempt as u64 ^ seed,
    );
    let wait = rules::human_seconds(backoff as f64 / 1000.0);
    let why = match what {
        Retrying::Batch(rows) => format!(
            "{reason}; retry {attempt} of {} in {wait} with {} rows",
            spec.max_retries,
            rules::thousands(rows)
        ),
        Retrying::Before(step) => format!(
            "{reason} while {step}; retry {attempt} of {} in {wait}",
            spec.max_retries
        ),
    };
    as_owner(|| jobs::retry_later(job.id, attempt, &why, e, backoff, next_size));
    StepReport {
        state: JobState::Waiting,
        done: false,
        sleep_ms: backoff,
        notice: None,
    }
}

/// on_error => 'skip': do the rows of the batch before the failing one,
/// record the failing row, and move the cursor past it, in this step's
/// transaction.
fn skip(
    job: &Job,
    spec: &BackfillSpec,
    b: &Backfill<'_>,
    keys: &[Vec<String>],
    index: usize,
    e: &Caught,
) -> StepReport {
    let (covered, updated) = if index > 0 {
        let range = Range::Keys {
            cursor: job.cursor.as_deref(),
            upper: &keys[index - 1],
            limit: index as i64,
        };
        match as_job_owner(job, spec, true, || run_batch(b, range)) {
            Ok((c, u, _)) => (c, u),
            Err(again) => return fail(job, &again),
        }
    } else {
        (0, 0)
    };
    as_owner(|| jobs::record_skip(job.id, &keys[index], e, covered + 1, updated));
    StepReport::again(0, None)
}

/// The range a job covers, read as the job's owner: first and last key
/// (or the number of blocks) and the planner's row count.  None for an
/// empty table.
#[allow(clippy::type_complexity)]
fn bounds(
    job: &Job,
    spec: &BackfillSpec,
    b: &Backfill<'_>,
    pages: i64,
) -> Result<Option<(Option<Vec<String>>, Vec<String>, i64)>, Caught> {
    let estimate = as_owner(|| jobs::row_estimate(job.relid));
    match &spec.walk {
        Walk::Ctid => Ok((pages > 0).then(|| (None, vec![pages.to_string()], estimate))),
        Walk::Key { .. } => {
            let upper_sql = b.bound_sql(true).expect("key walk");
            let lower_sql = b.bound_sql(false).expect("key walk");
            as_job_owner(job, spec, true, || {
                Spi::connect(|client| {
                    let upper = client.select(&upper_sql, None, &[])?;
                    if upper.is_empty() {
                        return Ok(None);
                    }
                    let upper: Vec<String> = upper.first().get_one()?.unwrap_or_default();
                    let lower: Option<Vec<String>> =
                        client.select(&lower_sql, None, &[])?.first().get_one()?;
                    Ok::<_, pgrx::spi::SpiError>(Some((lower, upper, estimate)))
                })
                .unwrap_or_else(|e| pgrx::error!("pg_migrate: reading key bounds: {e}"))
            })
        }
    }
}

/// How far the cursor is through the key range, for a single numeric key.
fn key_fraction(
    walk: &Walk,
    lower: Option<&[String]>,
    cursor: &[String],
    upper: &[String],
) -> Option<f64> {
    let Walk::Key { columns } = walk else {
        let (c, u): (f64, f64) = (cursor[0].parse().ok()?, upper[0].parse().ok()?);
        return (u > 0.0).then(|| c / u);
    };
    if columns.len() != 1 {
        return None;
    }
    let (l, c, u): (f64, f64, f64) = (
        lower?[0].parse().ok()?,
        cursor[0].parse().ok()?,
        upper[0].parse().ok()?,
    );
    (u > l).then(|| ((c - l) / (u - l)).clamp(0.0, 1.0))
}

fn notice_due(job_id: i64) -> bool {
    LAST_NOTICE.with_borrow_mut(|m| {
        let now = Instant::now();
        match m.get(&job_id) {
            Some(t) if now.duration_since(*t).as_secs() < NOTICE_EVERY_SECS => false,
            _ => {
                m.insert(job_id, now);
                true
            }
        }
    })
}

/// Find the row that makes the batch fail: list the batch's keys, then
/// halve the range, trying each half in a subtransaction that is always
/// rolled back.  Returns the batch's keys and the failing one's index;
/// None when the failure does not repeat.
fn failing_key(
    job: &Job,
    spec: &BackfillSpec,
    b: &Backfill<'_>,
    upper: &[String],
    size: i64,
) -> Option<(usize, Vec<Vec<String>>)> {
    let list_sql = b.batch_keys_sql(job.cursor.is_some())?;
    let mut params = Vec::new();
    if let Some(c) = &job.cursor {
        params.extend(texts(c));
    }
    params.extend(texts(upper));
    params.push(size.into());
    let batch_keys: Vec<Vec<String>> = as_job_owner(job, spec, false, || {
        Spi::connect(|client| {
            client
                .select(&list_sql, None, &params)?
                .map(|r| r.get::<Vec<String>>(1).map(|k| k.unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default()
    })
    .ok()?;

    // Does the batch of keys (lo, hi] -- after key lo-1, up to key hi-1 -- fail?
    let fails = |lo: usize, hi: usize| -> bool {
        let cursor = match lo {
            0 => job.cursor.as_deref(),
            _ => Some(batch_keys[lo - 1].as_slice()),
        };
        let range = Range::Keys {
            cursor,
            upper: &batch_keys[hi - 1],
            limit: (hi - lo) as i64,
        };
        as_job_owner(job, spec, false, || run_batch(b, range)).is_err()
    };
    let (mut lo, mut hi) = (0usize, batch_keys.len());
    if hi == 0 || !fails(lo, hi) {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fails(lo, mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    fails(lo, lo + 1).then_some((lo, batch_keys))
}
