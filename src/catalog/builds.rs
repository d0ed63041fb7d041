//! Index jobs in the catalog: their attempts (`pgmigrate.builds`), their
//! state changes, and what the system catalogs say about their indexes.
//! Callers wrap these in `as_owner`.

use super::{write, SpiOrBug};
use crate::engine::index::BuildProgress;
use crate::sys::Caught;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// Attempts this job made before, and whether one of them never ended (its
/// worker stopped mid-statement).
pub fn earlier_attempts(job_id: i64) -> (i32, bool) {
    Spi::connect(|c| {
        let row = c
            .select(
                "SELECT count(*)::int, coalesce(bool_or(outcome IN ('running', 'interrupted')), false)
                   FROM pgmigrate.builds WHERE job_id = $1",
                None,
                &[job_id.into()],
            )?
            .first();
        Ok::<_, pgrx::spi::SpiError>((
            row.get::<i32>(1)?.unwrap_or(0),
            row.get::<bool>(2)?.unwrap_or(false),
        ))
    })
    .or_bug("reading a job's attempts")
}

/// Open attempt n + 1: an attempt left `running` by a worker that stopped
/// is marked `interrupted` first.  The job shows `phase`.
pub fn start_attempt(job_id: i64, statement: &str, phase: &str) -> i32 {
    Spi::connect_mut(|c| {
        c.update(
            "UPDATE pgmigrate.builds SET outcome = 'interrupted'
              WHERE job_id = $1 AND outcome = 'running'",
            None,
            &[job_id.into()],
        )?;
        c.update(
            "UPDATE pgmigrate.jobs SET phase = $2, wait_reason = NULL, updated_at = pg_catalog.clock_timestamp()
              WHERE job_id = $1",
            None,
            &[job_id.into(), phase.into()],
        )?;
        c.update(
            "INSERT INTO pgmigrate.builds (job_id, attempt, statement)
             SELECT $1, coalesce(max(attempt), 0) + 1, $2 FROM pgmigrate.builds WHERE job_id = $1
             RETURNING attempt",
            None,
            &[job_id.into(), statement.into()],
        )?
        .first()
        .get_one::<i32>()
    })
    .or_bug("recording an attempt")
    .unwrap_or(0)
}

/// How an attempt ended.
pub struct AttemptEnd<'a> {
    pub outcome: &'a str,
    pub index_size: Option<i64>,
    pub waited_for: Option<&'a str>,
    pub error: Option<&'a Caught>,
    pub note: Option<&'a str>,
}

pub fn end_attempt(job_id: i64, attempt: i32, end: &AttemptEnd<'_>) {
    Spi::connect_mut(|c| {
        c.update(
            "UPDATE pgmigrate.builds
                SET outcome = $3, finished_at = pg_catalog.clock_timestamp(), index_size = $4,
                    waited_for = $5, error = $6, sqlstate = $7, detail = $8,
                    note = CASE WHEN $9::text IS NULL THEN note
                                WHEN note IS NULL THEN $9
                                ELSE note || '; ' || $9 END
              WHERE job_id = $1 AND attempt = $2",
            None,
            &[
                job_id.into(),
                attempt.into(),
                end.outcome.into(),
                end.index_size.into(),
                end.waited_for.into(),
                end.error.map(|e| e.message.as_str()).into(),
                end.error.map(|e| e.sqlstate.as_str()).into(),
                end.error.and_then(|e| e.detail.as_deref()).into(),
                end.note.into(),
            ],
        )
        .map(|_| ())
    })
    .or_bug("recording how an attempt ended");
}

/// Add to an attempt's note (what was dropped before it ran).
pub fn note_attempt(job_id: i64, attempt: i32, note: &str) {
    write(
        "UPDATE pgmigrate.builds
                SET note = CASE WHEN note IS NULL THEN $3 ELSE note || '; ' || $3 END
              WHERE job_id = $1 AND attempt = $2",
        &[job_id.into(), attempt.into(), note.into()],
        "noting an attempt",
    );
}

/// What the worker does now (shown as the job's phase).
pub fn set_phase(job_id: i64, phase: Option<&str>) {
    write(
        "UPDATE pgmigrate.jobs SET phase = $2, updated_at = pg_catalog.clock_timestamp() WHERE job_id = $1",
        &[job_id.into(), phase.into()],
        "recording a job's phase",
    );
}

/// The worker lets go of the job, leaving its state as it is (a pause or
/// cancel set it while the statement ran).
pub fn release(job_id: i64) {
    write(
        "UPDATE pgmigrate.jobs
                SET driver_pid = NULL, driver_started = NULL, driver_kind = NULL, phase = NULL,
                    updated_at = pg_catalog.clock_timestamp()
              WHERE job_id = $1",
        &[job_id.into()],
        "letting go of a job",
    );
}

/// A transient failure: try again in `backoff_ms`, with the error on show.
pub fn retry_later(job_id: i64, retries: i32, reason: &str, e: &Caught, backoff_ms: i64) {
    Spi::connect_mut(|c| {
        c.update(
            "UPDATE pgmigrate.jobs
                SET state = 'waiting', retries = $2, wait_reason = $3,
                    wait_until = pg_catalog.clock_timestamp() + $4 * interval '1 millisecond',
                    error = $5, error_sqlstate = $6, error_detail = $7,
                    driver_pid = NULL, driver_started = NULL, driver_kind = NULL, phase = NULL,
                    updated_at = pg_catalog.clock_timestamp()
              WHERE job_id = $1",
            None,
            &[
                job_id.into(),
                retries.into(),
                reason.into(),
                backoff_ms.into(),
                e.message.as_str().into(),
                e.sqlstate.as_str().into(),
                e.detail.clone().into(),
            ],
        )
        .map(|_| ())
    })
    .or_bug("scheduling a retry");
}

/// A recurring job ran: queue it for its next time.
pub fn requeue(job_id: i64, run_at: TimestampWithTimeZone) {
    write(
        "UPDATE pgmigrate.jobs
                SET state = 'queued', run_at = $2, retries = 0, wait_reason = NULL, wait_until = NULL,
                    error = NULL, error_sqlstate = NULL, error_detail = NULL,
                    driver_pid = NULL, driver_started = NULL, driver_kind = NULL, phase = NULL,
                    updated_at = pg_catalog.clock_timestamp()
              WHERE job_id = $1",
        &[job_id.into(), run_at.into()],
        "queueing a job again",
    );
}

/// The index a job built, dropped or rebuilt.
pub fn set_index_oid(job_id: i64, index: pg_sys::Oid) {
    write(
        "UPDATE pgmigrate.jobs SET index_oid = $2 WHERE job_id = $1",
        &[job_id.into(), index.into()],
        "recording a job's index",
    );
}

/// CALL migrate_run of an index job: its next run is now, whatever its
/// run_at and window; a paused or waiting job is queued.
pub fn run_now(job_id: i64) {
    write(
        "UPDATE pgmigrate.jobs
                SET spec = spec || '{\"run_now\": true}', run_at = least(run_at, pg_catalog.clock_timestamp()),
                    wait_until = NULL,
                    state = CASE WHEN state IN ('paused', 'waiting') THEN 'queued' ELSE state END,
                    wait_reason = CASE WHEN state IN ('paused', 'waiting') THEN NULL ELSE wait_reason END,
                    updated_at = pg_catalog.clock_timestamp()
              WHERE job_id = $1",
        &[job_id.into()],
        "running a job now",
    );
}

/// The run_now flag was used.
pub fn clear_run_now(job_id: i64) {
    write(
        "UPDATE pgmigrate.jobs SET spec = spec - 'run_now' WHERE job_id = $1",
        &[job_id.into()],
        "clearing run_now",
    );
}

/// An index as the catalogs see it now.
#[derive(Debug, Clone)]
pub struct IndexNow {
    pub oid: pg_sys::Oid,
    pub schema: String,
    pub name: String,
    pub table: pg_sys::Oid,
    pub valid: bool,
    pub size: i64,
}

const INDEX_COLUMNS: &str = "c.oid, n.nspname::text, c.relname::text, i.indrelid, i.indisvalid,
        pg_catalog.pg_relation_size(c.oid)";

fn index_rows(sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> Vec<IndexNow> {
    Spi::connect(|c| {
        let rows = c.select(sql, None, args)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(IndexNow {
                oid: r.get(1)?.unwrap_or(pg_sys::Oid::INVALID),
                schema: r.get(2)?.unwrap_or_default(),
                name: r.get(3)?.unwrap_or_default(),
                table: r.get(4)?.unwrap_or(pg_sys::Oid::INVALID),
                valid: r.get(5)?.unwrap_or(false),
                size: r.get(6)?.unwrap_or(0),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .or_bug("reading indexes")
}

/// The index named `name` in `schema`, if there is one.
pub fn index_named(schema: &str, name: &str) -> Option<IndexNow> {
    index_rows(
        &format!(
            "SELECT {INDEX_COLUMNS}
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
              WHERE n.nspname = $1 AND c.relname = $2"
        ),
        &[schema.into(), name.into()],
    )
    .into_iter()
    .next()
}

/// The index with this oid, if it still exists.
pub fn index_by_oid(oid: pg_sys::Oid) -> Option<IndexNow> {
    index_rows(
        &format!(
            "SELECT {INDEX_COLUMNS}
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
              WHERE c.oid = $1"
        ),
        &[oid.into()],
    )
    .into_iter()
    .next()
}

/// Every index of a table.
pub fn indexes_of(table: pg_sys::Oid) -> Vec<IndexNow> {
    index_rows(
        &format!(
            "SELECT {INDEX_COLUMNS}
               FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE i.indrelid = $1
              ORDER BY c.oid"
        ),
        &[table.into()],
    )
}

/// Another backend that builds an index on the table now.
pub fn other_build_on(table: pg_sys::Oid) -> Option<i32> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT p.pid FROM pg_catalog.pg_stat_progress_create_index p
              WHERE p.relid = $1 AND p.pid <> pg_catalog.pg_backend_pid()
              LIMIT 1",
            None,
            &[table.into()],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.first().get_one::<i32>()
    })
    .or_bug("looking for other index builds")
}

/// A backend as a DBA wants it named in a message: pid, application, how
/// long its transaction has been open, what it does.
pub fn describe_backend(pid: i32) -> String {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT format('pid %s', a.pid)
                    || coalesce(format(', application %L', nullif(a.application_name, '')), '')
                    || coalesce(format(', %s', a.backend_type), '')
                    || coalesce(', transaction open ' || date_trunc('second', now() - a.xact_start)::text, '')
                    || coalesce(format(', %s', a.state), '')
               FROM pg_catalog.pg_stat_activity a WHERE a.pid = $1",
            None,
            &[pid.into()],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.first().get_one::<String>()
    })
    .or_bug("describing a backend")
    .unwrap_or_else(|| format!("pid {pid} (it has ended since)"))
}

/// Attempts of a job, and the size of the index its last successful
/// attempt left (pretty).
pub fn summary(job_id: i64) -> (i32, Option<String>) {
    Spi::connect(|c| {
        let row = c
            .select(
                "SELECT count(*)::int,
                        pg_catalog.pg_size_pretty((array_agg(index_size ORDER BY attempt DESC)
                                                   FILTER (WHERE outcome = 'succeeded'))[1])
                   FROM pgmigrate.builds WHERE job_id = $1",
                None,
                &[job_id.into()],
            )?
            .first();
        Ok::<_, pgrx::spi::SpiError>((row.get::<i32>(1)?.unwrap_or(0), row.get::<String>(2)?))
    })
    .or_bug("summing up a job's attempts")
}

/// What the build of a job's worker reports now.
pub fn progress(job_id: i64) -> BuildProgress {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT coalesce(p.phase, j.phase), p.blocks_done, p.blocks_total, p.tuples_done,
                    p.tuples_total, p.waiting_for
               FROM pgmigrate.jobs j
               LEFT JOIN LATERAL pgmigrate.build_progress(j.driver_pid, j.driver_started) p ON true
              WHERE j.job_id = $1",
            None,
            &[job_id.into()],
        )?;
        if rows.is_empty() {
            return Ok(BuildProgress::default());
        }
        let r = rows.first();
        Ok::<_, pgrx::spi::SpiError>(BuildProgress {
            phase: r.get(1)?,
            blocks_done: r.get(2)?,
            blocks_total: r.get(3)?,
            tuples_done: r.get(4)?,
            tuples_total: r.get(5)?,
            waiting_for: r.get(6)?,
        })
    })
    .or_bug("reading a build's progress")
}

/// A partition of a partitioned table whose index a job builds.
#[derive(Debug, Clone)]
pub struct PartNow {
    pub oid: pg_sys::Oid,
    pub schema: String,
    pub name: String,
    /// A table with rows (not itself partitioned).
    pub leaf: bool,
    /// The index of the job's index tree on the partition's parent, if
    /// that exists yet.
    pub parent_index: Option<pg_sys::Oid>,
    /// The partition has an index attached to the job's index tree.
    pub attached: bool,
}

/// Every partition of `table` at any depth, parents before their
/// partitions, and how each stands against the partitioned index `index`
/// (its tree: the index and the partitions' indexes attached to it).
pub fn partitions(table: pg_sys::Oid, index: pg_sys::Oid) -> Vec<PartNow> {
    Spi::connect(|c| {
        let rows = c.select(
            "WITH ix AS (
                 SELECT x.relid AS index, i.indrelid AS tab
                   FROM pg_catalog.pg_partition_tree($2) x
                   JOIN pg_catalog.pg_index i ON i.indexrelid OPERATOR(pg_catalog.=) x.relid)
             SELECT t.relid, n.nspname::text, c.relname::text, c.relkind OPERATOR(pg_catalog.<>) 'p',
                    (SELECT ix.index FROM ix WHERE ix.tab OPERATOR(pg_catalog.=) t.parentrelid LIMIT 1),
                    EXISTS (SELECT FROM ix WHERE ix.tab OPERATOR(pg_catalog.=) t.relid)
               FROM pg_catalog.pg_partition_tree($1) t
               JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.relid
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
              WHERE t.level OPERATOR(pg_catalog.>) 0
              ORDER BY t.level, n.nspname, c.relname",
            None,
            &[table.into(), index.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(PartNow {
                oid: r.get(1)?.unwrap_or(pg_sys::Oid::INVALID),
                schema: r.get(2)?.unwrap_or_default(),
                name: r.get(3)?.unwrap_or_default(),
                leaf: r.get(4)?.unwrap_or(true),
                parent_index: r.get(5)?,
                attached: r.get(6)?.unwrap_or(false),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .or_bug("reading the partitions of a table")
}

/// What a partition's index is made from: the partitioned index's
/// definition (`pg_get_indexdef`, under the worker's pinned search_path,
/// so every name outside pg_catalog is qualified), the head of it that
/// names the index and its table, whether it is unique, and its
/// tablespace, if not the default.
pub struct PartitionedIndex {
    pub definition: String,
    pub head: String,
    pub unique: bool,
    pub tablespace: Option<String>,
}

pub fn partitioned_index(index: pg_sys::Oid) -> Option<PartitionedIndex> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT pg_catalog.pg_get_indexdef(i.indexrelid),
                    pg_catalog.format('CREATE %sINDEX %s ON ONLY %s.%s ',
                                      CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END,
                                      pg_catalog.quote_ident(ic.relname), pg_catalog.quote_ident(tn.nspname),
                                      pg_catalog.quote_ident(tc.relname)),
                    i.indisunique, ts.spcname::text
               FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid
               JOIN pg_catalog.pg_class tc ON tc.oid OPERATOR(pg_catalog.=) i.indrelid
               JOIN pg_catalog.pg_namespace tn ON tn.oid OPERATOR(pg_catalog.=) tc.relnamespace
               LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid OPERATOR(pg_catalog.=) ic.reltablespace
              WHERE i.indexrelid OPERATOR(pg_catalog.=) $1 AND ic.relkind OPERATOR(pg_catalog.=) 'I'",
            None,
            &[index.into()],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        let r = rows.first();
        Ok::<_, pgrx::spi::SpiError>(Some(PartitionedIndex {
            definition: r.get(1)?.unwrap_or_default(),
            head: r.get(2)?.unwrap_or_default(),
            unique: r.get(3)?.unwrap_or(false),
            tablespace: r.get(4)?,
        }))
    })
    .or_bug("reading a partitioned index")
}

/// A job on a partitioned table: partitions whose index is attached, of
/// all (shown as partitions_done and partitions_total); on a Citus
/// distributed table: shards with a valid copy of the index, of all
/// (shards_done and shards_total).
pub fn set_partition_counts(job_id: i64, done: i64, total: i64) {
    write(
        "UPDATE pgmigrate.jobs SET rows_done = $2, rows_total = $3 WHERE job_id = $1",
        &[job_id.into(), done.into(), total.into()],
        "counting a job's partitions",
    );
}

/// A step of the job succeeded: the next one gets all its retries.
pub fn reset_retries(job_id: i64) {
    write(
        "UPDATE pgmigrate.jobs SET retries = 0 WHERE job_id = $1",
        &[job_id.into()],
        "resetting a job's retries",
    );
}

/// The size of a partitioned index: its partitions' indexes, at any depth
/// (pretty).
pub fn tree_size(index: pg_sys::Oid) -> Option<String> {
    Spi::connect(|c| {
        c.select(
            "SELECT pg_catalog.pg_size_pretty(pg_catalog.sum(pg_catalog.pg_relation_size(t.relid)))
               FROM pg_catalog.pg_partition_tree($1) t",
            None,
            &[index.into()],
        )?
        .first()
        .get_one::<String>()
    })
    .or_bug("measuring a partitioned index")
}

/// Every index of a partitioned table and of its partitions, at any depth.
pub fn indexes_of_tree(table: pg_sys::Oid) -> Vec<IndexNow> {
    index_rows(
        &format!(
            "SELECT {INDEX_COLUMNS}
               FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE i.indrelid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree($1) t)
              ORDER BY c.oid"
        ),
        &[table.into()],
    )
}

/// The names of a partitioned index and of its partitions' indexes.
pub fn index_tree_names(index: pg_sys::Oid) -> Vec<String> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT c.relname::text FROM pg_catalog.pg_partition_tree($1) t
               JOIN pg_catalog.pg_class c ON c.oid = t.relid",
            None,
            &[index.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.get::<String>(1)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .or_bug("reading a partitioned index's names")
}
