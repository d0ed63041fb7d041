//! Cron expressions and maintenance windows, shared by every job kind.
//!
//! One syntax: five fields (minute, hour, day of month, month, day of week)
//! with `*`, values, ranges `a-b`, lists `a,b`, steps `*/n` and `a-b/n`,
//! month names `jan`..`dec`, day names `sun`..`sat` (0 and 7 are Sunday),
//! and the aliases `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`.
//! When both day fields are restricted, a day matches if either does (as in
//! every cron).
//!
//! Times here are wall-clock times in the job's time zone, counted as
//! seconds since 1970-01-01 00:00 of that wall clock ("naive" seconds); the
//! SQL layer converts to and from timestamptz.  A window opens at every
//! minute the expression matches and stays open for its duration.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    pub expr: String,
    pub why: String,
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid cron expression \"{}\": {}", self.expr, self.why)
    }
}

/// A parsed expression: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(
    field: &str,
    s: &str,
    min: u32,
    max: u32,
    names: &[&str],
    first_name: u32,
) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(first_name + i as u32);
    }
    let v: u32 = s
        .parse()
        .map_err(|_| format!("{field}: \"{s}\" is not a number or a name"))?;
    if v < min || v > max {
        return Err(format!("{field}: {v} is out of range {min}-{max}"));
    }
    Ok(v)
}

/// Parse one field into a bit set of its allowed values.
fn field(
    name: &str,
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    first_name: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let star = text == "*";
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{name}: empty list item"));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("{name}: step \"{s}\" is not a number"))?;
                if step == 0 {
                    return Err(format!("{name}: a step must be at least 1"));
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (
                value(name, a, min, max, names, first_name)?,
                value(name, b, min, max, names, first_name)?,
            );
            if a > b {
                return Err(format!("{name}: range {a}-{b} runs backwards"));
            }
            (a, b)
        } else {
            let v = value(name, range, min, max, names, first_name)?;
            // "5/15" means every 15 from 5 to the end, as in most crons
            (v, if item.contains('/') { max } else { v })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1u64 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Cron {
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let err = |why: String| CronError {
            expr: expr.to_string(),
            why,
        };
        let text = match expr.trim().to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            other if other.starts_with('@') => return Err(err(format!("unknown alias {other}"))),
            _ => expr.trim().to_string(),
        };
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(err(format!(
                "it has {} fields; a cron expression has 5 (minute hour day-of-month month day-of-week)",
                parts.len()
            )));
        }
        let (minutes, _) = field("minute", parts[0], 0, 59, &[], 0).map_err(err)?;
        let (hours, _) = field("hour", parts[1], 0, 23, &[], 0).map_err(err)?;
        let (days, any_day) = field("day of month", parts[2], 1, 31, &[], 0).map_err(err)?;
        let (months, _) = field("month", parts[3], 1, 12, &MONTHS, 1).map_err(err)?;
        let (mut weekdays, any_weekday) =
            field("day of week", parts[4], 0, 7, &WEEKDAYS, 0).map_err(err)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f; // 7 is Sunday too
        }
        Ok(Cron {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            any_day,
            any_weekday,
        })
    }

    fn day_matches(&self, c: &Civil) -> bool {
        if self.months & (1 << c.month) == 0 {
            return false;
        }
        let dom = self.days & (1 << c.day) != 0;
        let dow = self.weekdays & (1 << c.weekday) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    fn minute_matches(&self, minute_of_day: i64) -> bool {
        let (h, m) = (minute_of_day / 60, minute_of_day % 60);
        self.hours & (1 << h) != 0 && self.minutes & (1 << m) != 0
    }

    /// Does the expression match the minute that contains `t` (naive seconds)?
    pub fn matches(&self, t: i64) -> bool {
        let day = t.div_euclid(86_400);
        self.day_matches(&Civil::from_days(day)) && self.minute_matches(t.rem_euclid(86_400) / 60)
    }

    /// The first matching minute at or after `t` (rounded up to a minute),
    /// within five years; as naive seconds.
    pub fn next_at_or_after(&self, t: i64) -> Option<i64> {
        let start = t.div_euclid(60) * 60 + if t.rem_euclid(60) == 0 { 0 } else { 60 };
        let first_day = start.div_euclid(86_400);
        for day in first_day..first_day + 366 * 5 {
            if !self.day_matches(&Civil::from_days(day)) {
                continue;
            }
            let from = if day == first_day {
                start.rem_euclid(86_400) / 60
            } else {
                0
            };
            if let Some(m) = (from..1440).find(|m| self.minute_matches(*m)) {
                return Some(day * 86_400 + m * 60);
            }
        }
        None
    }

    /// The last matching minute at or before `t`, no earlier than `t -
    /// lookback` seconds; as naive seconds.
    pub fn last_at_or_before(&self, t: i64, lookback: i64) -> Option<i64> {
        let end = t.div_euclid(60) * 60;
        let earliest = t - lookback;
        let last_day = end.div_euclid(86_400);
        let mut day = last_day;
        while day * 86_400 + 86_399 >= earliest {
            if self.day_matches(&Civil::from_days(day)) {
                let to = if day == last_day {
                    end.rem_euclid(86_400) / 60
                } else {
                    1439
                };
                if let Some(m) = (0..=to).rev().find(|m| self.minute_matches(*m)) {
                    let s = day * 86_400 + m * 60;
                    return (s >= earliest.div_euclid(60) * 60).then_some(s);
                }
            }
            day -= 1;
        }
        None
    }
}

/// Where a job stands with respect to its maintenance window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// Open since `opened`, closes at `closes` (naive seconds).
    Open { opened: i64, closes: i64 },
    /// Closed; opens next at `opens` (None: never within five years).
    Closed { opens: Option<i64> },
}

/// Is the window `cron` + `length_secs` open at `now` (naive seconds)?
pub fn window(cron: &Cron, length_secs: i64, now: i64) -> Window {
    if let Some(opened) = cron.last_at_or_before(now, length_secs) {
        let closes = opened + length_secs;
        if now < closes {
            return Window::Open { opened, closes };
        }
    }
    Window::Closed {
        opens: cron.next_at_or_after(now),
    }
}

/// A calendar day (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    /// 0 = Sunday
    pub weekday: u32,
}

impl Civil {
    /// Days since 1970-01-01 to a date (Howard Hinnant's algorithm).
    pub fn from_days(z: i64) -> Civil {
        let weekday = (z + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Civil {
            year: if month <= 2 { y + 1 } else { y },
            month,
            day,
            weekday,
        }
    }

    /// A date to days since 1970-01-01.
    pub fn to_days(year: i64, month: u32, day: u32) -> i64 {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = if month > 2 { month - 3 } else { month + 9 } as i64;
        let doy = (153 * mp + 2) / 5 + day as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive seconds of a wall-clock time.
    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        Civil::to_days(y, mo, d) * 86_400 + h * 3600 + mi * 60
    }

    #[test]
    fn calendar_round_trips() {
        assert_eq!(Civil::to_days(1970, 1, 1), 0);
        assert_eq!(
            Civil::from_days(0),
            Civil {
                year: 1970,
                month: 1,
                day: 1,
                weekday: 4
            }
        );
        let d = Civil::to_days(2026, 11, 21);
        assert_eq!(
            Civil::from_days(d),
            Civil {
                year: 2026,
                month: 11,
                day: 21,
                weekday: 6
            }
        );
        assert_eq!(Civil::from_days(Civil::to_days(2024, 2, 29)).day, 29);
        for z in (-1000..100_000).step_by(37) {
            let c = Civil::from_days(z);
            assert_eq!(Civil::to_days(c.year, c.month, c.day), z);
        }
    }

    #[test]
    fn parses_fields_ranges_lists_steps_names() {
        let c = Cron::parse("*/15 1-3,22 * jan-mar mon-fri").unwrap();
        assert_eq!(c.minutes, (1 << 0) | (1 << 15) | (1 << 30) | (1 << 45));
        assert_eq!(c.hours, (1 << 1) | (1 << 2) | (1 << 3) | (1 << 22));
        assert_eq!(c.months, 0b1110);
        assert_eq!(c.weekdays, 0b0111110);
        assert!(
            Cron::parse("0 0 * * 7").unwrap().weekdays == 1,
            "7 is Sunday"
        );
        assert!(Cron::parse("0 0 * * SUN").is_ok(), "names ignore case");
        assert_eq!(
            Cron::parse("5/20 * * * *").unwrap().minutes,
            (1 << 5) | (1 << 25) | (1 << 45)
        );
        assert_eq!(
            Cron::parse("0-10/5 * * * *").unwrap().minutes,
            (1 << 0) | (1 << 5) | (1 << 10)
        );
        assert_eq!(
            Cron::parse("@daily").unwrap(),
            Cron::parse("0 0 * * *").unwrap()
        );
        assert_eq!(
            Cron::parse("@hourly").unwrap(),
            Cron::parse("0 * * * *").unwrap()
        );
    }

    #[test]
    fn refuses_what_is_not_cron() {
        for (e, why) in [
            ("* * * *", "4 fields"),
            ("60 * * * *", "out of range"),
            ("* 24 * * *", "out of range"),
            ("* * 0 * *", "out of range"),
            ("* * * 13 *", "out of range"),
            ("* * * * 8", "out of range"),
            ("*/0 * * * *", "at least 1"),
            ("5-1 * * * *", "backwards"),
            ("a * * * *", "not a number"),
            ("1,,2 * * * *", "empty"),
            ("@sometimes", "unknown alias"),
            ("* * * foo *", "not a number or a name"),
        ] {
            let e = Cron::parse(e).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // 13th of the month, or any Friday
        let c = Cron::parse("0 0 13 * fri").unwrap();
        assert!(c.matches(at(2026, 11, 13, 0, 0))); // a Friday the 13th
        assert!(c.matches(at(2026, 11, 20, 0, 0))); // a Friday
        assert!(c.matches(at(2026, 12, 13, 0, 0))); // a Sunday the 13th
        assert!(!c.matches(at(2026, 11, 21, 0, 0)));
        // only one restricted: that one decides
        let c = Cron::parse("0 0 * * fri").unwrap();
        assert!(!c.matches(at(2026, 12, 13, 0, 0)));
    }

    #[test]
    fn next_and_last() {
        let c = Cron::parse("0 1 * * *").unwrap();
        let now = at(2026, 11, 21, 10, 30) + 17;
        assert_eq!(c.next_at_or_after(now), Some(at(2026, 11, 22, 1, 0)));
        assert_eq!(
            c.next_at_or_after(at(2026, 11, 22, 1, 0)),
            Some(at(2026, 11, 22, 1, 0)),
            "inclusive"
        );
        assert_eq!(
            c.last_at_or_before(now, 86_400),
            Some(at(2026, 11, 21, 1, 0))
        );
        assert_eq!(c.last_at_or_before(now, 3_600), None, "beyond the lookback");
        // leap day only
        let c = Cron::parse("0 12 29 2 *").unwrap();
        assert_eq!(
            c.next_at_or_after(at(2025, 3, 1, 0, 0)),
            Some(at(2028, 2, 29, 12, 0))
        );
        // never (30 February)
        assert_eq!(
            Cron::parse("0 0 30 2 *")
                .unwrap()
                .next_at_or_after(at(2026, 1, 1, 0, 0)),
            None
        );
    }

    #[test]
    fn maintenance_windows() {
        // 01:00 for four hours
        let c = Cron::parse("0 1 * * *").unwrap();
        let four_hours = 4 * 3600;
        assert_eq!(
            window(&c, four_hours, at(2026, 11, 21, 3, 15)),
            Window::Open {
                opened: at(2026, 11, 21, 1, 0),
                closes: at(2026, 11, 21, 5, 0)
            }
        );
        assert_eq!(
            window(&c, four_hours, at(2026, 11, 21, 5, 0)),
            Window::Closed {
                opens: Some(at(2026, 11, 22, 1, 0))
            },
            "closed exactly at its end"
        );
        assert_eq!(
            window(&c, four_hours, at(2026, 11, 21, 0, 59) + 59),
            Window::Closed {
                opens: Some(at(2026, 11, 21, 1, 0))
            }
        );
        // a window that spans midnight: Saturdays 22:00 for 6 hours
        let c = Cron::parse("0 22 * * sat").unwrap();
        assert!(matches!(
            window(&c, 6 * 3600, at(2026, 11, 22, 3, 59)),
            Window::Open { .. }
        ));
        assert!(matches!(
            window(&c, 6 * 3600, at(2026, 11, 22, 4, 0)),
            Window::Closed { .. }
        ));
        // every minute, open for 20 seconds of each
        let c = Cron::parse("* * * * *").unwrap();
        assert!(matches!(
            window(&c, 20, at(2026, 1, 1, 0, 0) + 19),
            Window::Open { .. }
        ));
        assert_eq!(
            window(&c, 20, at(2026, 1, 1, 0, 0) + 20),
            Window::Closed {
                opens: Some(at(2026, 1, 1, 0, 1))
            }
        );
        // overlapping windows (every 30 min, an hour long): always open
        let c = Cron::parse("*/30 * * * *").unwrap();
        assert!(matches!(
            window(&c, 3600, at(2026, 1, 1, 7, 45)),
            Window::Open { .. }
        ));
    }
}
