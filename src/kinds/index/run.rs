//! An index job in a worker: prepare an attempt, run its statement as a
//! top-level statement, clean up what a failed attempt left, record how it
//! ended, and retry, finish or schedule the next run.
//!
//! Every step that reads or writes the job is a short transaction of its
//! own; the statement runs between them in transactions of its own.  A
//! pause or cancel of the job interrupts the statement (see
//! `interrupt_build_on_commit`); the worker then cleans up and lets go.

use super::facts;
use crate::catalog::as_owner;
use crate::catalog::builds::{self, AttemptEnd, IndexNow};
use crate::catalog::jobs::{self, Job};
use crate::engine::cron::Cron;
use crate::engine::index::{self as rules, AfterSuccess, IndexAction, IndexSpec};
use crate::engine::jobs::{human_seconds, JobState};
use crate::engine::pace::jittered;
use crate::runner::outcome::{fail, give_up, succeed};
use crate::runner::pace;
use crate::runner::toplevel::{self, Failure, HoldCancels, Statement};
use crate::runner::transaction::in_transaction;
use crate::sys::Caught;
use crate::worker::shmem::{begin_build, end_build};
use pgrx::prelude::*;

/// One attempt, as prepared.
struct Attempt {
    job_id: i64,
    attempt: i32,
    owner: pg_sys::Oid,
    relid: pg_sys::Oid,
    spec: IndexSpec,
    statement: String,
    /// The index's schema and name now (for a build: the index to build).
    schema: String,
    name: String,
    /// The index's size before a drop.
    size_before: Option<i64>,
    /// Indexes of the table before the attempt: cleanup never drops them.
    before: Vec<pg_sys::Oid>,
    /// Invalid indexes an earlier attempt of this job left: dropped first.
    leftovers: Vec<IndexNow>,
}

enum Prepared {
    Stop,
    Run(Box<Attempt>),
}

fn caught(sqlstate: &str, message: String, detail: Option<String>, hint: Option<&str>) -> Caught {
    Caught {
        sqlstate: sqlstate.into(),
        message,
        detail,
        hint: hint.map(String::from),
    }
}

fn qualified(schema: &str, name: &str) -> String {
    crate::engine::keyset::display_qualified(schema, name)
}

fn time_zone(spec: &IndexSpec) -> &str {
    spec.settings
        .iter()
        .find(|(n, _)| n == "TimeZone")
        .map_or("UTC", |(_, v)| v.as_str())
}

/// Drive index job `id`, claimed by this worker, through one attempt.
pub fn drive(id: i64) {
    let _hold = HoldCancels::new();
    match in_transaction(|| prepare(id)) {
        Ok(Prepared::Run(a)) => run(&a),
        Ok(Prepared::Stop) => {}
        // An error outside the statement: the job cannot go on.
        Err(e) => give_up(id, &e),
    }
}

/// The job may go on: it is still this worker's and running.
fn still_mine(job: &Option<Job>) -> bool {
    job.as_ref()
        .is_some_and(|j| j.mine && j.state == JobState::Running)
}

/// Done without running anything: record it as an attempt and finish.
fn done_already(job: &Job, spec: &IndexSpec, statement: &str, size: Option<i64>, note: &str) {
    as_owner(|| {
        let attempt = builds::start_attempt(job.id, statement, "checking");
        builds::end_attempt(
            job.id,
            attempt,
            &AttemptEnd {
                outcome: "succeeded",
                index_size: size,
                waited_for: None,
                error: None,
                note: Some(note),
            },
        );
    });
    after_success(job, spec, None);
}

fn prepare(id: i64) -> Prepared {
    let job = as_owner(|| jobs::get(id, true));
    if !still_mine(&job) {
        return Prepared::Stop;
    }
    let job = job.expect("checked above");
    let spec: IndexSpec = match serde_json::from_value(job.spec.clone()) {
        Ok(s) => s,
        Err(e) => {
            fail(
                &job,
                &caught(
                    "XX000",
                    format!("job {} has an unreadable spec: {e}", job.id),
                    None,
                    None,
                ),
            );
            return Prepared::Stop;
        }
    };
    // A build starts only inside its window; once started it runs to the
    // end.  CALL migrate_run asks for once now, whatever the window.
    if spec.run_now {
        as_owner(|| builds::clear_run_now(id));
    } else if let Some(w) = &spec.window {
        if let Some((why, until)) = pace::spec_window_closed(w, time_zone(&spec)) {
            as_owner(|| jobs::release_until(id, &why, until));
            return Prepared::Stop;
        }
    }
    let (earlier, unfinished) = as_owner(|| builds::earlier_attempts(id));
    let indexes = as_owner(|| builds::indexes_of(job.relid));
    let mut leftovers: Vec<IndexNow> = Vec::new();
    let mut size_before = None;
    let (schema, name, statement) = match spec.action {
        IndexAction::Create => {
            let target = qualified(&spec.schema, &spec.name);
            match as_owner(|| builds::index_named(&spec.schema, &spec.name)) {
                None => {}
                Some(ix) if ix.valid => {
                    if unfinished {
                        done_already(
                            &job,
                            &spec,
                            &spec.statement,
                            Some(ix.size),
                            "an earlier attempt built the index before its worker stopped",
                        );
                    } else if spec.if_not_exists {
                        done_already(
                            &job,
                            &spec,
                            &spec.statement,
                            Some(ix.size),
                            "the index already existed (IF NOT EXISTS): nothing to build",
                        );
                    } else {
                        fail(
                            &job,
                            &caught(
                                "42P07",
                                format!("relation {target} already exists"),
                                Some("It was created after the job was queued.".into()),
                                None,
                            ),
                        );
                    }
                    return Prepared::Stop;
                }
                Some(ix) => {
                    if let Some(pid) = as_owner(|| builds::other_build_on(job.relid)) {
                        // Not ours to drop while somebody builds on the table.
                        let why = format!(
                            "invalid index {target} exists while pid {pid} builds an index on the table; looking again in a minute"
                        );
                        let e = caught("55006", why.clone(), None, None);
                        as_owner(|| builds::retry_later(id, job.retries, &why, &e, 60_000));
                        return Prepared::Stop;
                    }
                    if earlier == 0 {
                        fail(
                            &job,
                            &caught(
                                "55000",
                                format!("an invalid index {target} exists"),
                                Some("It is left from a failed build that was not this job's.".into()),
                                Some(&format!(
                                    "Drop it with DROP INDEX CONCURRENTLY {target}; then SELECT migrate_retry({id})."
                                )),
                            ),
                        );
                        return Prepared::Stop;
                    }
                    leftovers.push(ix);
                }
            }
            (
                spec.schema.clone(),
                spec.name.clone(),
                spec.statement.clone(),
            )
        }
        IndexAction::Drop | IndexAction::Reindex => {
            let now = job
                .index_oid
                .and_then(|oid| as_owner(|| builds::index_by_oid(oid)));
            let Some(ix) = now else {
                let target = qualified(&spec.schema, &spec.name);
                if spec.action == IndexAction::Drop {
                    done_already(
                        &job,
                        &spec,
                        &format!("DROP INDEX CONCURRENTLY IF EXISTS {target}"),
                        None,
                        "the index no longer existed: nothing to drop",
                    );
                } else {
                    fail(
                        &job,
                        &caught(
                            "42704",
                            format!("index {target} no longer exists"),
                            None,
                            None,
                        ),
                    );
                }
                return Prepared::Stop;
            };
            if spec.action == IndexAction::Reindex && earlier > 0 {
                let prefix = format!("{}_cc", ix.name);
                leftovers.extend(
                    indexes
                        .iter()
                        .filter(|i| !i.valid && i.name.starts_with(&prefix))
                        .cloned(),
                );
            }
            size_before = Some(ix.size);
            let statement = rules::statement_for(spec.action, &ix.schema, &ix.name, "");
            (ix.schema, ix.name, statement)
        }
    };
    let before = indexes
        .iter()
        .filter(|i| !leftovers.iter().any(|l| l.oid == i.oid))
        .map(|i| i.oid)
        .collect();
    let attempt = as_owner(|| builds::start_attempt(id, &statement, "starting"));
    Prepared::Run(Box::new(Attempt {
        job_id: id,
        attempt,
        owner: job.owner,
        relid: job.relid,
        spec,
        statement,
        schema,
        name,
        size_before,
        before,
        leftovers,
    }))
}

fn set_phase(id: i64, phase: &str) {
    if let Err(e) = in_transaction(|| as_owner(|| builds::set_phase(id, Some(phase)))) {
        pgrx::warning!("pg_migrate job {id}: {}", e.message);
    }
}

fn drop_statement(ix: &IndexNow) -> String {
    rules::statement_for(IndexAction::Drop, &ix.schema, &ix.name, "")
}

/// Ok while the job is still this worker's to run; a pause or cancel
/// that came in between ends the attempt as if it interrupted it.
fn go_on_or_stop(id: i64) -> Result<(), Failure> {
    let go_on = in_transaction(|| {
        let job = as_owner(|| jobs::get(id, false));
        still_mine(&job)
    });
    let error = match go_on {
        Ok(true) => return Ok(()),
        Ok(false) => caught("57014", "stopped before it began".into(), None, None),
        Err(e) => e,
    };
    Err(Failure {
        error,
        phase: None,
        waiting_for: None,
    })
}

fn run(a: &Attempt) {
    let id = a.job_id;
    // From here a pause or cancel interrupts the statement (the signal
    // waits while pg_migrate's own steps run).
    HoldCancels::forget_pending();
    begin_build(id);
    let mut result = go_on_or_stop(id);
    for ix in &a.leftovers {
        if result.is_err() {
            break;
        }
        let target = qualified(&ix.schema, &ix.name);
        set_phase(
            id,
            &format!("dropping invalid index {target} left by an earlier attempt"),
        );
        result = toplevel::run(&Statement {
            sql: &drop_statement(ix),
            role: a.owner,
            settings: &[],
            lock_timeout_ms: a.spec.max_wait_ms,
            table: None,
        });
        let note = match &result {
            Ok(()) => format!("dropped invalid index {target} left by an earlier attempt"),
            Err(f) => format!(
                "could not drop invalid index {target} left by an earlier attempt: {}",
                f.error.message
            ),
        };
        let _ = in_transaction(|| as_owner(|| builds::note_attempt(id, a.attempt, &note)));
    }
    if result.is_ok() && !a.leftovers.is_empty() {
        // A pause or cancel that came during those drops.
        result = go_on_or_stop(id);
    }
    if result.is_ok() {
        set_phase(id, facts::of(a.spec.action).name);
        result = toplevel::run(&Statement {
            sql: &a.statement,
            role: a.owner,
            settings: &a.spec.settings,
            lock_timeout_ms: a.spec.max_wait_ms,
            table: (a.spec.action == IndexAction::Create).then_some(a.relid),
        });
    }
    end_build();
    HoldCancels::forget_pending();

    let ended = match result {
        Ok(()) => in_transaction(|| succeeded(a)),
        Err(f) => {
            // Name what it waited for now, before the cleanup waits too.
            let waited = f
                .waiting_for
                .and_then(|pid| in_transaction(|| as_owner(|| builds::describe_backend(pid))).ok());
            let note = clean_up(a);
            in_transaction(|| failed(a, &f, waited.as_deref(), note.as_deref()))
        }
    };
    if let Err(e) = ended {
        give_up(id, &e);
    }
}

/// Drop what a failed attempt left invalid: the index it was building, or
/// the new copy a REINDEX made.  Never an index that was there before.
fn clean_up(a: &Attempt) -> Option<String> {
    let id = a.job_id;
    let targets: Vec<IndexNow> = in_transaction(|| {
        as_owner(|| match a.spec.action {
            IndexAction::Create => builds::index_named(&a.schema, &a.name)
                .filter(|i| !i.valid && !a.before.contains(&i.oid))
                .into_iter()
                .collect(),
            IndexAction::Reindex => {
                let prefix = format!("{}_cc", a.name);
                builds::indexes_of(a.relid)
                    .into_iter()
                    .filter(|i| {
                        !i.valid && !a.before.contains(&i.oid) && i.name.starts_with(&prefix)
                    })
                    .collect()
            }
            IndexAction::Drop => Vec::new(),
        })
    })
    .unwrap_or_default();
    let mut notes = Vec::new();
    for ix in targets {
        let target = qualified(&ix.schema, &ix.name);
        set_phase(id, &format!("cleaning up: dropping invalid index {target}"));
        let dropped = toplevel::run(&Statement {
            sql: &drop_statement(&ix),
            role: a.owner,
            settings: &[],
            lock_timeout_ms: a.spec.max_wait_ms,
            table: None,
        });
        notes.push(match dropped {
            Ok(()) => format!("dropped invalid index {target}"),
            Err(f) => format!(
                "could not drop invalid index {target} ({}); the next attempt drops it first, or DROP INDEX CONCURRENTLY {target}",
                f.error.message
            ),
        });
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// The statement succeeded.
fn succeeded(a: &Attempt) {
    let id = a.job_id;
    let job = as_owner(|| jobs::get(id, true));
    let now = match a.spec.action {
        IndexAction::Create | IndexAction::Reindex => {
            as_owner(|| builds::index_named(&a.schema, &a.name))
        }
        IndexAction::Drop => None,
    };
    let mut end = AttemptEnd {
        outcome: "succeeded",
        index_size: match a.spec.action {
            IndexAction::Drop => a.size_before,
            _ => now.as_ref().map(|i| i.size),
        },
        waited_for: None,
        error: None,
        note: None,
    };
    // CREATE INDEX IF NOT EXISTS says nothing when it skips an invalid
    // index of that name: the job did not build what it was asked for.
    let invalid = a.spec.action == IndexAction::Create && !now.as_ref().is_some_and(|i| i.valid);
    let error = invalid.then(|| {
        let target = qualified(&a.schema, &a.name);
        caught(
            "55000",
            format!("index {target} exists but is invalid; the statement skipped it"),
            Some("An earlier failed build outside this job left it.".into()),
            Some(&format!(
                "Drop it with DROP INDEX CONCURRENTLY {target}; then SELECT migrate_retry({id})."
            )),
        )
    });
    if let Some(e) = &error {
        end.outcome = "failed";
        end.error = Some(e);
    }
    as_owner(|| builds::end_attempt(id, a.attempt, &end));
    let Some(job) = job else { return };
    if !still_mine(&Some(job.clone())) {
        // Paused or cancelled while it finished: the work is done all the
        // same (the attempt says so); the job keeps its new state.
        if job.mine {
            as_owner(|| builds::release(id));
        }
        return;
    }
    match error {
        Some(e) => {
            fail(&job, &e);
        }
        None => after_success(&job, &a.spec, now.map(|i| i.oid)),
    }
}

/// Finish the job, or queue its next scheduled run.
fn after_success(job: &Job, spec: &IndexSpec, index: Option<pg_sys::Oid>) {
    if let Some(oid) = index {
        as_owner(|| builds::set_index_oid(job.id, oid));
    }
    match rules::after_success(spec) {
        AfterSuccess::Again => {
            let next = spec
                .schedule
                .as_deref()
                .and_then(|s| Cron::parse(s).ok())
                .and_then(|c| pace::next_match(&c, time_zone(spec)));
            match next {
                Some(at) => as_owner(|| builds::requeue(job.id, at)),
                None => {
                    succeed(job);
                }
            }
        }
        AfterSuccess::Finished => {
            succeed(job);
        }
    }
}

/// The statement (or the step before it) failed.
fn failed(a: &Attempt, f: &Failure, waited: Option<&str>, note: Option<&str>) {
    let id = a.job_id;
    let job = as_owner(|| jobs::get(id, true));
    let mut error = f.error.clone();
    if error.sqlstate == "55P03" && a.spec.max_wait_ms > 0 {
        let original = match &error.detail {
            Some(d) => format!("{} ({d})", error.message),
            None => error.message.clone(),
        };
        error.message = rules::waited_too_long(a.spec.max_wait_ms, f.phase, waited);
        error.detail = Some(format!("PostgreSQL said: {original}"));
    }
    let mut end = AttemptEnd {
        outcome: "failed",
        index_size: None,
        waited_for: waited,
        error: Some(&error),
        note,
    };
    let Some(job) = job else { return };
    if !still_mine(&Some(job.clone())) {
        end.outcome = match job.state {
            JobState::Paused => "paused",
            JobState::Cancelled => "cancelled",
            _ => "interrupted",
        };
        if f.error.sqlstate == "57014" {
            end.error = None;
        }
        as_owner(|| {
            builds::end_attempt(id, a.attempt, &end);
            if job.mine {
                builds::release(id);
            }
        });
        return;
    }
    match rules::classify(&error.sqlstate) {
        rules::AttemptEnd::Retry(reason) if job.retries < a.spec.max_retries => {
            let n = job.retries + 1;
            let backoff = jittered(
                rules::retry_backoff_ms(a.spec.retry_delay_ms, n),
                (id as u64) << 16 | n as u64,
            );
            let why = format!(
                "{} failed ({reason}); retry {n} of {} in {}",
                a.spec.action.noun(),
                a.spec.max_retries,
                human_seconds(backoff as f64 / 1000.0)
            );
            end.outcome = "retrying";
            as_owner(|| {
                builds::end_attempt(id, a.attempt, &end);
                builds::retry_later(id, n, &why, &error, backoff);
            });
        }
        _ => {
            as_owner(|| builds::end_attempt(id, a.attempt, &end));
            fail(&job, &error);
        }
    }
}
