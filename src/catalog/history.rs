//! Reading and appending the history log, `pgmigrate.events`.
//!
//! Callers wrap these in `as_owner`.  Every statement is fully qualified and
//! takes its values as parameters.

use super::SpiOrBug;
use crate::engine::history::{self as rules, Current, Outcome, PreviousChecksum, RunState, Status};
use crate::error::{MigrateError, Result};
use crate::sys;
use pgrx::datum::{Interval, JsonB};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use std::cell::RefCell;

const CURRENT_SQL: &str = "\
SELECT e.status, e.seq, e.run_id,
       pg_catalog.to_char(e.at, 'YYYY-MM-DD HH24:MI:SSOF'),
       e.role_name::text, e.pid,
       CASE WHEN e.status = 'running' THEN EXISTS (
            SELECT 1 FROM pg_catalog.pg_stat_get_activity(e.pid) a
             WHERE a.backend_start <= e.at)
       ELSE false END,
       e.error, e.reason
  FROM pgmigrate.events e
 WHERE e.app = $1 AND e.name = $2
 ORDER BY e.seq DESC
 LIMIT 1";

thread_local! {
    /// The startup check runs on every application boot: keep its plan.
    static CURRENT_PLAN: RefCell<Option<OwnedPreparedStatement>> = const { RefCell::new(None) };
}

fn current_with(client: &SpiClient<'_>, app: &str, name: &str) -> Option<Current> {
    CURRENT_PLAN.with_borrow_mut(|slot| {
        if slot.is_none() {
            let plan = client
                .prepare(
                    CURRENT_SQL,
                    &[pg_sys::TEXTOID.into(), pg_sys::TEXTOID.into()],
                )
                .or_bug("preparing the history lookup");
            *slot = Some(plan.keep());
        }
        let plan = slot.as_ref().expect("prepared above");
        let rows = client
            .select(plan, Some(1), &[app.into(), name.into()])
            .or_bug("reading history");
        if rows.is_empty() {
            return None;
        }
        let row = rows.first();
        let status: String = row.get(1).or_bug("reading history").unwrap_or_default();
        Some(Current {
            status: Status::parse(&status).expect("events_status_check allows only known statuses"),
            seq: row.get(2).or_bug("reading history").unwrap_or(0),
            run_id: row.get(3).or_bug("reading history").unwrap_or(0),
            at: row.get(4).or_bug("reading history").unwrap_or_default(),
            role: row.get(5).or_bug("reading history").unwrap_or_default(),
            pid: row.get(6).or_bug("reading history").unwrap_or(0),
            backend_alive: row.get(7).or_bug("reading history").unwrap_or(false),
            error: row.get(8).or_bug("reading history"),
            reason: row.get(9).or_bug("reading history"),
        })
    })
}

/// The latest event of `app.name`, or `None` when it was never recorded.
/// Read-only: works on a hot standby and assigns no transaction id.
pub fn current(app: &str, name: &str) -> Option<Current> {
    Spi::connect(|client| current_with(client, app, name))
}

/// The checksum of the most recent run that had one.
pub fn previous_checksum(app: &str, name: &str) -> Option<PreviousChecksum> {
    Spi::connect(|client| {
        let rows = client
            .select(
                "SELECT e.checksum, e.run_id FROM pgmigrate.events e
                  WHERE e.app = $1 AND e.name = $2 AND e.checksum IS NOT NULL
                  ORDER BY e.seq DESC LIMIT 1",
                None,
                &[app.into(), name.into()],
            )
            .or_bug("reading checksums");
        if rows.is_empty() {
            return None;
        }
        let row = rows.first();
        Some(PreviousChecksum {
            checksum: row.get(1).or_bug("reading checksums").unwrap_or_default(),
            run_id: row.get(2).or_bug("reading checksums").unwrap_or(0),
        })
    })
}

/// The latest event of run `run_id`.
pub fn run_state(run_id: i64) -> Option<RunState> {
    Spi::connect(|client| {
        let rows = client
            .select(
                "SELECT e.app, e.name, e.status, pg_catalog.to_char(e.at, 'YYYY-MM-DD HH24:MI:SSOF'), e.seq
                   FROM pgmigrate.events e
                  WHERE e.run_id = $1
                  ORDER BY e.seq DESC LIMIT 1",
                None,
                &[run_id.into()],
            )
            .or_bug("reading a run");
        if rows.is_empty() {
            return None;
        }
        let row = rows.first();
        let status: String = row.get(3).or_bug("reading a run").unwrap_or_default();
        Some(RunState {
            app: row.get(1).or_bug("reading a run").unwrap_or_default(),
            name: row.get(2).or_bug("reading a run").unwrap_or_default(),
            status: Status::parse(&status).expect("known status"),
            at: row.get(4).or_bug("reading a run").unwrap_or_default(),
            seq: row.get(5).or_bug("reading a run").unwrap_or(0),
        })
    })
}

/// Serialise changes to `app.name` for the rest of the transaction.  When
/// another transaction holds it, try again for a moment (a session that has
/// just failed releases its locks only after the client has seen its error),
/// then fail, naming the holder.
pub fn lock(app: &str, name: &str) -> Result<()> {
    const TRIES: u32 = 25;
    const PAUSE_US: i64 = 10_000;
    let lock = sys::PrivateLock::Migration(sys::migration_key(&format!("{app}\u{1f}{name}")));
    let (objid, subid) = lock.objid_and_subid();
    for attempt in 1..=TRIES {
        if sys::take_private_lock(lock, false) {
            return Ok(());
        }
        if attempt < TRIES {
            unsafe { pg_sys::pg_usleep(PAUSE_US as _) };
            pg_sys::check_for_interrupts!();
        }
    }
    let holder: Option<i32> = Spi::connect(|client| {
        client
            .select(
                "SELECT l.pid FROM pg_catalog.pg_locks l
                  WHERE l.locktype OPERATOR(pg_catalog.=) 'object' AND l.granted
                    AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                     WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
                    AND l.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass::pg_catalog.oid
                    AND l.objid OPERATOR(pg_catalog.=) $1::pg_catalog.int8::pg_catalog.oid
                    AND l.objsubid OPERATOR(pg_catalog.=) $2
                  LIMIT 1",
                None,
                &[(objid as i64).into(), (subid as i32).into()],
            )
            .or_bug("finding a lock holder")
            .first()
            .get_one()
            .unwrap_or(None)
    });
    Err(MigrateError::Busy {
        app: app.to_string(),
        name: name.to_string(),
        pid: holder,
    })
}

/// One event to append.
pub struct NewEvent<'a> {
    /// `None` opens a new run whose id is the new event's id.
    pub run_id: Option<i64>,
    pub app: &'a str,
    pub name: &'a str,
    pub seq: i32,
    pub event: &'static str,
    pub status: Status,
    pub checksum: Option<&'a str>,
    pub description: Option<&'a str>,
    pub error: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub forced: bool,
    pub role: &'a str,
    /// For recorded runs: how long the run took, to derive started_at.
    pub duration: Option<Interval>,
}

/// Append an event; returns its run id.  When another session appended
/// the same seq first, the migration changed under us: report that.
pub fn append(e: &NewEvent<'_>) -> Result<i64> {
    let run: Option<i64> = Spi::connect_mut(|client| {
        let rows = client
            .update(
                "WITH id AS (SELECT pg_catalog.nextval('pgmigrate.event_id_seq') AS v,
                                    pg_catalog.clock_timestamp() AS now)
                 INSERT INTO pgmigrate.events AS e
                        (event_id, run_id, app, name, seq, event, status, checksum, description,
                         error, reason, forced, role_name, role_oid, at, started_at)
                 SELECT id.v, coalesce($1, id.v), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                        pg_catalog.to_regrole(pg_catalog.quote_ident($12))::pg_catalog.oid,
                        id.now, id.now OPERATOR(pg_catalog.-) $13::pg_catalog.interval
                   FROM id
                 ON CONFLICT ON CONSTRAINT events_app_name_seq_key DO NOTHING
                 RETURNING e.run_id",
                None,
                &[
                    e.run_id.into(),
                    e.app.into(),
                    e.name.into(),
                    e.seq.into(),
                    e.event.into(),
                    e.status.as_str().into(),
                    e.checksum.into(),
                    e.description.into(),
                    e.error.into(),
                    e.reason.into(),
                    e.forced.into(),
                    e.role.into(),
                    e.duration.into(),
                ],
            )
            .or_bug("appending to the history");
        if rows.is_empty() {
            None
        } else {
            rows.first()
                .get_one::<i64>()
                .or_bug("appending to the history")
        }
    });
    run.ok_or_else(|| MigrateError::ConcurrentChange {
        app: e.app.to_string(),
        name: e.name.to_string(),
    })
}

/// Import already-applied migrations given as a JSON array of
/// `{"app", "name", "applied"}` objects; those already known are skipped.
/// Returns how many were imported.
pub fn import(rows: JsonB, role: &str, source: &str) -> i64 {
    Spi::connect_mut(|client| {
        client
            .update(
                "WITH src AS (
                     SELECT s.app, s.name, coalesce(s.applied, pg_catalog.clock_timestamp()) AS applied, s.ord
                       FROM ROWS FROM (pg_catalog.jsonb_to_recordset($1)
                                       AS (app text, name text, applied timestamptz))
                            WITH ORDINALITY AS s(app, name, applied, ord)
                      WHERE NOT EXISTS (SELECT 1 FROM pgmigrate.events e
                                         WHERE e.app = s.app AND e.name = s.name)),
                 ids AS (
                     SELECT src.*, pg_catalog.nextval('pgmigrate.event_id_seq') AS id
                       FROM (SELECT * FROM src ORDER BY src.ord) src)
                 INSERT INTO pgmigrate.events AS e
                        (event_id, run_id, app, name, seq, event, status, at, role_name, role_oid, details)
                 SELECT ids.id, ids.id, ids.app, ids.name, 1, 'imported', 'applied', ids.applied, $2,
                        pg_catalog.to_regrole(pg_catalog.quote_ident($2))::pg_catalog.oid,
                        pg_catalog.jsonb_build_object('source', $3::text)
                   FROM ids
                 ON CONFLICT ON CONSTRAINT events_app_name_seq_key DO NOTHING
                 RETURNING 1",
                None,
                &[rows.into(), role.into(), source.into()],
            )
            .or_bug("importing history")
            .len() as i64
    })
}

/// A run to open: a 'started' run (migrate_start) or a one-event
/// 'recorded' run (migrate_record).
pub struct RunRequest<'a> {
    pub app: &'a str,
    pub name: &'a str,
    pub checksum: Option<&'a str>,
    pub description: Option<&'a str>,
    pub force: bool,
    pub event: &'static str,
    pub status: Status,
    /// For recorded runs: how long the run took.
    pub duration: Option<Interval>,
    /// The role the run is recorded for.
    pub role: &'a str,
}

impl<'a> RunRequest<'a> {
    /// A run that opens now and a job (or a later call) finishes.
    pub fn started(app: &'a str, name: &'a str, description: &'a str, role: &'a str) -> Self {
        RunRequest {
            app,
            name,
            checksum: None,
            description: Some(description),
            force: false,
            event: "started",
            status: Status::Running,
            duration: None,
            role,
        }
    }
}

/// Open a run after checking the rules; returns its id.  Call as the owner.
pub fn start_run(r: &RunRequest<'_>) -> Result<i64> {
    let (app, name) = (r.app, r.name);
    lock(app, name)?;
    let current = current(app, name);
    let previous = previous_checksum(app, name);
    let seq = rules::check_new_run(
        app,
        name,
        current.as_ref(),
        previous.as_ref(),
        r.checksum,
        r.force,
    )?;
    // Was force what let this run begin?  Kept in the log for the audit.
    let forced = r.force
        && rules::check_new_run(
            app,
            name,
            current.as_ref(),
            previous.as_ref(),
            r.checksum,
            false,
        )
        .is_err();
    append(&NewEvent {
        run_id: None,
        app,
        name,
        seq,
        event: r.event,
        status: r.status,
        checksum: r.checksum,
        description: r.description,
        error: None,
        reason: None,
        forced,
        role: r.role,
        duration: r.duration,
    })
}

/// Close run `run_id` as applied or failed.  Call as the owner.
pub fn finish_run(run_id: i64, outcome: Outcome, error: Option<&str>, role: &str) -> Result<()> {
    let run = run_state(run_id);
    if let Some(r) = &run {
        lock(&r.app, &r.name)?;
    }
    // Read again under the lock: another session may just have finished it.
    let run = run.and_then(|_| run_state(run_id));
    let current = run.as_ref().and_then(|r| current(&r.app, &r.name));
    let seq = rules::check_finish(run_id, run.as_ref(), current.as_ref())?;
    let run = run.expect("check_finish accepts only a known run");
    append(&NewEvent {
        run_id: Some(run_id),
        app: &run.app,
        name: &run.name,
        seq,
        event: outcome.status().as_str(),
        status: outcome.status(),
        checksum: None,
        description: None,
        error,
        reason: None,
        forced: false,
        role,
        duration: None,
    })
    .map(|_| ())
}
