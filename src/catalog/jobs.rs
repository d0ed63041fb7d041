//! Reading and changing `pgmigrate.jobs`.  Callers wrap these in
//! `as_owner`; statements are fully qualified and take values as parameters.

use super::SpiOrBug;
use crate::engine::jobs::JobState;
use pgrx::datum::{JsonB, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiHeapTupleData;

/// This backend's start time: with the pid it names a driver uniquely
/// (pids are reused, start times are not).
const MY_START: &str =
    "(SELECT a.backend_start FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a)";

/// A job is free to be driven when nobody alive drives it.
const FREE: &str =
    "(j.driver_pid IS NULL OR NOT pgmigrate.backend_alive(j.driver_pid, j.driver_started))";

/// Runnable now: queued or left running/waiting by a driver that is gone,
/// and due.
const RUNNABLE: &str = "j.state IN ('queued', 'running', 'waiting')
   AND j.run_at <= pg_catalog.clock_timestamp()
   AND coalesce(j.wait_until, '-infinity') <= pg_catalog.clock_timestamp()
   AND pgmigrate.gate_closed(j.job_id) IS NULL";

/// Every gate of the job is open (`pgmigrate.gates`).
const GATES_OPEN: &str = "pgmigrate.gate_closed(j.job_id) IS NULL";

/// A job of a kind that runs one at a time on a table (with the other
/// kinds of its group, `pgmigrate.kinds.one_per_table`) waits while another
/// such job on the same table runs; a slice of a backfill waits while as
/// many of its siblings run as its job's `parallel` allows.
const NOT_BLOCKED: &str = "NOT EXISTS (
       SELECT 1 FROM pgmigrate.kinds k, pgmigrate.jobs o, pgmigrate.kinds ok
        WHERE k.kind = j.kind AND o.relid = j.relid AND o.job_id <> j.job_id
          AND ok.kind = o.kind AND ok.one_per_table = k.one_per_table
          AND o.driver_pid IS NOT NULL AND pgmigrate.backend_alive(o.driver_pid, o.driver_started))
   AND (j.parent_id IS NULL OR (
       SELECT count(*) FROM pgmigrate.jobs s
        WHERE s.parent_id = j.parent_id AND s.job_id <> j.job_id
          AND s.driver_pid IS NOT NULL AND pgmigrate.backend_alive(s.driver_pid, s.driver_started))
       < (SELECT coalesce((p.spec ->> 'parallel')::int, 1) FROM pgmigrate.jobs p WHERE p.job_id = j.parent_id))";

/// A job as a step sees it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub relid: pg_sys::Oid,
    pub relation: String,
    pub owner: pg_sys::Oid,
    pub state: JobState,
    pub spec: serde_json::Value,
    pub cursor: Option<Vec<String>>,
    pub lower: Option<Vec<String>>,
    pub upper: Option<Vec<String>>,
    pub rows_done: i64,
    pub rows_updated: i64,
    pub rows_estimate: Option<i64>,
    pub batches: i32,
    pub batch_size: i32,
    pub rate: Option<f64>,
    pub retries: i32,
    pub error: Option<String>,
    pub error_sqlstate: Option<String>,
    pub error_detail: Option<String>,
    pub migration_app: Option<String>,
    pub migration_name: Option<String>,
    pub migration_run: Option<i64>,
    pub driver_pid: Option<i32>,
    pub driver_kind: Option<String>,
    pub ms_per_row: Option<f64>,
    /// Time throttled since the last batch.
    pub throttled_batch_ms: i64,
    /// Index jobs: the index dropped or rebuilt (or built).
    pub index_oid: Option<pg_sys::Oid>,
    pub wait_reason: Option<String>,
    /// A slice of a parallel or partitioned backfill: the job it is part of.
    pub parent: Option<i64>,
    /// This backend drives the job now.
    pub mine: bool,
    /// Another backend that is alive drives the job now.
    pub driven_elsewhere: bool,
}

const JOB_COLUMNS: &str =
    "j.job_id, j.kind, j.relid, j.relation, j.owner, j.state, j.spec, j.cursor,
       j.lower_bound, j.upper_bound, j.rows_done, j.rows_updated, j.rows_estimate, j.batches,
       j.batch_size, j.rate, j.retries, j.error, j.error_sqlstate, j.error_detail,
       j.migration_app, j.migration_name, j.migration_run, j.driver_pid, j.driver_kind,
       j.ms_per_row, j.throttled_batch_ms, j.index_oid, j.wait_reason, j.parent_id";

fn job_from(row: &SpiHeapTupleData<'_>, mine_at: usize) -> Job {
    let get = "reading a job";
    let state: String = row.get(6).or_bug(get).unwrap_or_default();
    let spec: Option<JsonB> = row.get(7).or_bug(get);
    Job {
        id: row.get(1).or_bug(get).unwrap_or(0),
        kind: row.get(2).or_bug(get).unwrap_or_default(),
        relid: row.get(3).or_bug(get).unwrap_or(pg_sys::Oid::INVALID),
        relation: row.get(4).or_bug(get).unwrap_or_default(),
        owner: row.get(5).or_bug(get).unwrap_or(pg_sys::Oid::INVALID),
        state: JobState::parse(&state).expect("jobs_state_check allows only known states"),
        spec: spec.map(|j| j.0).unwrap_or(serde_json::Value::Null),
        cursor: row.get(8).or_bug(get),
        lower: row.get(9).or_bug(get),
        upper: row.get(10).or_bug(get),
        rows_done: row.get(11).or_bug(get).unwrap_or(0),
        rows_updated: row.get(12).or_bug(get).unwrap_or(0),
        rows_estimate: row.get(13).or_bug(get),
        batches: row.get(14).or_bug(get).unwrap_or(0),
        batch_size: row.get(15).or_bug(get).unwrap_or(1),
        rate: row.get(16).or_bug(get),
        retries: row.get(17).or_bug(get).unwrap_or(0),
        error: row.get(18).or_bug(get),
        error_sqlstate: row.get(19).or_bug(get),
        error_detail: row.get(20).or_bug(get),
        migration_app: row.get(21).or_bug(get),
        migration_name: row.get(22).or_bug(get),
        migration_run: row.get(23).or_bug(get),
        driver_pid: row.get(24).or_bug(get),
        driver_kind: row.get(25).or_bug(get),
        ms_per_row: row.get(26).or_bug(get),
        throttled_batch_ms: row.get(27).or_bug(get).unwrap_or(0),
        index_oid: row.get(28).or_bug(get),
        wait_reason: row.get(29).or_bug(get),
        parent: row.get(30).or_bug(get),
        mine: row.get(mine_at).or_bug(get).unwrap_or(false),
        driven_elsewhere: row.get(mine_at + 1).or_bug(get).unwrap_or(false),
    }
}

/// Read job `id`; with `lock`, lock its row for the rest of the transaction
/// (a running batch holds it, so this waits for that batch).  The lock is
/// FOR NO KEY UPDATE: it does not stop another job's gate from naming this
/// one (the foreign key's KEY SHARE), so a worker waiting for its table
/// while a migration queues a gated job in a transaction that holds the
/// table cannot deadlock with it.
pub fn get(id: i64, lock: bool) -> Option<Job> {
    // Whether its driver is alive must be read now: the backends this
    // transaction saw earlier (a procedure's loop, a long transaction) may
    // not include a worker that has started since.
    unsafe { pg_sys::pgstat_clear_snapshot() };
    let sql = format!(
        "SELECT {JOB_COLUMNS},
                coalesce(j.driver_pid = pg_catalog.pg_backend_pid() AND j.driver_started = {MY_START}, false),
                NOT {FREE} AND NOT coalesce(j.driver_pid = pg_catalog.pg_backend_pid()
                                            AND j.driver_started = {MY_START}, false)
           FROM pgmigrate.jobs j WHERE j.job_id = $1 {}",
        if lock { "FOR NO KEY UPDATE" } else { "" }
    );
    Spi::connect_mut(|client| {
        let rows = client
            .update(&sql, None, &[id.into()])
            .or_bug("reading a job");
        rows.into_iter().next().map(|row| job_from(&row, 31))
    })
}

/// A new job's row.
pub struct NewJob<'a> {
    pub kind: &'a str,
    pub relid: pg_sys::Oid,
    pub relation: &'a str,
    pub owner: pg_sys::Oid,
    pub spec: serde_json::Value,
    pub command: &'a str,
    pub batch_size: Option<i32>,
    pub run_at: Option<TimestampWithTimeZone>,
    pub migration: Option<(&'a str, &'a str, i64)>,
    pub index_oid: Option<pg_sys::Oid>,
    /// What it waits for before it starts.
    pub gates: &'a Gates,
}

/// What a job waits for before it starts: other jobs' success, a
/// migration applied.
#[derive(Debug, Clone, Default)]
pub struct Gates {
    pub jobs: Vec<i64>,
    pub migration: Option<(String, String)>,
}

pub fn insert(j: NewJob<'_>) -> i64 {
    let id = insert_job(&j);
    let mut gate_no = 0;
    for after in &j.gates.jobs {
        gate_no += 1;
        super::write(
            "INSERT INTO pgmigrate.gates (job_id, gate_no, after_job) VALUES ($1, $2, $3)",
            &[id.into(), gate_no.into(), (*after).into()],
            "queueing a job's gates",
        );
    }
    if let Some((app, name)) = &j.gates.migration {
        gate_no += 1;
        super::write(
            "INSERT INTO pgmigrate.gates (job_id, gate_no, after_app, after_name) VALUES ($1, $2, $3, $4)",
            &[id.into(), gate_no.into(), app.as_str().into(), name.as_str().into()],
            "queueing a job's gates",
        );
    }
    id
}

/// A running job waits for more: the gates are added after its own, and
/// its driver lets go of it; a worker takes it up again once every gate is
/// open (a job's success wakes the workers).
pub fn wait_behind(id: i64, after_jobs: &[i64], migration: Option<(&str, &str)>, reason: &str) {
    for after in after_jobs {
        super::write(
            "INSERT INTO pgmigrate.gates (job_id, gate_no, after_job)
             SELECT $1, coalesce(max(g.gate_no), 0) + 1, $2 FROM pgmigrate.gates g WHERE g.job_id = $1",
            &[id.into(), (*after).into()],
            "adding a job's gates",
        );
    }
    if let Some((app, name)) = migration {
        super::write(
            "INSERT INTO pgmigrate.gates (job_id, gate_no, after_app, after_name)
             SELECT $1, coalesce(max(g.gate_no), 0) + 1, $2, $3 FROM pgmigrate.gates g WHERE g.job_id = $1",
            &[id.into(), app.into(), name.into()],
            "adding a job's gates",
        );
    }
    super::write(
        "UPDATE pgmigrate.jobs
            SET state = 'waiting', wait_reason = $2, wait_until = NULL,
                driver_pid = NULL, driver_started = NULL, driver_kind = NULL,
                updated_at = pg_catalog.clock_timestamp()
          WHERE job_id = $1",
        &[id.into(), reason.into()],
        "releasing a job",
    );
}

/// Why job `id` may not start yet (its first closed gate), or None.
pub fn gate_closed(id: i64) -> Option<String> {
    Spi::get_one_with_args::<String>("SELECT pgmigrate.gate_closed($1)", &[id.into()])
        .or_bug("reading a job's gates")
}

/// Does an unfinished job wait for job `id` (None: for any migration)?
pub fn gated_on(job: Option<i64>) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pgmigrate.gates g JOIN pgmigrate.jobs j ON j.job_id = g.job_id
                         WHERE j.state IN ('queued', 'waiting')
                           AND CASE WHEN $1 IS NULL THEN g.after_app IS NOT NULL ELSE g.after_job = $1 END)",
        &[job.into()],
    )
    .or_bug("reading gates")
    .unwrap_or(false)
}

fn insert_job(j: &NewJob<'_>) -> i64 {
    let (app, name, run) = match j.migration {
        Some((a, n, r)) => (Some(a), Some(n), Some(r)),
        None => (None, None, None),
    };
    Spi::connect_mut(|client| {
        client
            .update(
                "INSERT INTO pgmigrate.jobs (kind, relid, relation, owner, spec, command, batch_size, run_at,
                                             migration_app, migration_name, migration_run, index_oid)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, pg_catalog.clock_timestamp()), $9, $10, $11, $12)
                 RETURNING job_id",
                None,
                &[
                    j.kind.into(),
                    j.relid.into(),
                    j.relation.into(),
                    j.owner.into(),
                    JsonB(j.spec.clone()).into(),
                    j.command.into(),
                    j.batch_size.into(),
                    j.run_at.into(),
                    app.into(),
                    name.into(),
                    run.into(),
                    j.index_oid.into(),
                ],
            )
            .or_bug("queueing a job")
            .first()
            .get_one::<i64>()
            .or_bug("queueing a job")
            .expect("INSERT ... RETURNING returns the id")
    })
}

/// Take the next runnable job for this worker: mark it running with this
/// backend as its driver.  Returns its id and kind.
pub fn claim_next() -> Option<(i64, String)> {
    // Claims are short; one at a time, each sees the one before it.
    let sql = format!(
        "UPDATE pgmigrate.jobs AS u
            SET state = 'running', driver_pid = pg_catalog.pg_backend_pid(), driver_started = {MY_START},
                driver_kind = 'worker', wait_reason = NULL, wait_until = NULL,
                started_at = coalesce(u.started_at, pg_catalog.clock_timestamp()), updated_at = pg_catalog.clock_timestamp()
          WHERE u.job_id = (SELECT j.job_id FROM pgmigrate.jobs j
                             WHERE {RUNNABLE} AND {FREE} AND {NOT_BLOCKED}
                             ORDER BY j.job_id
                             LIMIT 1
                             FOR NO KEY UPDATE SKIP LOCKED)
          RETURNING u.job_id, u.kind"
    );
    Spi::connect_mut(|client| {
        // Claims are serialised, so that two workers never both start an
        // index job on the same table, by a lock no other role can take.
        crate::sys::take_private_lock(crate::sys::PrivateLock::Claims, true);
        let rows = client.update(&sql, None, &[]).or_bug("claiming a job");
        if rows.is_empty() {
            return None;
        }
        let row = rows.first();
        let id = row.get::<i64>(1).or_bug("claiming a job")?;
        let kind = row.get::<String>(2).or_bug("claiming a job")?;
        Some((id, kind))
    })
}

/// This database, as pgmigrate.instance records it: its cluster's system
/// identifier and its oid.
const THIS_DATABASE: &str = "SELECT s.system_identifier, d.oid FROM pg_catalog.pg_control_system() s, pg_catalog.pg_database d
                              WHERE d.datname = pg_catalog.current_database()";

/// A database restored from a dump (pg_dump carries the jobs) does not
/// know itself in `pgmigrate.instance` (the table is not dumped): the jobs
/// that were running or waiting when the dump was taken, and that no live
/// session of this database drives (in the same cluster, the original's
/// worker still drives the original job), are paused with the reason
/// instead of being carried on against a copy, and the database is recorded.  Returns the ids paused;
/// None while the catalog is 0.1.0's, which has no such table (between a
/// new library's start and ALTER EXTENSION UPDATE, whose script records the
/// database itself).
pub fn adopt_restored() -> Option<Vec<i64>> {
    let exists = "SELECT pg_catalog.to_regclass('pgmigrate.instance') IS NOT NULL";
    if Spi::get_one::<bool>(exists).or_bug("looking up pgmigrate.instance") != Some(true) {
        return None;
    }
    let known = format!(
        "SELECT EXISTS (SELECT 1 FROM pgmigrate.instance i
                         WHERE (i.system_identifier, i.database) IN ({THIS_DATABASE}))"
    );
    if Spi::get_one::<bool>(&known).or_bug("reading pgmigrate.instance") == Some(true) {
        return Some(Vec::new());
    }
    let pause = "UPDATE pgmigrate.jobs j
            SET state = 'paused', wait_until = NULL, driver_pid = NULL, driver_started = NULL, driver_kind = NULL,
                wait_reason = 'restored from a dump taken while it ran: check the table, then migrate_resume(' || j.job_id || ') goes on where the dump left it',
                updated_at = pg_catalog.clock_timestamp()
          WHERE j.state IN ('running', 'waiting')
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(j.driver_pid) a, pg_catalog.pg_database d
                             WHERE a.backend_start = j.driver_started AND a.datid = d.oid
                               AND d.datname = pg_catalog.current_database())
          RETURNING j.job_id";
    Spi::connect_mut(|client| {
        let rows = client
            .update(pause, None, &[])
            .or_bug("pausing restored jobs");
        let ids: Vec<i64> = rows
            .filter_map(|r| r.get::<i64>(1).ok().flatten())
            .collect();
        client
            .update(
                &format!(
                    "DELETE FROM pgmigrate.instance;
                     INSERT INTO pgmigrate.instance (system_identifier, database) {THIS_DATABASE}"
                ),
                None,
                &[],
            )
            .or_bug("recording the database in pgmigrate.instance");
        Some(ids)
    })
}

/// What a purge removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub jobs: i64,
    pub batches: i64,
    pub exec_attempts: i64,
}

/// Remove finished jobs (with their slices, batches, skipped rows and index
/// builds), batch log rows and migrate_exec attempts older than
/// `retention_secs`, at most once a minute (or half the retention, if less)
/// per database (pgmigrate.instance keeps when).  A finished job that an
/// unfinished job's gate names is kept.  Migration history is not touched.  None when it was not time yet.
pub fn purge(retention_secs: i32) -> Option<Purged> {
    let due = "UPDATE pgmigrate.instance SET purged_at = pg_catalog.clock_timestamp()
                WHERE purged_at IS NULL
                   OR purged_at < pg_catalog.clock_timestamp()
                                  - least(interval '1 minute', pg_catalog.make_interval(secs => $1 / 2))
            RETURNING true";
    let sql = "WITH old AS (
                   SELECT j.job_id FROM pgmigrate.jobs j
                    WHERE j.state IN ('succeeded', 'failed', 'cancelled') AND j.parent_id IS NULL
                      AND j.finished_at < pg_catalog.clock_timestamp() - pg_catalog.make_interval(secs => $1)
                      AND NOT EXISTS (SELECT 1 FROM pgmigrate.gates g JOIN pgmigrate.jobs w ON w.job_id = g.job_id
                                       WHERE g.after_job = j.job_id
                                         AND w.state NOT IN ('succeeded', 'failed', 'cancelled'))),
                    -- the gates of finished jobs that name one of them go too
                    ungated AS (DELETE FROM pgmigrate.gates g WHERE g.after_job IN (SELECT job_id FROM old) RETURNING 1),
                    jobs AS (DELETE FROM pgmigrate.jobs j WHERE j.job_id IN (SELECT job_id FROM old) RETURNING 1),
                    batches AS (DELETE FROM pgmigrate.batches b
                                 WHERE b.finished_at < pg_catalog.clock_timestamp() - pg_catalog.make_interval(secs => $1)
                                   AND b.job_id NOT IN (SELECT job_id FROM old)
                             RETURNING 1),
                    attempts AS (DELETE FROM pgmigrate.exec_attempts a
                                  WHERE a.started_at + a.duration < pg_catalog.clock_timestamp() - pg_catalog.make_interval(secs => $1)
                              RETURNING 1)
               SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM batches), (SELECT count(*) FROM attempts)";
    Spi::connect_mut(|client| {
        let secs = f64::from(retention_secs);
        let now = client
            .update(due, None, &[secs.into()])
            .or_bug("scheduling a purge");
        if now.is_empty() {
            return None;
        }
        let rows = client
            .update(sql, None, &[secs.into()])
            .or_bug("purging old jobs and logs");
        let row = rows.first();
        Some(Purged {
            jobs: row.get::<i64>(1).or_bug("purging").unwrap_or(0),
            batches: row.get::<i64>(2).or_bug("purging").unwrap_or(0),
            exec_attempts: row.get::<i64>(3).or_bug("purging").unwrap_or(0),
        })
    })
}

/// Other jobs a worker could take now.
pub fn runnable_count() -> i64 {
    let sql = format!(
        "SELECT count(*) FROM pgmigrate.jobs j WHERE {RUNNABLE} AND {FREE} AND {NOT_BLOCKED}"
    );
    Spi::connect(|client| client.select(&sql, None, &[])?.first().get_one::<i64>())
        .or_bug("counting runnable jobs")
        .unwrap_or(0)
}

/// Seconds until the next queued or waiting job falls due, if any.
pub fn seconds_to_next_due() -> Option<f64> {
    let sql = format!(
        "SELECT extract(epoch FROM min(greatest(j.run_at, coalesce(j.wait_until, j.run_at))) - pg_catalog.clock_timestamp())::float8
           FROM pgmigrate.jobs j WHERE j.state IN ('queued', 'waiting') AND {FREE} AND {NOT_BLOCKED} AND {GATES_OPEN}"
    );
    Spi::connect(|client| client.select(&sql, None, &[])?.first().get_one::<f64>())
        .or_bug("scheduling")
}

/// Take job `id` for this session (CALL migrate_run).  False when it is
/// finished or another live backend drives it.
pub fn claim_for_session(id: i64) -> bool {
    let sql = format!(
        "UPDATE pgmigrate.jobs AS j
            SET state = 'running', driver_pid = pg_catalog.pg_backend_pid(), driver_started = {MY_START},
                driver_kind = 'session', wait_reason = NULL, wait_until = NULL,
                started_at = coalesce(j.started_at, pg_catalog.clock_timestamp()), updated_at = pg_catalog.clock_timestamp()
          WHERE j.job_id = $1
            AND EXISTS (SELECT 1 FROM pgmigrate.kinds k WHERE k.kind = j.kind AND k.session)
            AND j.state IN ('queued', 'running', 'waiting', 'paused')
            AND ({FREE} OR (j.driver_pid = pg_catalog.pg_backend_pid() AND j.driver_started = {MY_START}))
          RETURNING j.job_id"
    );
    Spi::connect_mut(|client| {
        !client
            .update(&sql, None, &[id.into()])
            .or_bug("claiming a job")
            .is_empty()
    })
}

/// The first and last key (and the row estimate) fixed at the first step.
pub fn set_bounds(id: i64, lower: Option<Vec<String>>, upper: Option<Vec<String>>, estimate: i64) {
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE pgmigrate.jobs SET lower_bound = $2, upper_bound = $3, rows_estimate = $4,
                        updated_at = pg_catalog.clock_timestamp()
                  WHERE job_id = $1",
                None,
                &[id.into(), lower.into(), upper.into(), estimate.into()],
            )
            .or_bug("recording job bounds");
    });
}

/// The batch size a job of the same kind ended with that job `id` waits
/// for (`after_jobs`) and that did the same (same owner, same clauses) and
/// succeeded: the latest of them (called for backfills).  A chain of like jobs (a Citus node's
/// shards, one after another) starts each where the one before ended
/// instead of at the first batch size.
pub fn inherited_batch_size(id: i64) -> Option<i64> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT p.batch_size::pg_catalog.int8
               FROM pgmigrate.gates g
               JOIN pgmigrate.jobs j ON j.job_id OPERATOR(pg_catalog.=) g.job_id
               JOIN pgmigrate.jobs p ON p.job_id OPERATOR(pg_catalog.=) g.after_job
              WHERE g.job_id OPERATOR(pg_catalog.=) $1
                AND p.kind OPERATOR(pg_catalog.=) j.kind
                AND p.state OPERATOR(pg_catalog.=) 'succeeded'
                AND p.owner OPERATOR(pg_catalog.=) j.owner
                AND p.batch_size IS NOT NULL AND p.batches OPERATOR(pg_catalog.>) 0
                AND (p.spec OPERATOR(pg_catalog.->) 'set_clause') OPERATOR(pg_catalog.=) (j.spec OPERATOR(pg_catalog.->) 'set_clause')
                AND (p.spec OPERATOR(pg_catalog.->) 'where_clause') IS NOT DISTINCT FROM (j.spec OPERATOR(pg_catalog.->) 'where_clause')
              ORDER BY p.finished_at DESC LIMIT 1",
            None,
            &[id.into()],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.first().get_one::<i64>()
    })
    .or_bug("reading the batch size of an earlier job")
}

/// A job as a coordinator that follows it sees it (json text): its id,
/// state, counts, error and what it waits for.
pub fn seen(id: i64) -> Option<String> {
    Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.json_build_object('job_id', j.job_id, 'state', j.state,
                'rows_done', j.rows_done, 'rows_updated', j.rows_updated,
                'rows_total', coalesce(j.rows_total, j.rows_estimate), 'skipped', j.skipped,
                'error', j.error, 'wait_reason', j.wait_reason)::pg_catalog.text
           FROM pgmigrate.jobs j WHERE j.job_id OPERATOR(pg_catalog.=) $1",
        &[id.into()],
    )
    .or_bug("reading a job for its coordinator")
}

/// What one batch did, committed with the batch itself.
pub struct BatchDone {
    /// The key the batch began after (its history's lower bound).
    pub after_key: Option<Vec<String>>,
    pub cursor: Vec<String>,
    pub covered: i64,
    pub updated: i64,
    pub batch_size_used: i64,
    pub batch_ms: f64,
    pub wal_bytes: i64,
    pub retries: i32,
    pub rate: f64,
    pub rows_estimate: i64,
    pub ms_per_row: Option<f64>,
    pub next_batch_size: i64,
    /// A budget wait that follows the batch: why, and how long.
    pub wait: Option<(String, i64)>,
    /// Batches of history to keep for the job.
    pub keep: i64,
}

/// Advance the job past a batch, record the batch in its history and trim
/// the history to `keep` batches: one statement.
pub fn after_batch(id: i64, b: &BatchDone) {
    let (reason, wait_ms) = match &b.wait {
        Some((r, ms)) => (Some(r.as_str()), *ms),
        None => (None, 0),
    };
    Spi::connect_mut(|client| {
        client
            .update(
                "WITH before AS (
                     SELECT throttled_batch_ms FROM pgmigrate.jobs WHERE job_id = $1
                 ), job AS (
                     UPDATE pgmigrate.jobs
                        SET cursor = $2, rows_done = rows_done + $3, rows_updated = rows_updated + $4,
                            batches = batches + 1, last_batch_ms = $5, rate = $6, rows_estimate = $7,
                            ms_per_row = $8, batch_size = $9, retries = 0,
                            state = CASE WHEN $10::text IS NULL THEN 'running' ELSE 'waiting' END,
                            wait_reason = $10, wait_until = NULL,
                            throttled_ms = throttled_ms + $11, throttled_batch_ms = $11,
                            error = NULL, error_sqlstate = NULL, error_detail = NULL,
                            updated_at = pg_catalog.clock_timestamp()
                      WHERE job_id = $1
                  RETURNING batches
                 ), recorded AS (
                     INSERT INTO pgmigrate.batches (job_id, batch_no, after_key, last_key, rows_covered, rows_updated,
                                                    batch_size, ms, wal_bytes, retries, throttled_ms)
                     SELECT $1, job.batches, $12, $2, $3, $4, $13, $5, $14, $15, before.throttled_batch_ms
                       FROM job, before
                      WHERE $16 > 0
                 )
                 DELETE FROM pgmigrate.batches b
                  USING job
                  WHERE b.job_id = $1 AND b.batch_no <= job.batches - $16",
                None,
                &[
                    id.into(),
                    b.cursor.clone().into(),
                    b.covered.into(),
                    b.updated.into(),
                    b.batch_ms.into(),
                    b.rate.into(),
                    b.rows_estimate.into(),
                    b.ms_per_row.into(),
                    (b.next_batch_size.min(i32::MAX as i64) as i32).into(),
                    reason.into(),
                    wait_ms.into(),
                    b.after_key.clone().into(),
                    (b.batch_size_used.min(i32::MAX as i64) as i32).into(),
                    b.wal_bytes.into(),
                    b.retries.into(),
                    b.keep.into(),
                ],
            )
            .or_bug("advancing a job");
    });
}

/// The job waits for a throttle; its driver keeps it.
pub fn throttled(id: i64, reason: &str, ms: i64) {
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE pgmigrate.jobs
                    SET state = 'waiting', wait_reason = $2, wait_until = NULL,
                        throttled_ms = throttled_ms + $3, throttled_batch_ms = throttled_batch_ms + $3,
                        updated_at = pg_catalog.clock_timestamp()
                  WHERE job_id = $1",
                None,
                &[id.into(), reason.into(), ms.into()],
            )
            .or_bug("recording a throttle");
    });
}

/// The job waits until `until` (its window opens): its driver lets go, and
/// a worker takes it up again then.
pub fn release_until(id: i64, reason: &str, until: TimestampWithTimeZone) {
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE pgmigrate.jobs
                    SET state = 'waiting', wait_reason = $2, wait_until = $3,
                        driver_pid = NULL, driver_started = NULL, driver_kind = NULL,
                        updated_at = pg_catalog.clock_timestamp()
                  WHERE job_id = $1",
                None,
                &[id.into(), reason.into(), until.into()],
            )
            .or_bug("scheduling a job");
    });
}

/// A row failed and the job skips it: record it, and move the cursor past
/// it (with the rows of the batch before it, done in the same transaction).
pub fn record_skip(id: i64, key: &[String], e: &crate::sys::Caught, covered: i64, updated: i64) {
    Spi::connect_mut(|client| {
        client
            .update(
                "INSERT INTO pgmigrate.skipped (job_id, key, sqlstate, error, detail)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                None,
                &[
                    id.into(),
                    key.to_vec().into(),
                    e.sqlstate.as_str().into(),
                    e.message.as_str().into(),
                    e.detail.clone().into(),
                ],
            )
            .or_bug("recording a skipped row");
        client
            .update(
                "UPDATE pgmigrate.jobs
                    SET cursor = $2, rows_done = rows_done + $3, rows_updated = rows_updated + $4,
                        skipped = skipped + 1, retries = 0, state = 'running', wait_reason = NULL,
                        updated_at = pg_catalog.clock_timestamp()
                  WHERE job_id = $1",
                None,
                &[
                    id.into(),
                    key.to_vec().into(),
                    covered.into(),
                    updated.into(),
                ],
            )
            .or_bug("skipping a row");
    });
}

/// Note a retry: the job waits (its driver keeps it) until `backoff_ms`.
pub fn retry_later(
    id: i64,
    retries: i32,
    reason: &str,
    error: &crate::sys::Caught,
    backoff_ms: i64,
    batch_size: i64,
) {
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE pgmigrate.jobs
                    SET state = 'waiting', retries = $2, wait_reason = $3,
                        wait_until = pg_catalog.clock_timestamp() + $4 * interval '1 millisecond',
                        error = $5, error_sqlstate = $6, error_detail = $7, batch_size = $8,
                        updated_at = pg_catalog.clock_timestamp()
                  WHERE job_id = $1",
                None,
                &[
                    id.into(),
                    retries.into(),
                    reason.into(),
                    backoff_ms.into(),
                    error.message.as_str().into(),
                    error.sqlstate.as_str().into(),
                    error.detail.clone().into(),
                    (batch_size.min(i32::MAX as i64) as i32).into(),
                ],
            )
            .or_bug("scheduling a retry");
    });
}

/// A job made of steps went one step further: its cursor names the next
/// step, and what it does now shows as its phase.  Committed with the step
/// it records, so no step is done twice.
pub fn advance(id: i64, cursor: &[String], phase: Option<&str>) {
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE pgmigrate.jobs
                    SET cursor = $2, phase = $3, state = 'running', retries = 0,
                        wait_reason = NULL, wait_until = NULL, batches = batches + 1,
                        updated_at = pg_catalog.clock_timestamp()
                  WHERE job_id = $1",
                None,
                &[id.into(), cursor.to_vec().into(), phase.into()],
            )
            .or_bug("recording a step");
    });
}

/// Put a job made of steps back to step `cursor` (its next run starts there).
pub fn set_cursor(id: i64, cursor: &[String]) {
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE pgmigrate.jobs SET cursor = $2, updated_at = pg_catalog.clock_timestamp() WHERE job_id = $1",
                None,
                &[id.into(), cursor.to_vec().into()],
            )
            .or_bug("recording a step");
    });
}

/// Replace a job's spec (a type change turned round by migrate_rollback).
pub fn set_spec(id: i64, spec: serde_json::Value) {
    super::write(
        "UPDATE pgmigrate.jobs SET spec = $2, updated_at = pg_catalog.clock_timestamp() WHERE job_id = $1",
        &[id.into(), JsonB(spec).into()],
        "changing a job's spec",
    );
}

/// End the job (succeeded, failed or cancelled) and let go of it.
pub fn finish(id: i64, state: JobState, error: Option<(&str, &str, Option<&str>)>) {
    let (message, sqlstate, detail) = match error {
        Some((m, s, d)) => (Some(m), Some(s), d),
        None => (None, None, None),
    };
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE pgmigrate.jobs
                    SET state = $2, error = $3, error_sqlstate = $4, error_detail = $5,
                        wait_reason = NULL, wait_until = NULL, driver_pid = NULL, driver_started = NULL,
                        driver_kind = NULL, phase = NULL,
                        rows_total = CASE WHEN $2 = 'succeeded' THEN rows_done ELSE rows_total END,
                        finished_at = pg_catalog.clock_timestamp(), updated_at = pg_catalog.clock_timestamp()
                  WHERE job_id = $1",
                None,
                &[id.into(), state.as_str().into(), message.into(), sqlstate.into(), detail.into()],
            )
            .or_bug("finishing a job");
    });
}

/// A control request: new state, and let go of the driver unless running
/// continues (or `keep_driver`: a worker in an index build lets go itself
/// once it has cleaned up).  Retrying clears the error and counters of the
/// failed batch.
pub fn set_state(id: i64, state: JobState, reason: Option<&str>, keep_driver: bool) {
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE pgmigrate.jobs
                    SET state = $2, wait_reason = $3, wait_until = NULL,
                        retries = CASE WHEN $2 = 'queued' THEN 0 ELSE retries END,
                        error = CASE WHEN $2 = 'queued' THEN NULL ELSE error END,
                        error_sqlstate = CASE WHEN $2 = 'queued' THEN NULL ELSE error_sqlstate END,
                        error_detail = CASE WHEN $2 = 'queued' THEN NULL ELSE error_detail END,
                        finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'cancelled')
                                           THEN pg_catalog.clock_timestamp() END,
                        driver_pid = CASE WHEN $2 = 'running' OR $4 THEN driver_pid END,
                        driver_started = CASE WHEN $2 = 'running' OR $4 THEN driver_started END,
                        driver_kind = CASE WHEN $2 = 'running' OR $4 THEN driver_kind END,
                        updated_at = pg_catalog.clock_timestamp()
                  WHERE job_id = $1",
                None,
                &[
                    id.into(),
                    state.as_str().into(),
                    reason.into(),
                    keep_driver.into(),
                ],
            )
            .or_bug("changing a job's state");
    });
}

/// Link a new history run to the job (migrate_retry of a linked job).
pub fn set_migration_run(id: i64, run: i64) {
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE pgmigrate.jobs SET migration_run = $2 WHERE job_id = $1",
                None,
                &[id.into(), run.into()],
            )
            .or_bug("linking a migration run");
    });
}

/// Facts about a job's table that a step needs.
pub struct Table {
    pub schema: String,
    pub name: String,
    pub pages: i64,
    /// A partitioned table (its rows are in its partitions).
    pub partitioned: bool,
}

/// The table's current schema and name, or None when it was dropped.
pub fn table(relid: pg_sys::Oid) -> Option<Table> {
    Spi::connect(|client| {
        let rows = client
            .select(
                "SELECT n.nspname::text, c.relname::text,
                        (pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::int)::bigint,
                        c.relkind = 'p'
                   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = $1",
                None,
                &[relid.into()],
            )
            .or_bug("reading a table");
        rows.into_iter().next().map(|r| Table {
            schema: r.get(1).or_bug("reading a table").unwrap_or_default(),
            name: r.get(2).or_bug("reading a table").unwrap_or_default(),
            pages: r.get(3).or_bug("reading a table").unwrap_or(0),
            partitioned: r.get(4).or_bug("reading a table").unwrap_or(false),
        })
    })
}

/// The planner's row count for a table (summed over partitions); for a
/// table never analyzed, a guess from its size.
pub fn row_estimate(relid: pg_sys::Oid) -> i64 {
    Spi::connect(|client| {
        client
            .select(
                "SELECT coalesce(sum(CASE WHEN c.reltuples >= 0 THEN c.reltuples
                                          ELSE (pg_catalog.pg_relation_size(c.oid) / 8192) * 60 END), 0)::bigint
                   FROM pg_catalog.pg_class c
                  WHERE c.relkind = 'r'
                    -- pg_partition_tree() lists nothing for a table that is not partitioned
                    AND (c.oid = $1 OR c.oid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree($1) t))",
                None,
                &[relid.into()],
            )?
            .first()
            .get_one::<i64>()
    })
    .or_bug("estimating rows")
    .unwrap_or(0)
}

/// A slice of a parallel or partitioned backfill, as its job's first step
/// queues it: a backfill job of its own, with its own cursor.
pub struct NewSlice<'a> {
    pub parent: &'a Job,
    pub relid: pg_sys::Oid,
    pub relation: &'a str,
    pub spec: serde_json::Value,
    pub command: &'a str,
    /// What part of the job it does, in words.
    pub slice: &'a str,
    /// Where its walk starts (after this key or at this block); None: at
    /// the start.
    pub cursor: Option<Vec<String>>,
    pub lower: Option<Vec<String>>,
    /// None: its first step fixes its range (a partition).
    pub upper: Option<Vec<String>>,
    pub estimate: i64,
    pub batch_size: i32,
}

pub fn insert_slice(s: &NewSlice<'_>) -> i64 {
    Spi::connect_mut(|client| {
        client
            .update(
                "INSERT INTO pgmigrate.jobs (kind, relid, relation, owner, spec, command, batch_size, parent_id, slice,
                                             cursor, lower_bound, upper_bound, rows_estimate)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 RETURNING job_id",
                None,
                &[
                    s.parent.kind.as_str().into(),
                    s.relid.into(),
                    s.relation.into(),
                    s.parent.owner.into(),
                    JsonB(s.spec.clone()).into(),
                    s.command.into(),
                    s.batch_size.into(),
                    s.parent.id.into(),
                    s.slice.into(),
                    s.cursor.clone().into(),
                    s.lower.clone().into(),
                    s.upper.clone().into(),
                    s.estimate.into(),
                ],
            )
            .or_bug("queueing a slice")
            .first()
            .get_one::<i64>()
            .or_bug("queueing a slice")
            .expect("INSERT ... RETURNING returns the id")
    })
}

/// A slice as its job sees it.
#[derive(Debug, Clone)]
pub struct Slice {
    pub id: i64,
    pub state: JobState,
    pub rows_done: i64,
    pub rows_updated: i64,
    pub rows_estimate: i64,
    pub batches: i32,
    pub skipped: i64,
}

/// The slices of job `parent`, in the order they were queued.
pub fn slices(parent: i64) -> Vec<Slice> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT s.job_id, s.state, s.rows_done, s.rows_updated,
                        coalesce(s.rows_total, s.rows_estimate, 0), s.batches, s.skipped
                   FROM pgmigrate.jobs s WHERE s.parent_id = $1 ORDER BY s.job_id",
                None,
                &[parent.into()],
            )
            .or_bug("reading slices")
            .map(|r| {
                let state: String = r.get(2).or_bug("reading slices").unwrap_or_default();
                Slice {
                    id: r.get(1).or_bug("reading slices").unwrap_or(0),
                    state: JobState::parse(&state)
                        .expect("jobs_state_check allows only known states"),
                    rows_done: r.get(3).or_bug("reading slices").unwrap_or(0),
                    rows_updated: r.get(4).or_bug("reading slices").unwrap_or(0),
                    rows_estimate: r.get(5).or_bug("reading slices").unwrap_or(0),
                    batches: r.get(6).or_bug("reading slices").unwrap_or(0),
                    skipped: r.get(7).or_bug("reading slices").unwrap_or(0),
                }
            })
            .collect()
    })
}

/// How many slices of job `parent` live backends drive now.
pub fn slices_running(parent: i64) -> i64 {
    unsafe { pg_sys::pgstat_clear_snapshot() };
    let sql =
        format!("SELECT count(*) FROM pgmigrate.jobs j WHERE j.parent_id = $1 AND NOT {FREE}");
    Spi::connect(|client| {
        client
            .select(&sql, None, &[parent.into()])?
            .first()
            .get_one::<i64>()
    })
    .or_bug("counting running slices")
    .unwrap_or(0)
}

/// Lock job `id`'s row for this transaction if no one else holds it.
pub fn try_lock(id: i64) -> bool {
    Spi::connect(|client| {
        client
            .select(
                "SELECT 1 FROM pgmigrate.jobs j WHERE j.job_id = $1 FOR NO KEY UPDATE SKIP LOCKED",
                None,
                &[id.into()],
            )
            .map(|r| !r.is_empty())
    })
    .or_bug("locking a job")
}

/// A job's counters as another server reports them (a slice that follows
/// its shard's job on a Citus node), with what it waits for.
pub fn mirror(id: i64, rows_done: i64, rows_updated: i64, estimate: i64, reason: Option<&str>) {
    super::write(
        "UPDATE pgmigrate.jobs
            SET rows_done = $2, rows_updated = $3, rows_estimate = $4, state = 'running',
                wait_reason = $5, updated_at = pg_catalog.clock_timestamp()
          WHERE job_id = $1",
        &[
            id.into(),
            rows_done.into(),
            rows_updated.into(),
            estimate.into(),
            reason.into(),
        ],
        "recording a shard's progress",
    );
}

/// A job's counters, summed over its slices when they are done.
pub fn set_totals(id: i64, rows_done: i64, rows_updated: i64, batches: i32, skipped: i64) {
    super::write(
        "UPDATE pgmigrate.jobs
            SET rows_done = $2, rows_updated = $3, batches = $4, skipped = $5, rows_estimate = $2,
                updated_at = pg_catalog.clock_timestamp()
          WHERE job_id = $1",
        &[
            id.into(),
            rows_done.into(),
            rows_updated.into(),
            batches.into(),
            skipped.into(),
        ],
        "recording a job's totals",
    );
}
