//! The rules of the migration history, as pure functions.
//!
//! The SQL layer reads the latest event of a migration from the log, asks
//! these functions whether a change is allowed, and appends the event they
//! approve.  Nothing here touches PostgreSQL.

pub use super::migration::{Current, Status};
use crate::error::{MigrateError, Result};

/// Longest app or migration name accepted (Django's own limit).
pub const MAX_NAME_CHARS: usize = 255;
/// Longest checksum accepted: room for any hex or base64 digest and a prefix.
pub const MAX_CHECKSUM_CHARS: usize = 255;
/// Longest description, error message or reason kept in the history.
pub const MAX_TEXT_CHARS: usize = 10_000;

/// How a run ends: the `status` argument of `migrate_finish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Failed,
}

impl Outcome {
    pub fn status(self) -> Status {
        match self {
            Outcome::Applied => Status::Applied,
            Outcome::Failed => Status::Failed,
        }
    }
}

/// The most recent checksum recorded for a migration, and its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousChecksum {
    pub checksum: String,
    pub run_id: i64,
}

/// The latest event of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    pub app: String,
    pub name: String,
    pub status: Status,
    pub at: String,
    pub seq: i32,
}

fn check_chars(arg: &'static str, v: &str, max: usize, allow_newlines: bool) -> Result<()> {
    let len = v.chars().count();
    if len > max {
        return Err(MigrateError::TooLong { arg, len, max });
    }
    let bad =
        |c: char| c.is_control() && !(allow_newlines && (c == '\n' || c == '\t' || c == '\r'));
    if v.chars().any(bad) {
        return Err(MigrateError::ControlCharacter { arg });
    }
    Ok(())
}

/// An app or migration name: present, not blank, at most 255 characters,
/// printable.
pub fn require_name<'a>(arg: &'static str, v: Option<&'a str>) -> Result<&'a str> {
    let v = v.ok_or(MigrateError::NullArgument { arg })?;
    if v.trim().is_empty() {
        return Err(MigrateError::EmptyArgument { arg });
    }
    check_chars(arg, v, MAX_NAME_CHARS, false)?;
    Ok(v)
}

/// A checksum: optional, but when given not blank and printable.
pub fn optional_checksum(v: Option<&str>) -> Result<Option<&str>> {
    match v {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Err(MigrateError::EmptyArgument { arg: "checksum" }),
        Some(s) => {
            check_chars("checksum", s, MAX_CHECKSUM_CHARS, false)?;
            Ok(Some(s))
        }
    }
}

/// Free text (description, error, reason): optional, bounded; an empty
/// string is kept as NULL.
pub fn optional_text<'a>(arg: &'static str, v: Option<&'a str>) -> Result<Option<&'a str>> {
    match v {
        None => Ok(None),
        Some("") => Ok(None),
        Some(s) => {
            check_chars(arg, s, MAX_TEXT_CHARS, true)?;
            Ok(Some(s))
        }
    }
}

/// The `status` and `error` arguments of `migrate_finish`.
pub fn parse_outcome<'a>(
    status: Option<&str>,
    error: Option<&'a str>,
) -> Result<(Outcome, Option<&'a str>)> {
    let status = status.ok_or(MigrateError::NullArgument { arg: "status" })?;
    let outcome = match status {
        "applied" => Outcome::Applied,
        "failed" => Outcome::Failed,
        other => {
            return Err(MigrateError::InvalidValue {
                arg: "status",
                value: other.to_string(),
                allowed: "'applied' or 'failed'",
            })
        }
    };
    let error = optional_text("error", error)?;
    if outcome == Outcome::Applied && error.is_some() {
        return Err(MigrateError::ErrorWithoutFailure);
    }
    Ok((outcome, error))
}

fn running_error(app: &str, name: &str, c: &Current) -> MigrateError {
    MigrateError::AlreadyRunning {
        app: app.to_string(),
        name: name.to_string(),
        run: Box::new(c.clone()),
    }
}

/// May a new run of `app.name` begin (migrate_start, migrate_record)?
/// Returns the seq of the event to append.
///
/// - never while a run is in progress, even with `force`;
/// - not when applied, unless `force`;
/// - not with a checksum that differs from the last one recorded, unless
///   `force` (Flyway-style validation).
pub fn check_new_run(
    app: &str,
    name: &str,
    current: Option<&Current>,
    previous: Option<&PreviousChecksum>,
    checksum: Option<&str>,
    force: bool,
) -> Result<i32> {
    if let Some(c) = current {
        if c.status == Status::Running {
            return Err(running_error(app, name, c));
        }
        if c.status == Status::Applied && !force {
            return Err(MigrateError::AlreadyApplied {
                app: app.to_string(),
                name: name.to_string(),
                run_id: c.run_id,
                at: c.at.clone(),
                role: c.role.clone(),
            });
        }
    }
    if let (Some(given), Some(prev)) = (checksum, previous) {
        if given != prev.checksum && !force {
            return Err(MigrateError::ChecksumMismatch {
                app: app.to_string(),
                name: name.to_string(),
                recorded: prev.checksum.clone(),
                given: given.to_string(),
                run_id: prev.run_id,
            });
        }
    }
    Ok(current.map_or(1, |c| c.seq + 1))
}

/// May run `run_id` be finished?  `run` is that run's latest event and
/// `current` the migration's latest event.  Returns the seq to append.
pub fn check_finish(run_id: i64, run: Option<&RunState>, current: Option<&Current>) -> Result<i32> {
    let run = run.ok_or(MigrateError::UnknownRun { run_id })?;
    match current {
        Some(c) if run.status == Status::Running && c.run_id == run_id => Ok(c.seq + 1),
        _ => Err(MigrateError::RunFinished {
            run_id,
            app: run.app.clone(),
            name: run.name.clone(),
            status: run.status.as_str().to_string(),
            at: run.at.clone(),
        }),
    }
}

/// May `app.name` be marked unapplied?  Only an applied or failed migration
/// can.  Returns the seq to append.
pub fn check_unapply(app: &str, name: &str, current: Option<&Current>) -> Result<i32> {
    let c = current.ok_or_else(|| MigrateError::UnknownMigration {
        app: app.to_string(),
        name: name.to_string(),
    })?;
    match c.status {
        Status::Applied | Status::Failed => Ok(c.seq + 1),
        Status::Unapplied => Err(MigrateError::AlreadyUnapplied {
            app: app.to_string(),
            name: name.to_string(),
            at: c.at.clone(),
            role: c.role.clone(),
        }),
        Status::Running => Err(MigrateError::CannotUnapply {
            app: app.to_string(),
            name: name.to_string(),
            status: c.status.as_str().to_string(),
        }),
    }
}

/// The startup check: `None` when applied, else the error that explains
/// what is missing.
pub fn require_applied(app: &str, name: &str, current: Option<&Current>) -> Option<MigrateError> {
    if matches!(current, Some(c) if c.status == Status::Applied) {
        return None;
    }
    Some(MigrateError::NotApplied {
        app: app.to_string(),
        name: name.to_string(),
        state: current.map(|c| Box::new(c.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(status: Status, seq: i32) -> Current {
        Current {
            status,
            seq,
            run_id: 10,
            at: "2026-11-21 02:00:00+00".into(),
            role: "deploy".into(),
            pid: 4242,
            backend_alive: true,
            error: None,
            reason: None,
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(require_name("app", Some("shop")), Ok("shop"));
        assert_eq!(
            require_name("app", None),
            Err(MigrateError::NullArgument { arg: "app" })
        );
        assert_eq!(
            require_name("name", Some("  ")),
            Err(MigrateError::EmptyArgument { arg: "name" })
        );
        assert_eq!(
            require_name("name", Some(&"x".repeat(256))),
            Err(MigrateError::TooLong {
                arg: "name",
                len: 256,
                max: 255
            })
        );
        assert!(
            require_name("name", Some(&"é".repeat(255))).is_ok(),
            "limit counts characters, not bytes"
        );
        assert_eq!(
            require_name("name", Some("a\nb")),
            Err(MigrateError::ControlCharacter { arg: "name" })
        );
    }

    #[test]
    fn free_text_allows_newlines_but_is_bounded() {
        assert_eq!(
            optional_text("error", Some("line 1\nline 2")),
            Ok(Some("line 1\nline 2"))
        );
        assert_eq!(optional_text("error", Some("")), Ok(None));
        assert!(matches!(
            optional_text("description", Some(&"d".repeat(MAX_TEXT_CHARS + 1))),
            Err(MigrateError::TooLong { .. })
        ));
        assert_eq!(
            optional_checksum(Some("")),
            Err(MigrateError::EmptyArgument { arg: "checksum" })
        );
        assert_eq!(optional_checksum(None), Ok(None));
    }

    #[test]
    fn outcome_parsing() {
        assert_eq!(
            parse_outcome(Some("applied"), None),
            Ok((Outcome::Applied, None))
        );
        assert_eq!(
            parse_outcome(Some("failed"), Some("boom")),
            Ok((Outcome::Failed, Some("boom")))
        );
        assert_eq!(
            parse_outcome(Some("applied"), Some("boom")),
            Err(MigrateError::ErrorWithoutFailure)
        );
        assert!(matches!(
            parse_outcome(Some("done"), None),
            Err(MigrateError::InvalidValue { .. })
        ));
        assert!(matches!(
            parse_outcome(Some("Applied"), None),
            Err(MigrateError::InvalidValue { .. })
        ));
        assert_eq!(
            parse_outcome(None, None),
            Err(MigrateError::NullArgument { arg: "status" })
        );
    }

    #[test]
    fn first_run_gets_seq_one() {
        assert_eq!(
            check_new_run("a", "m", None, None, Some("abc"), false),
            Ok(1)
        );
    }

    #[test]
    fn running_blocks_even_with_force() {
        let c = cur(Status::Running, 3);
        for force in [false, true] {
            match check_new_run("a", "m", Some(&c), None, None, force) {
                Err(MigrateError::AlreadyRunning { run, .. }) => {
                    assert_eq!((run.run_id, run.pid), (10, 4242));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn applied_needs_force() {
        let c = cur(Status::Applied, 2);
        assert!(matches!(
            check_new_run("a", "m", Some(&c), None, None, false),
            Err(MigrateError::AlreadyApplied { run_id: 10, .. })
        ));
        assert_eq!(check_new_run("a", "m", Some(&c), None, None, true), Ok(3));
    }

    #[test]
    fn failed_and_unapplied_can_rerun() {
        for s in [Status::Failed, Status::Unapplied] {
            assert_eq!(
                check_new_run("a", "m", Some(&cur(s, 4)), None, None, false),
                Ok(5)
            );
        }
    }

    #[test]
    fn checksum_mismatch_shows_both() {
        let prev = PreviousChecksum {
            checksum: "aaa".into(),
            run_id: 7,
        };
        let c = cur(Status::Failed, 2);
        let err = check_new_run("a", "m", Some(&c), Some(&prev), Some("bbb"), false).unwrap_err();
        let detail = err.detail().unwrap();
        assert!(
            detail.contains("aaa") && detail.contains("bbb") && detail.contains("run 7"),
            "{detail}"
        );
        assert_eq!(err.sqlstate(), "55000");
        // same checksum, no checksum given, or force: fine
        assert!(check_new_run("a", "m", Some(&c), Some(&prev), Some("aaa"), false).is_ok());
        assert!(check_new_run("a", "m", Some(&c), Some(&prev), None, false).is_ok());
        assert!(check_new_run("a", "m", Some(&c), Some(&prev), Some("bbb"), true).is_ok());
    }

    #[test]
    fn finish_rules() {
        let run = RunState {
            app: "a".into(),
            name: "m".into(),
            status: Status::Running,
            at: "t".into(),
            seq: 1,
        };
        let c = Current {
            run_id: 5,
            ..cur(Status::Running, 1)
        };
        assert_eq!(check_finish(5, Some(&run), Some(&c)), Ok(2));
        assert_eq!(
            check_finish(6, None, None),
            Err(MigrateError::UnknownRun { run_id: 6 })
        );
        let done = RunState {
            status: Status::Applied,
            ..run
        };
        let err = check_finish(5, Some(&done), Some(&c)).unwrap_err();
        assert_eq!(err.sqlstate(), "55000");
        assert_eq!(err.detail().unwrap(), "It was marked applied at t.");
    }

    #[test]
    fn unapply_rules() {
        assert_eq!(
            check_unapply("a", "m", Some(&cur(Status::Applied, 2))),
            Ok(3)
        );
        assert_eq!(
            check_unapply("a", "m", Some(&cur(Status::Failed, 2))),
            Ok(3)
        );
        assert!(matches!(
            check_unapply("a", "m", Some(&cur(Status::Running, 2))),
            Err(MigrateError::CannotUnapply { .. })
        ));
        assert!(matches!(
            check_unapply("a", "m", Some(&cur(Status::Unapplied, 2))),
            Err(MigrateError::AlreadyUnapplied { .. })
        ));
        assert!(matches!(
            check_unapply("a", "m", None),
            Err(MigrateError::UnknownMigration { .. })
        ));
    }

    #[test]
    fn require_explains_each_state() {
        assert_eq!(
            require_applied("a", "m", Some(&cur(Status::Applied, 1))),
            None
        );

        let never = require_applied("a", "m", None).unwrap();
        assert_eq!(never.sqlstate(), "55000");
        assert_eq!(never.detail().unwrap(), "It has never been recorded.");
        assert!(never.hint().unwrap().starts_with("Apply migration a.m"));

        let running = require_applied("a", "m", Some(&cur(Status::Running, 1))).unwrap();
        assert!(running
            .detail()
            .unwrap()
            .starts_with("It is running: run 10"));
        assert!(running
            .hint()
            .unwrap()
            .starts_with("Wait for migration a.m"));

        let failed = Current {
            error: Some("division by zero".into()),
            ..cur(Status::Failed, 2)
        };
        let failed = require_applied("a", "m", Some(&failed)).unwrap();
        assert!(failed
            .detail()
            .unwrap()
            .ends_with("failed at 2026-11-21 02:00:00+00: division by zero"));

        let dead = Current {
            backend_alive: false,
            ..cur(Status::Running, 1)
        };
        let dead = require_applied("a", "m", Some(&dead)).unwrap();
        assert!(dead.detail().unwrap().contains("which has since exited"));
    }
}
