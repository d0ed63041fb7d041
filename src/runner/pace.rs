//! Pacing a job: its options resolved against the server's settings, the
//! throttle signals read where they live (pg_stat_replication,
//! pg_replication_slots, pg_stat_progress_vacuum), its maintenance window,
//! and the budget clock that spreads rows and WAL over time.

use crate::catalog::SpiOrBug;
use crate::engine::cron::{self, Cron, Window};
use crate::engine::pace::{self as rules, Limits, PaceOptions, Signals, Sizing, WindowSpec};
use crate::gucs;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

/// A job's pacing, with the server's settings where the job has none.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub sizing: Sizing,
    pub limits: Limits,
    pub max_rows_per_second: i64,
    pub max_wal_bytes_per_second: i64,
    pub window: Option<(Cron, i64, String)>,
    pub history: i64,
}

pub fn resolve(p: &PaceOptions) -> Resolved {
    let target_ms = p.target_batch_ms.unwrap_or_else(gucs::target_batch_ms) as f64;
    Resolved {
        sizing: Sizing {
            target_ms,
            min: rules::MIN_BATCH_SIZE,
            max: p.max_batch_size.unwrap_or_else(gucs::max_batch_size).max(1),
        },
        limits: Limits {
            max_replay_lag_ms: p.max_replay_lag_ms.unwrap_or_else(gucs::max_replay_lag_ms),
            max_slot_wal_bytes: p
                .max_slot_wal_bytes
                .unwrap_or_else(gucs::max_slot_wal_bytes),
            pause_during_vacuum: p
                .pause_during_vacuum
                .unwrap_or_else(gucs::pause_during_vacuum),
        },
        max_rows_per_second: p
            .max_rows_per_second
            .unwrap_or_else(gucs::max_rows_per_second),
        max_wal_bytes_per_second: p
            .max_wal_bytes_per_second
            .unwrap_or_else(gucs::max_wal_bytes_per_second),
        window: p.window.as_ref().and_then(|w| {
            Cron::parse(&w.cron)
                .ok()
                .map(|c| (c, w.length_secs, window_text(w)))
        }),
        history: gucs::batch_history(),
    }
}

/// '0 1 * * * for 4 h'
fn window_text(w: &WindowSpec) -> String {
    format!(
        "{} for {}",
        w.cron,
        crate::engine::jobs::human_seconds(w.length_secs as f64)
    )
}

/// Read the signals the job's limits need (call as the owner: the views
/// show everything only to privileged roles).
pub fn signals(relid: pg_sys::Oid, l: &Limits) -> Signals {
    let mut s = Signals::default();
    if l.max_replay_lag_ms == 0 && l.max_slot_wal_bytes == 0 && !l.pause_during_vacuum {
        return s;
    }
    // One statement for every signal the limits need.
    crate::sys::pinned(|| {
        Spi::connect(|client| {
            let row = client
            .select(
                "SELECT CASE WHEN $1 THEN (
                            SELECT ARRAY[(extract(epoch FROM r.replay_lag) * 1000)::text,
                                         coalesce(nullif(r.application_name, ''), r.client_addr::text, r.pid::text)]
                              FROM pg_catalog.pg_stat_replication r
                             WHERE r.replay_lag IS NOT NULL
                             ORDER BY r.replay_lag DESC LIMIT 1) END,
                        CASE WHEN $2 THEN (
                            SELECT ARRAY[pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn)::bigint::text,
                                         s.slot_name::text]
                              FROM pg_catalog.pg_replication_slots s
                             WHERE s.restart_lsn IS NOT NULL
                             ORDER BY s.restart_lsn LIMIT 1) END,
                        CASE WHEN $3 THEN (
                            SELECT p.pid FROM pg_catalog.pg_stat_progress_vacuum p WHERE p.relid = $4 LIMIT 1) END",
                None,
                &[
                    (l.max_replay_lag_ms > 0).into(),
                    (l.max_slot_wal_bytes > 0).into(),
                    l.pause_during_vacuum.into(),
                    relid.into(),
                ],
            )
            .or_bug("reading throttle signals")
            .first();
            let pair = |i: usize| {
                row.get::<Vec<String>>(i)
                    .or_bug("reading throttle signals")
                    .filter(|v| v.len() == 2)
            };
            s.replay_lag_ms = pair(1).map(|v| (v[0].parse().unwrap_or(0.0), v[1].clone()));
            s.slot_wal_bytes = pair(2).map(|v| (v[0].parse().unwrap_or(0), v[1].clone()));
            s.vacuum_pid = row.get::<i32>(3).or_bug("reading throttle signals");
        })
    });
    s
}

/// The wall clock in `tz` now, as naive seconds (see engine::cron).
fn naive_now(tz: &str) -> i64 {
    crate::sys::pinned(|| Spi::connect(|c| {
        c.select(
            "SELECT floor(extract(epoch FROM (pg_catalog.clock_timestamp() AT TIME ZONE $1)))::bigint",
            None,
            &[tz.into()],
        )?
        .first()
        .get_one::<i64>()
    }))
    .or_bug("reading the clock")
    .unwrap_or(0)
}

/// Naive seconds in `tz` as a timestamptz, and as text for people.
fn from_naive(secs: i64, tz: &str) -> (TimestampWithTimeZone, String) {
    crate::sys::pinned(|| Spi::connect(|c| {
        let row = c
            .select(
                "SELECT (pg_catalog.to_timestamp($1) AT TIME ZONE 'UTC') AT TIME ZONE $2,
                        pg_catalog.to_char((pg_catalog.to_timestamp($1) AT TIME ZONE 'UTC'), 'YYYY-MM-DD HH24:MI')
                          || ' ' || $2",
                None,
                &[(secs as f64).into(), tz.into()],
            )?
            .first();
        Ok::<_, pgrx::spi::SpiError>((row.get::<TimestampWithTimeZone>(1)?, row.get::<String>(2)?))
    }))
    .map(|(t, s)| (t.expect("a timestamp"), s.unwrap_or_default()))
    .or_bug("converting a time")
}

/// None when the job's window is open (or it has none); else why it waits
/// and until when.
pub fn window_closed(r: &Resolved, tz: &str) -> Option<(String, TimestampWithTimeZone)> {
    let (cron, length, text) = r.window.as_ref()?;
    closed(cron, *length, text, tz)
}

/// The same for a window as a job's spec holds it.
pub fn spec_window_closed(w: &WindowSpec, tz: &str) -> Option<(String, TimestampWithTimeZone)> {
    let cron = Cron::parse(&w.cron).ok()?;
    closed(&cron, w.length_secs, &window_text(w), tz)
}

/// The next time `cron` matches after now, on the wall clock of `tz`.
pub fn next_match(cron: &Cron, tz: &str) -> Option<TimestampWithTimeZone> {
    cron.next_at_or_after(naive_now(tz) + 1)
        .map(|at| from_naive(at, tz).0)
}

fn closed(
    cron: &Cron,
    length: i64,
    text: &str,
    tz: &str,
) -> Option<(String, TimestampWithTimeZone)> {
    match cron::window(cron, length, naive_now(tz)) {
        Window::Open { .. } => None,
        Window::Closed { opens: Some(at) } => {
            let (until, shown) = from_naive(at, tz);
            Some((
                format!("outside its maintenance window ({text}); it opens at {shown}"),
                until,
            ))
        }
        Window::Closed { opens: None } => {
            // No opening in five years: look again in a day.
            let (until, _) = from_naive(naive_now(tz) + 86_400, tz);
            Some((
                format!("its maintenance window ({text}) never opens in the next five years"),
                until,
            ))
        }
    }
}

/// WAL bytes this backend has written so far.
pub fn wal_bytes_now() -> i64 {
    unsafe { pg_sys::pgWalUsage.wal_bytes as i64 }
}

thread_local! {
    /// Per job driven by this backend: when its last batch ended and how
    /// long the budget wait after it was.
    static CLOCK: RefCell<HashMap<i64, (Instant, f64)>> = RefCell::new(HashMap::new());
    /// Per job driven by this backend: WAL bytes per key walked (a moving
    /// average), which sizes batches under a WAL budget.
    static WAL_PER_KEY: RefCell<HashMap<i64, f64>> = RefCell::new(HashMap::new());
}

/// The WAL per key walked seen so far for a job in this backend.
pub fn wal_per_key(job_id: i64) -> Option<f64> {
    WAL_PER_KEY.with_borrow(|m| m.get(&job_id).copied())
}

/// Count a batch that walked `keys` keys and wrote `wal` bytes.
pub fn note_wal(job_id: i64, wal: i64, keys: i64) {
    if keys <= 0 {
        return;
    }
    let seen = wal.max(0) as f64 / keys as f64;
    WAL_PER_KEY.with_borrow_mut(|m| {
        let v = m
            .get(&job_id)
            .map_or(seen, |old| crate::engine::jobs::ewma(Some(*old), seen, 0.3));
        m.insert(job_id, v);
    });
}

/// The budget wait after a batch that wrote `rows` rows and `wal` bytes and ran
/// from `started` for `batch_ms`: long enough that the cycle since the
/// previous batch (its overhead included) spends no more than the budgets.
pub fn budget_wait(
    job_id: i64,
    started: Instant,
    batch_ms: f64,
    rows: i64,
    wal: i64,
    r: &Resolved,
) -> (f64, Option<&'static str>) {
    let now = Instant::now();
    let overhead = CLOCK.with_borrow(|c| {
        c.get(&job_id)
            .map(|(ended, waited)| {
                (started.duration_since(*ended).as_secs_f64() * 1000.0 - waited).max(0.0)
            })
            .filter(|o| *o < 10_000.0)
            .unwrap_or(0.0)
    });
    let (wait, why) = rules::pacing_ms(
        rows,
        wal,
        batch_ms + overhead,
        r.max_rows_per_second,
        r.max_wal_bytes_per_second,
    );
    CLOCK.with_borrow_mut(|c| c.insert(job_id, (now, wait)));
    (wait, why)
}

/// Forget the budget clock of a job (it was claimed anew).
pub fn reset_clock(job_id: i64) {
    CLOCK.with_borrow_mut(|c| c.remove(&job_id));
    WAL_PER_KEY.with_borrow_mut(|m| m.remove(&job_id));
}
