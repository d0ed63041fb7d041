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
use crate::engine::index::{
    self as rules, AfterSuccess, IndexAction, IndexSpec, PartitionState, PartitionStep,
};
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
    /// The settings the statement runs under.
    settings: Vec<(String, String)>,
    /// Which step of the job this is.
    step: Step,
    /// A step of a job on a partitioned table: which partition, shown as
    /// the job's phase.
    label: Option<String>,
}

/// What an attempt does for its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// All the job does (a table's index, a drop, a rebuild).
    Whole,
    /// A partitioned table: its index, ON ONLY it.
    Top,
    /// A partitioned partition's index, ON ONLY it.
    Inner,
    /// Attach a partition's index to its parent's.
    Attach,
    /// Build a leaf partition's index concurrently.
    Leaf,
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

/// Drive index job `id`, claimed by this worker, through one attempt (a
/// job on a partitioned table: through its steps, one attempt each, until
/// one fails or the job ends).
pub fn drive(id: i64) {
    let _hold = HoldCancels::new();
    loop {
        match in_transaction(|| prepare(id)) {
            Ok(Prepared::Run(a)) => {
                if !run(&a) {
                    break;
                }
            }
            Ok(Prepared::Stop) => break,
            // An error outside the statement: the job cannot go on.
            Err(e) => {
                give_up(id, &e);
                break;
            }
        }
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
    if spec.action == IndexAction::Create && spec.partitioned {
        return prepare_partitioned(&job, spec, earlier);
    }
    let indexes = if spec.partitioned {
        as_owner(|| builds::indexes_of_tree(job.relid))
    } else {
        as_owner(|| builds::indexes_of(job.relid))
    };
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
                    if another_build_on(&job, job.relid, &target, "the table") {
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
                let prefixes = copy_prefixes(&ix, spec.partitioned);
                leftovers.extend(
                    indexes
                        .iter()
                        .filter(|i| !i.valid && prefixes.iter().any(|p| i.name.starts_with(p)))
                        .cloned(),
                );
            }
            size_before = Some(ix.size);
            let statement = match spec.action {
                IndexAction::Drop => rules::drop_statement(&ix.schema, &ix.name, spec.partitioned),
                _ => rules::statement_for(spec.action, &ix.schema, &ix.name, ""),
            };
            (ix.schema, ix.name, statement)
        }
    };
    let before = indexes
        .iter()
        .filter(|i| !leftovers.iter().any(|l| l.oid == i.oid))
        .map(|i| i.oid)
        .collect();
    let attempt = as_owner(|| builds::start_attempt(id, &statement, "starting"));
    let settings = spec.settings.clone();
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
        settings,
        step: Step::Whole,
        label: None,
    }))
}

/// Somebody else builds an index on `table` now: an invalid index there
/// is not ours to drop.  True if so; the job looks again in a minute.
fn another_build_on(job: &Job, table: pg_sys::Oid, index: &str, on: &str) -> bool {
    let Some(pid) = as_owner(|| builds::other_build_on(table)) else {
        return false;
    };
    let why = format!(
        "invalid index {index} exists while pid {pid} builds an index on {on}; looking again in a minute"
    );
    let e = caught("55006", why.clone(), None, None);
    as_owner(|| builds::retry_later(job.id, job.retries, &why, &e, 60_000));
    true
}

/// How the copies REINDEX CONCURRENTLY makes of an index begin (`{name}_cc`,
/// then `new` or `old`): of a partitioned index, of each of its
/// partitions' indexes.
fn copy_prefixes(ix: &IndexNow, partitioned: bool) -> Vec<String> {
    let names = if partitioned {
        as_owner(|| builds::index_tree_names(ix.oid))
    } else {
        vec![ix.name.clone()]
    };
    names.into_iter().map(|n| format!("{n}_cc")).collect()
}

/// The next step of a job on a partitioned table: create its index ON ONLY
/// the table; then, parents first, each partitioned partition's index ON
/// ONLY it and each leaf's index concurrently, each attached to its
/// parent's as soon as it is there.  What the catalogs show decides, so a
/// job that resumes builds nothing twice, and a partition attached or
/// created meanwhile is covered.  When every partition's index is attached,
/// PostgreSQL has made the index valid and the job ends.
fn prepare_partitioned(job: &Job, spec: IndexSpec, earlier: i32) -> Prepared {
    let id = job.id;
    let target = qualified(&spec.schema, &spec.name);
    let top = match as_owner(|| builds::index_named(&spec.schema, &spec.name)) {
        None => {
            let statement = spec.statement.clone();
            let (schema, name) = (spec.schema.clone(), spec.name.clone());
            let label = format!("creating {target} ON ONLY the table");
            let settings = spec.settings.clone();
            return start(
                job,
                spec,
                Step::Top,
                statement,
                job.relid,
                (schema, name),
                settings,
                label,
                None,
            );
        }
        // This job's: it recorded the index, or created it just before its
        // worker stopped (an invalid partitioned index on its table, and
        // the job has run before).
        Some(ix)
            if job.index_oid == Some(ix.oid)
                || (job.index_oid.is_none()
                    && earlier > 0
                    && ix.table == job.relid
                    && !ix.valid
                    && as_owner(|| builds::partitioned_index(ix.oid)).is_some()) =>
        {
            ix
        }
        Some(ix) if ix.valid && spec.if_not_exists => {
            done_already(
                job,
                &spec,
                &spec.statement,
                Some(ix.size),
                "the index already existed (IF NOT EXISTS): nothing to build",
            );
            return Prepared::Stop;
        }
        Some(ix) => {
            let e = if ix.valid {
                caught(
                    "42P07",
                    format!("relation {target} already exists"),
                    Some("It was created after the job was queued.".into()),
                    None,
                )
            } else {
                caught(
                    "55000",
                    format!("an invalid index {target} exists"),
                    Some("It is not this job's.".into()),
                    Some(&format!(
                        "Drop it with DROP INDEX {target}; then SELECT migrate_retry({id})."
                    )),
                )
            };
            fail(job, &e);
            return Prepared::Stop;
        }
    };
    if job.index_oid != Some(top.oid) {
        as_owner(|| builds::set_index_oid(id, top.oid));
    }
    let parts = as_owner(|| builds::partitions(job.relid, top.oid));
    let planned: Vec<String> = parts
        .iter()
        .map(|p| rules::partition_index_name(&p.name, &spec.name, p.oid.to_u32()))
        .collect();
    let named: Vec<Option<IndexNow>> = parts
        .iter()
        .zip(&planned)
        .map(|(p, n)| as_owner(|| builds::index_named(&p.schema, n)).filter(|ix| ix.table == p.oid))
        .collect();
    let states: Vec<PartitionState> = parts
        .iter()
        .zip(&named)
        .map(|(p, n)| PartitionState {
            leaf: p.leaf,
            parent_indexed: p.parent_index.is_some(),
            attached: p.attached,
            named: n.as_ref().map(|ix| ix.valid),
        })
        .collect();
    let leaves = parts.iter().filter(|p| p.leaf).count() as i64;
    let done = parts.iter().filter(|p| p.leaf && p.attached).count() as i64;
    as_owner(|| builds::set_partition_counts(id, done, leaves));
    let step = rules::next_partition_step(&states);
    let i = match step {
        PartitionStep::Done => {
            match as_owner(|| builds::index_by_oid(top.oid)) {
                Some(ix) if ix.valid => {
                    as_owner(|| builds::reset_retries(id));
                    after_success(job, &spec, Some(ix.oid));
                }
                _ => {
                    fail(
                        job,
                        &caught(
                            "55000",
                            format!(
                                "index {target} is still invalid with every partition's index attached"
                            ),
                            Some("A partition was attached or detached while the job ended.".into()),
                            Some(&format!("SELECT migrate_retry({id}) looks again.")),
                        ),
                    );
                }
            }
            return Prepared::Stop;
        }
        PartitionStep::CreateOnly(i) | PartitionStep::Attach(i) | PartitionStep::Build(i) => i,
    };
    let p = &parts[i];
    let table = qualified(&p.schema, &p.name);
    let index = qualified(&p.schema, &planned[i]);
    let place = if p.leaf {
        format!("partition {} of {leaves}, {table}", done + 1)
    } else {
        format!("partitioned partition {table}")
    };
    // Statements pg_migrate writes run with the pinned search_path their
    // names were written under.
    let mut settings: Vec<(String, String)> = spec
        .settings
        .iter()
        .filter(|(n, _)| n != "search_path")
        .cloned()
        .collect();
    settings.push(("search_path".into(), "pg_catalog, pg_temp".into()));
    if let PartitionStep::Attach(_) = step {
        let Some(parent) = p
            .parent_index
            .and_then(|o| as_owner(|| builds::index_by_oid(o)))
        else {
            return Prepared::Stop;
        };
        let statement = format!(
            "ALTER INDEX {} ATTACH PARTITION {index}",
            qualified(&parent.schema, &parent.name)
        );
        let label = format!("{place}: attaching {index}");
        return start(
            job,
            spec,
            Step::Attach,
            statement,
            p.oid,
            (p.schema.clone(), planned[i].clone()),
            settings,
            label,
            None,
        );
    }
    let Some(def) = as_owner(|| builds::partitioned_index(top.oid)) else {
        return Prepared::Stop;
    };
    let Some(statement) = rules::partition_statement(
        &def.definition,
        &def.head,
        def.unique,
        &planned[i],
        &table,
        p.leaf,
    ) else {
        fail(
            job,
            &caught(
                "XX000",
                format!("could not write the index of partition {table} from that of {target}"),
                Some(format!("pg_get_indexdef said: {}", def.definition)),
                None,
            ),
        );
        return Prepared::Stop;
    };
    if let Some(space) = &def.tablespace {
        settings.push(("default_tablespace".into(), space.clone()));
    }
    if !p.leaf {
        let label = format!("{place}: creating {index} ON ONLY it");
        return start(
            job,
            spec,
            Step::Inner,
            statement,
            p.oid,
            (p.schema.clone(), planned[i].clone()),
            settings,
            label,
            None,
        );
    }
    // A leaf: an invalid index of that name is what an interrupted build
    // left (unless somebody builds on the leaf now).
    let leftover = named[i].clone().filter(|ix| !ix.valid);
    if leftover.is_some() && another_build_on(job, p.oid, &index, &format!("partition {table}")) {
        return Prepared::Stop;
    }
    start(
        job,
        spec,
        Step::Leaf,
        statement,
        p.oid,
        (p.schema.clone(), planned[i].clone()),
        settings,
        place,
        leftover,
    )
}

/// Open an attempt of a step of a job on a partitioned table.
#[allow(clippy::too_many_arguments)]
fn start(
    job: &Job,
    spec: IndexSpec,
    step: Step,
    statement: String,
    relid: pg_sys::Oid,
    (schema, name): (String, String),
    settings: Vec<(String, String)>,
    label: String,
    leftover: Option<IndexNow>,
) -> Prepared {
    let leftovers: Vec<IndexNow> = leftover.into_iter().collect();
    let before = as_owner(|| builds::indexes_of(relid))
        .into_iter()
        .filter(|i| !leftovers.iter().any(|l| l.oid == i.oid))
        .map(|i| i.oid)
        .collect();
    let attempt = as_owner(|| builds::start_attempt(job.id, &statement, &label));
    Prepared::Run(Box::new(Attempt {
        job_id: job.id,
        attempt,
        owner: job.owner,
        relid,
        spec,
        statement,
        schema,
        name,
        size_before: None,
        before,
        leftovers,
        settings,
        step,
        label: Some(label),
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

/// Run an attempt; true if the job goes on with its next step now.
fn run(a: &Attempt) -> bool {
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
        set_phase(
            id,
            a.label.as_deref().unwrap_or(facts::of(a.spec.action).name),
        );
        result = toplevel::run(&Statement {
            sql: &a.statement,
            role: a.owner,
            settings: &a.settings,
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
            in_transaction(|| failed(a, &f, waited.as_deref(), note.as_deref())).map(|()| false)
        }
    };
    ended.unwrap_or_else(|e| {
        give_up(id, &e);
        false
    })
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
                let prefixes = builds::index_named(&a.schema, &a.name)
                    .map(|ix| copy_prefixes(&ix, a.spec.partitioned))
                    .unwrap_or_else(|| vec![format!("{}_cc", a.name)]);
                let all = if a.spec.partitioned {
                    builds::indexes_of_tree(a.relid)
                } else {
                    builds::indexes_of(a.relid)
                };
                all.into_iter()
                    .filter(|i| {
                        !i.valid
                            && !a.before.contains(&i.oid)
                            && prefixes.iter().any(|p| i.name.starts_with(p))
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

/// The statement succeeded; true if the job goes on with its next step.
fn succeeded(a: &Attempt) -> bool {
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
        index_size: match (a.spec.action, a.step) {
            (IndexAction::Drop, _) => a.size_before,
            (_, Step::Whole | Step::Leaf) => now.as_ref().map(|i| i.size),
            // An index ON ONLY a table is empty; an attach builds nothing.
            _ => None,
        },
        waited_for: None,
        error: None,
        note: None,
    };
    // CREATE INDEX IF NOT EXISTS says nothing when it skips an invalid
    // index of that name: the job did not build what it was asked for.
    // (An index ON ONLY a partitioned table is invalid until its
    // partitions' are attached.)
    let invalid = a.spec.action == IndexAction::Create
        && matches!(a.step, Step::Whole | Step::Leaf)
        && !now.as_ref().is_some_and(|i| i.valid);
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
    let Some(job) = job else { return false };
    if a.step == Step::Top {
        if let Some(ix) = &now {
            as_owner(|| builds::set_index_oid(id, ix.oid));
        }
    }
    if !still_mine(&Some(job.clone())) {
        // Paused or cancelled while it finished: the work is done all the
        // same (the attempt says so); the job keeps its new state.
        if job.mine {
            as_owner(|| builds::release(id));
        }
        return false;
    }
    match error {
        Some(e) => {
            fail(&job, &e);
            false
        }
        None if a.step == Step::Whole => {
            // A Citus distributed table's index: its shards done, kept.
            if a.spec.action != IndexAction::Drop {
                if let Some((done, total)) = as_owner(|| {
                    crate::kinds::backfill::citus::shard_indexes(job.relid, &a.schema, &a.name)
                }) {
                    as_owner(|| builds::set_partition_counts(id, done, total));
                }
            }
            after_success(&job, &a.spec, now.map(|i| i.oid));
            false
        }
        // A step of a job on a partitioned table: a failure of the next
        // step gets its own retries.
        None => {
            as_owner(|| builds::reset_retries(id));
            true
        }
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
