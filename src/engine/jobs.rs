//! Jobs as pure logic: states and the control transitions between them,
//! how a batch error is handled, backoff, and the progress arithmetic.

use crate::error::{MigrateError, Result};

/// Where a job stands.  `Waiting` always comes with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Paused,
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Waiting => "waiting",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "paused" => JobState::Paused,
            "waiting" => JobState::Waiting,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// A finished job never runs again (except through migrate_retry).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// What a DBA asks of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Cancel,
    Retry,
}

impl Control {
    pub fn verb(self) -> &'static str {
        match self {
            Control::Pause => "paused",
            Control::Resume => "resumed",
            Control::Cancel => "cancelled",
            Control::Retry => "retried",
        }
    }
}

/// The state a control request moves a job to, or why it cannot.
///
/// - pause: a queued, waiting or running job stops after its current batch;
/// - resume: a paused job goes back to the queue;
/// - cancel: any unfinished job ends for good;
/// - retry: a failed or cancelled job is queued again and resumes where it
///   stopped (its cursor is kept).
pub fn control(job_id: i64, action: Control, state: JobState) -> Result<JobState> {
    use JobState::*;
    let refuse = |hint: &'static str| {
        Err(MigrateError::JobState {
            job_id,
            action: action.verb(),
            state: state.as_str(),
            hint,
        })
    };
    match (action, state) {
        (Control::Pause, Queued | Waiting | Running) => Ok(Paused),
        (Control::Pause, Paused) => {
            refuse("It is already paused; migrate_resume() queues it again.")
        }
        (Control::Resume, Paused) => Ok(Queued),
        (Control::Resume, Queued | Waiting | Running) => {
            refuse("Only a paused job can be resumed.")
        }
        (Control::Cancel, Queued | Waiting | Running | Paused) => Ok(Cancelled),
        (Control::Retry, Failed | Cancelled) => Ok(Queued),
        (Control::Retry, _) if !state.is_terminal() => {
            refuse("Only a failed or cancelled job can be retried; it has not finished.")
        }
        (_, Succeeded) => refuse("It has succeeded; nothing is left to do."),
        (_, Failed | Cancelled) => {
            refuse("It has finished; migrate_retry() runs it again from where it stopped.")
        }
        _ => refuse("See migrate_progress for the job's state."),
    }
}

/// How a batch error is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: roll the batch back and try it again later.
    Retry(&'static str),
    /// Someone cancelled the statement (not our own statement timeout).
    Interrupted,
    /// The data or the privileges are wrong: the job fails.
    Fail,
}

/// Classify a batch error by SQLSTATE.  `elapsed_ms` against the job's
/// statement timeout tells a timeout from a cancel request, which share
/// SQLSTATE 57014.
pub fn classify(sqlstate: &str, elapsed_ms: f64, statement_timeout_ms: i64) -> ErrorClass {
    match sqlstate {
        "55P03" => ErrorClass::Retry("lock timeout"),
        "40P01" => ErrorClass::Retry("deadlock"),
        "40001" => ErrorClass::Retry("serialization failure"),
        "57014" if statement_timeout_ms > 0 && elapsed_ms + 50.0 >= statement_timeout_ms as f64 => {
            ErrorClass::Retry("statement timeout")
        }
        "57014" => ErrorClass::Interrupted,
        _ => ErrorClass::Fail,
    }
}

/// Wait before retry `attempt` (1, 2, ...): 1 s, 2 s, 4 s ... capped at 60 s.
pub fn backoff_ms(attempt: i32) -> i64 {
    let exp = attempt.clamp(1, 7) - 1;
    (1000i64 << exp).min(60_000)
}

/// Exponentially weighted moving average: the recent rate, smoothed.
pub fn ewma(previous: Option<f64>, sample: f64, alpha: f64) -> f64 {
    match previous {
        Some(p) if p.is_finite() => alpha * sample + (1.0 - alpha) * p,
        _ => sample,
    }
}

/// The estimated number of rows a job covers.
///
/// `estimate` is the planner's count when the job started.  When the key is
/// numeric, `key_fraction` is how far the cursor has moved through the key
/// range; after 5% of it the observed density is a better guide.  Never
/// less than what was done.
pub fn refine_total(estimate: i64, rows_done: i64, key_fraction: Option<f64>) -> i64 {
    let by_density = match key_fraction {
        Some(f) if (0.05..=1.0).contains(&f) => Some((rows_done as f64 / f).round() as i64),
        _ => None,
    };
    by_density.unwrap_or(estimate).max(rows_done)
}

/// Percent done, one decimal; 100 only when finished.
pub fn percent(rows_done: i64, rows_total: i64, finished: bool) -> f64 {
    if finished {
        return 100.0;
    }
    if rows_total <= 0 {
        return 0.0;
    }
    let p = (rows_done as f64 * 100.0 / rows_total as f64).min(99.9);
    (p * 10.0).floor() / 10.0
}

/// Seconds left at `rate` rows per second.
pub fn eta_seconds(rows_done: i64, rows_total: i64, rate: Option<f64>) -> Option<f64> {
    let rate = rate.filter(|r| *r > 0.0 && r.is_finite())?;
    Some(((rows_total - rows_done).max(0) as f64 / rate).ceil())
}

/// A progress line for NOTICEs: "job 7: 120,000 of 1,000,000 rows (12.0%), 25,000 rows/s, about 36 s left".
pub fn progress_line(job_id: i64, rows_done: i64, rows_total: i64, rate: Option<f64>) -> String {
    if rows_total <= 0 && rows_done == 0 {
        return format!("job {job_id}: starting");
    }
    let total = rows_total.max(rows_done);
    let mut s = format!(
        "job {job_id}: {} of {} rows ({:.1}%)",
        thousands(rows_done),
        thousands(total),
        percent(rows_done, total, false)
    );
    if let Some(r) = rate.filter(|r| *r > 0.0) {
        s.push_str(&format!(", {} rows/s", thousands(r.round() as i64)));
    }
    if let Some(eta) = eta_seconds(rows_done, total, rate) {
        s.push_str(&format!(", about {} left", human_seconds(eta)));
    }
    s
}

/// 1234567 -> "1,234,567".
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// 42 -> "42 s", 125 -> "2 min 5 s", 7300 -> "2 h 1 min".
pub fn human_seconds(s: f64) -> String {
    let s = s.max(0.0).round() as i64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 if s % 60 == 0 => format!("{} min", s / 60),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ if s % 3600 < 60 => format!("{} h", s / 3600),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in [
            "queued",
            "running",
            "paused",
            "waiting",
            "succeeded",
            "failed",
            "cancelled",
        ] {
            assert_eq!(JobState::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(JobState::parse("done"), None);
    }

    #[test]
    fn control_transitions() {
        use Control::*;
        use JobState::*;
        assert_eq!(control(1, Pause, Running), Ok(Paused));
        assert_eq!(control(1, Pause, Queued), Ok(Paused));
        assert_eq!(control(1, Pause, Waiting), Ok(Paused));
        assert_eq!(control(1, Resume, Paused), Ok(Queued));
        assert_eq!(control(1, Cancel, Paused), Ok(Cancelled));
        assert_eq!(control(1, Cancel, Running), Ok(Cancelled));
        assert_eq!(control(1, Retry, Failed), Ok(Queued));
        assert_eq!(control(1, Retry, Cancelled), Ok(Queued));
        for (a, s) in [
            (Pause, Paused),
            (Resume, Running),
            (Cancel, Succeeded),
            (Retry, Running),
            (Retry, Succeeded),
            (Pause, Failed),
        ] {
            let e = control(7, a, s).unwrap_err();
            assert_eq!(e.sqlstate(), "55000", "{a:?} {s:?}");
            assert!(e.hint().is_some(), "{a:?} {s:?}");
        }
        assert_eq!(
            control(7, Resume, Running).unwrap_err().message(),
            "job 7 cannot be resumed: it is running"
        );
    }

    #[test]
    fn error_classes() {
        assert_eq!(
            classify("55P03", 10.0, 30_000),
            ErrorClass::Retry("lock timeout")
        );
        assert_eq!(
            classify("40P01", 10.0, 30_000),
            ErrorClass::Retry("deadlock")
        );
        assert_eq!(
            classify("40001", 10.0, 30_000),
            ErrorClass::Retry("serialization failure")
        );
        assert_eq!(
            classify("57014", 29_990.0, 30_000),
            ErrorClass::Retry("statement timeout")
        );
        assert_eq!(classify("57014", 1_000.0, 30_000), ErrorClass::Interrupted);
        assert_eq!(classify("57014", 1_000.0, 0), ErrorClass::Interrupted);
        assert_eq!(classify("22012", 1.0, 30_000), ErrorClass::Fail);
        assert_eq!(classify("42501", 1.0, 30_000), ErrorClass::Fail);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(2), 2000);
        assert_eq!(backoff_ms(5), 16_000);
        assert_eq!(backoff_ms(7), 60_000);
        assert_eq!(backoff_ms(100), 60_000);
        assert_eq!(backoff_ms(0), 1000);
    }

    #[test]
    fn progress_arithmetic() {
        assert_eq!(ewma(None, 100.0, 0.3), 100.0);
        assert!((ewma(Some(100.0), 200.0, 0.3) - 130.0).abs() < 1e-9);
        assert_eq!(refine_total(1_000, 500, None), 1_000);
        assert_eq!(
            refine_total(1_000, 500, Some(0.25)),
            2_000,
            "density wins once 5% is done"
        );
        assert_eq!(
            refine_total(1_000, 500, Some(0.01)),
            1_000,
            "too early to trust density"
        );
        assert_eq!(
            refine_total(100, 500, None),
            500,
            "never below what was done"
        );
        assert_eq!(percent(1, 3, false), 33.3);
        assert_eq!(percent(10, 10, false), 99.9);
        assert_eq!(percent(10, 10, true), 100.0);
        assert_eq!(percent(5, 0, false), 0.0);
        assert_eq!(eta_seconds(500, 1_500, Some(100.0)), Some(10.0));
        assert_eq!(eta_seconds(500, 1_500, None), None);
        assert_eq!(eta_seconds(500, 1_500, Some(0.0)), None);
    }

    #[test]
    fn progress_line_reads_well() {
        assert_eq!(
            progress_line(7, 120_000, 1_000_000, Some(25_000.4)),
            "job 7: 120,000 of 1,000,000 rows (12.0%), 25,000 rows/s, about 36 s left"
        );
        assert_eq!(progress_line(7, 0, 0, None), "job 7: starting");
        assert_eq!(
            progress_line(7, 10, 0, None),
            "job 7: 10 of 10 rows (99.9%)"
        );
        assert_eq!(thousands(-1234), "-1,234");
        assert_eq!(human_seconds(125.0), "2 min 5 s");
        assert_eq!(human_seconds(7300.0), "2 h 1 min");
        assert_eq!(human_seconds(3600.0), "1 h");
        assert_eq!(human_seconds(60.0), "1 min");
    }
}
