//! How fast a job may go: batch sizes aimed at a duration, throttles read
//! from the server's own state, and budgets of rows and WAL per second.

use serde::{Deserialize, Serialize};

/// A job's own pacing options; each one left out follows the server-wide
/// setting of the same name (read at every step, so a reload applies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PaceOptions {
    pub target_batch_ms: Option<i64>,
    pub max_batch_size: Option<i64>,
    pub max_replay_lag_ms: Option<i64>,
    pub max_slot_wal_bytes: Option<i64>,
    pub max_rows_per_second: Option<i64>,
    pub max_wal_bytes_per_second: Option<i64>,
    pub pause_during_vacuum: Option<bool>,
    pub window: Option<WindowSpec>,
}

/// A maintenance window: opens when `cron` matches, open for `length_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    pub cron: String,
    pub length_secs: i64,
}

/// What a job does with a row that raises an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The job fails, naming the row (the default).
    #[default]
    Fail,
    /// The row is recorded in migrate_skipped and the job goes on.
    Skip,
}

/// The smallest batch adaptive sizing or halving goes down to.
pub const MIN_BATCH_SIZE: i64 = 10;
/// The first batch of an adaptive job.
pub const FIRST_BATCH_SIZE: i64 = 1000;

/// Bounds of adaptive batch sizing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizing {
    /// The batch duration to aim at.
    pub target_ms: f64,
    pub min: i64,
    pub max: i64,
}

/// A batch may grow at most fourfold and shrink by at most half per step:
/// from its first 1,000 rows a job reaches a 64,000-row batch in its fourth
/// batch (a job of 100,000 fast rows is done in five batches, not ten).
pub const MAX_GROWTH: f64 = 4.0;
pub const MAX_SHRINK: f64 = 0.5;

/// The size of the next batch: what the moving average of milliseconds per
/// row says fits the target, moved at most 4x up or 2x down from the
/// current size, within bounds.
pub fn next_batch_size(current: i64, ms_per_row: f64, s: &Sizing) -> i64 {
    let ideal = if ms_per_row > 0.0 && ms_per_row.is_finite() {
        (s.target_ms / ms_per_row).round().min(i64::MAX as f64) as i64
    } else {
        (current as f64 * MAX_GROWTH) as i64
    };
    let up = (current as f64 * MAX_GROWTH).ceil() as i64;
    let down = (current as f64 * MAX_SHRINK).floor() as i64;
    ideal.clamp(down.max(1), up.max(1)).clamp(s.min, s.max)
}

/// After a lock timeout, deadlock or statement timeout: half the batch.
pub fn halved(current: i64, min: i64) -> i64 {
    (current / 2).max(min).max(1)
}

/// What the server says right now, read before each batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// The largest replay lag of any standby, and its name.
    pub replay_lag_ms: Option<(f64, String)>,
    /// The most WAL any replication slot holds back, and its name.
    pub slot_wal_bytes: Option<(i64, String)>,
    /// A VACUUM (auto or manual) working on the job's table: its pid.
    pub vacuum_pid: Option<i32>,
}

/// The throttles of a job; 0 (or false) turns one off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub max_replay_lag_ms: i64,
    pub max_slot_wal_bytes: i64,
    pub pause_during_vacuum: bool,
}

/// Why the job must wait now, if it must.
pub fn throttle_reason(s: &Signals, l: &Limits) -> Option<String> {
    if l.max_replay_lag_ms > 0 {
        if let Some((lag, standby)) = &s.replay_lag_ms {
            if *lag > l.max_replay_lag_ms as f64 {
                return Some(format!(
                    "replica lag: standby {standby} is {} behind (limit {})",
                    seconds(*lag),
                    seconds(l.max_replay_lag_ms as f64)
                ));
            }
        }
    }
    if l.max_slot_wal_bytes > 0 {
        if let Some((bytes, slot)) = &s.slot_wal_bytes {
            if *bytes > l.max_slot_wal_bytes {
                return Some(format!(
                    "replication slot {slot} holds back {} of WAL (limit {})",
                    bytes_text(*bytes),
                    bytes_text(l.max_slot_wal_bytes)
                ));
            }
        }
    }
    if l.pause_during_vacuum {
        if let Some(pid) = s.vacuum_pid {
            return Some(format!("VACUUM is working on the table (pid {pid})"));
        }
    }
    None
}

/// How long to wait after a batch so that, since the job's budget clock
/// started, neither `rows` nor `wal_bytes` run ahead of their per-second
/// budgets (0: no budget).  Returns the wait and which budget set it.
pub fn pacing_ms(
    rows: i64,
    wal_bytes: i64,
    elapsed_ms: f64,
    max_rows_per_second: i64,
    max_wal_bytes_per_second: i64,
) -> (f64, Option<&'static str>) {
    let mut wait = (0.0, None);
    if max_rows_per_second > 0 {
        let due = rows as f64 * 1000.0 / max_rows_per_second as f64 - elapsed_ms;
        if due > wait.0 {
            wait = (due, Some("rows"));
        }
    }
    if max_wal_bytes_per_second > 0 {
        let due = wal_bytes as f64 * 1000.0 / max_wal_bytes_per_second as f64 - elapsed_ms;
        if due > wait.0 {
            wait = (due, Some("wal"));
        }
    }
    wait
}

/// A batch under a rows-per-second budget should not hold more rows than
/// the budget allows in one target duration, or the budget is spent in
/// bursts.
pub fn budget_cap(max_rows_per_second: i64, target_ms: f64) -> Option<i64> {
    (max_rows_per_second > 0)
        .then(|| ((max_rows_per_second as f64 * target_ms / 1000.0).round() as i64).max(1))
}

/// The same under a WAL budget: no more keys than the budget's bytes for one
/// target duration cover, at the WAL per key seen so far (`None` before the
/// first batch).  A batch's WAL is flushed at its commit, and every write
/// that commits meanwhile waits for that flush too: a budget spent in a few
/// big batches makes those writes wait, the same budget in small ones not.
pub fn wal_budget_cap(
    max_wal_bytes_per_second: i64,
    target_ms: f64,
    wal_per_key: Option<f64>,
) -> Option<i64> {
    let per_key = wal_per_key.filter(|w| *w > 0.0)?;
    (max_wal_bytes_per_second > 0).then(|| {
        ((max_wal_bytes_per_second as f64 * target_ms / 1000.0 / per_key).round() as i64).max(1)
    })
}

/// `ms` spread over 75% to 125% of itself, so that many jobs retrying after
/// the same lock do not retry in step.  `seed` is any number that differs
/// between jobs and attempts.
pub fn jittered(ms: i64, seed: u64) -> i64 {
    // splitmix64: a good spread from any seed
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    (ms as f64 * (0.75 + 0.5 * unit)).round() as i64
}

fn seconds(ms: f64) -> String {
    if ms < 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{:.0} s", ms / 1000.0)
    }
}

/// 1536 -> "1.5 kB", as pg_size_pretty would round it.
pub fn bytes_text(b: i64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} bytes")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Sizing = Sizing {
        target_ms: 200.0,
        min: 100,
        max: 100_000,
    };

    #[test]
    fn batches_grow_toward_the_target_at_most_fourfold() {
        // 0.01 ms a row: 20,000 rows fit 200 ms, but one step goes 1000 -> 4000
        assert_eq!(next_batch_size(1000, 0.01, &S), 4000);
        let mut size = 1000;
        let mut steps = 0;
        while size != 20_000 {
            size = next_batch_size(size, 0.01, &S);
            steps += 1;
            assert!(steps < 20);
        }
        assert_eq!(steps, 3, "1000 * 4^3 > 20,000");
        assert_eq!(
            next_batch_size(20_000, 0.01, &S),
            20_000,
            "stays at the target"
        );
    }

    #[test]
    fn batches_shrink_when_rows_get_slow_at_most_by_half() {
        // rows became 10x slower: 2,000 rows fit, but one step only halves
        assert_eq!(next_batch_size(20_000, 0.1, &S), 10_000);
        assert_eq!(next_batch_size(10_000, 0.1, &S), 5_000);
        assert_eq!(next_batch_size(5_000, 0.1, &S), 2_500);
        assert_eq!(next_batch_size(2_500, 0.1, &S), 2_000);
    }

    #[test]
    fn batch_bounds_hold() {
        assert_eq!(next_batch_size(100_000, 0.000_1, &S), 100_000);
        assert_eq!(next_batch_size(100, 50.0, &S), 100);
        assert_eq!(
            next_batch_size(1000, f64::NAN, &S),
            4000,
            "no measure yet: grow"
        );
        assert_eq!(halved(1000, 100), 500);
        assert_eq!(halved(150, 100), 100);
        assert_eq!(halved(1, 1), 1);
    }

    #[test]
    fn throttles_say_why() {
        let l = Limits {
            max_replay_lag_ms: 5000,
            max_slot_wal_bytes: 1 << 30,
            pause_during_vacuum: true,
        };
        assert_eq!(throttle_reason(&Signals::default(), &l), None);
        let s = Signals {
            replay_lag_ms: Some((12_300.0, "replica1".into())),
            ..Default::default()
        };
        assert_eq!(
            throttle_reason(&s, &l).unwrap(),
            "replica lag: standby replica1 is 12 s behind (limit 5.0 s)"
        );
        let s = Signals {
            slot_wal_bytes: Some((3 << 30, "cdc".into())),
            ..Default::default()
        };
        assert_eq!(
            throttle_reason(&s, &l).unwrap(),
            "replication slot cdc holds back 3.0 GB of WAL (limit 1.0 GB)"
        );
        let s = Signals {
            vacuum_pid: Some(42),
            ..Default::default()
        };
        assert_eq!(
            throttle_reason(&s, &l).unwrap(),
            "VACUUM is working on the table (pid 42)"
        );
        // each off switch works
        let off = Limits::default();
        let all = Signals {
            replay_lag_ms: Some((1e9, "r".into())),
            slot_wal_bytes: Some((i64::MAX, "s".into())),
            vacuum_pid: Some(1),
        };
        assert_eq!(throttle_reason(&all, &off), None);
        // under the limit is fine
        let s = Signals {
            replay_lag_ms: Some((4_999.0, "r".into())),
            ..Default::default()
        };
        assert_eq!(throttle_reason(&s, &l), None);
    }

    #[test]
    fn budgets_pace_the_job() {
        // 5,000 rows in 1 s against 1,000 rows/s: wait 4 s
        assert_eq!(
            pacing_ms(5_000, 0, 1_000.0, 1_000, 0),
            (4_000.0, Some("rows"))
        );
        // ahead of budget: no wait
        assert_eq!(pacing_ms(500, 0, 1_000.0, 1_000, 0), (0.0, None));
        // WAL budget is the tighter one
        assert_eq!(
            pacing_ms(100, 10_000_000, 1_000.0, 1_000, 1_000_000),
            (9_000.0, Some("wal"))
        );
        assert_eq!(pacing_ms(100, 10_000_000, 1_000.0, 0, 0), (0.0, None));
        assert_eq!(budget_cap(1_000, 200.0), Some(200));
        assert_eq!(budget_cap(1, 200.0), Some(1));
        assert_eq!(budget_cap(0, 200.0), None);
        // 100 kB/s for 200 ms is 20,000 bytes: 200 keys at 100 bytes each
        assert_eq!(wal_budget_cap(100_000, 200.0, Some(100.0)), Some(200));
        assert_eq!(wal_budget_cap(100_000, 200.0, Some(1e9)), Some(1));
        assert_eq!(wal_budget_cap(100_000, 200.0, None), None);
        assert_eq!(wal_budget_cap(100_000, 200.0, Some(0.0)), None);
        assert_eq!(wal_budget_cap(0, 200.0, Some(100.0)), None);
    }

    #[test]
    fn jitter_spreads_within_a_quarter() {
        let values: Vec<i64> = (0..1000u64).map(|i| jittered(1000, i)).collect();
        assert!(values.iter().all(|v| (750..=1250).contains(v)));
        let distinct: std::collections::HashSet<_> = values.iter().collect();
        assert!(distinct.len() > 300, "spread, not a constant");
        assert_eq!(
            jittered(1000, 7),
            jittered(1000, 7),
            "the same seed, the same wait"
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes_text(512), "512 bytes");
        assert_eq!(bytes_text(1536), "1.5 kB");
        assert_eq!(bytes_text(5 << 30), "5.0 GB");
    }
}
