//! A backfill split into slices: `parallel => N` cuts the key range (or the
//! blocks) of a table into N slices, and a partitioned table is done one
//! slice per partition, each walked by its own key.  Each slice is a
//! backfill job of its own (queued by the job's first step, in the same
//! transaction as the job's gates on them), so it has its own exact cursor,
//! retries and history; the workers run up to N slices of a job at once
//! (the claim sees the job's `parallel`), and the job ends when its last
//! slice has succeeded.  Pause, resume, cancel and retry of the job act on
//! its slices (`api::jobs`); its budgets are shared among the slices that
//! run (`run`).

use super::key::choose_key;
use super::owner::as_job_owner;
use crate::catalog::as_owner;
use crate::catalog::jobs::{self, Job, NewSlice, Table};
use crate::engine::jobs::{self as rules, JobState};
use crate::engine::keyset::{display_qualified, Backfill, BackfillSpec, Walk};
use crate::kinds::model::{Driver, StepReport};
use crate::runner::outcome::{fail, succeed};
use crate::sys::Caught;
use pgrx::prelude::*;

/// Keys read from a sample of the table to cut its key range.
const SAMPLE_ROWS: f64 = 20_000.0;

/// Is this job split into slices?  (Not a slice itself.)
pub fn splits(job: &Job, spec: &BackfillSpec, table: &Table) -> bool {
    job.parent.is_none()
        && (table.partitioned
            || spec.parallel.unwrap_or(1) > 1
            || super::citus::distributed_cached(job.relid))
}

/// One slice to queue.
struct Planned {
    relid: pg_sys::Oid,
    relation: String,
    label: String,
    walk: Walk,
    command: String,
    cursor: Option<Vec<String>>,
    lower: Option<Vec<String>>,
    upper: Option<Vec<String>>,
    estimate: i64,
    /// A shard on a node (a distributed table).
    remote: Option<crate::engine::shards::RemoteShard>,
}

/// The step of a job that is split: queue its slices and wait for them
/// (first time), or end once they have all succeeded.
pub fn step(job: &Job, spec: &BackfillSpec, table: &Table, driver: Driver) -> StepReport {
    let slices = as_owner(|| jobs::slices(job.id));
    if slices.is_empty() {
        let planned = match plan(job, spec, table) {
            Ok(p) => p,
            Err(e) => return fail(job, &e),
        };
        if planned.is_empty() {
            return succeed(job);
        }
        let batch_size = job.batch_size;
        let ids: Vec<i64> = as_owner(|| {
            planned
                .iter()
                .map(|p| {
                    let mut child = spec.clone();
                    child.parallel = None;
                    child.walk = p.walk.clone();
                    child.remote = p.remote.clone();
                    jobs::insert_slice(&NewSlice {
                        parent: job,
                        relid: p.relid,
                        relation: &p.relation,
                        spec: serde_json::to_value(&child).expect("spec serialises"),
                        command: &p.command,
                        slice: &p.label,
                        cursor: p.cursor.clone(),
                        lower: p.lower.clone(),
                        upper: p.upper.clone(),
                        estimate: p.estimate,
                        batch_size,
                    })
                })
                .collect()
        });
        let estimate: i64 = planned.iter().map(|p| p.estimate).sum();
        as_owner(|| jobs::set_bounds(job.id, None, None, estimate));
        crate::kinds::queue::announce(job.id, false);
        return wait(job, &ids, driver, true);
    }
    if slices.iter().all(|s| s.state == JobState::Succeeded) {
        as_owner(|| {
            jobs::set_totals(
                job.id,
                slices.iter().map(|s| s.rows_done).sum(),
                slices.iter().map(|s| s.rows_updated).sum(),
                slices.iter().map(|s| s.batches).sum(),
                slices.iter().map(|s| s.skipped).sum(),
            )
        });
        let mut done = job.clone();
        done.rows_done = slices.iter().map(|s| s.rows_done).sum();
        return succeed(&done);
    }
    let ids: Vec<i64> = slices.iter().map(|s| s.id).collect();
    wait(job, &ids, driver, false)
}

/// Let go of the job until its slices are done (the gates on them open).
fn wait(job: &Job, ids: &[i64], driver: Driver, first: bool) -> StepReport {
    let reason = format!(
        "runs as {} slices (jobs {} to {}), {} at a time",
        ids.len(),
        ids.first().copied().unwrap_or(0),
        ids.last().copied().unwrap_or(0),
        job.spec
            .get("parallel")
            .and_then(|p| p.as_i64())
            .unwrap_or(1)
    );
    as_owner(|| jobs::wait_behind(job.id, if first { ids } else { &[] }, None, &reason));
    let notice = match driver {
        Driver::Session => Some(format!(
            "job {}: {reason}; the background workers run them (CALL migrate_wait({}) follows them)",
            job.id, job.id
        )),
        Driver::Worker => None,
    };
    StepReport {
        state: JobState::Waiting,
        done: true,
        sleep_ms: 0,
        notice,
    }
}

fn caught(sqlstate: &str, message: String, hint: Option<String>) -> Caught {
    Caught {
        sqlstate: sqlstate.into(),
        message,
        detail: None,
        hint,
    }
}

fn plan(job: &Job, spec: &BackfillSpec, table: &Table) -> Result<Vec<Planned>, Caught> {
    if super::citus::distributed(job.relid) {
        shards(job, spec)
    } else if table.partitioned {
        partitions(job, spec)
    } else {
        ranges(job, spec, table)
    }
}

/// One slice per partition that holds rows (a leaf of the partition tree,
/// at any depth), each walked by its own key.
fn partitions(job: &Job, spec: &BackfillSpec) -> Result<Vec<Planned>, Caught> {
    let leaves = as_owner(|| leaves(job.relid));
    let mut planned = Vec::with_capacity(leaves.len());
    for (relid, schema, name, relkind) in leaves {
        let relation = display_qualified(&schema, &name);
        if relkind != "r" {
            return Err(caught(
                "0A000",
                format!("partition {relation} of {} is not a table ({relkind})", job.relation),
                Some("pg_migrate backfills partitions that are ordinary tables; do the rows of a foreign partition where they live.".into()),
            ));
        }
        let walk = choose_key(relid)
            .map(|columns| Walk::Key { columns })
            .unwrap_or_else(|| spec.walk.clone());
        let b = Backfill {
            schema: &schema,
            table: &name,
            walk: &walk,
            set_clause: &spec.set_clause,
            where_clause: spec.where_clause.as_deref(),
        };
        planned.push(Planned {
            relid,
            label: format!("partition {relation}"),
            relation,
            command: b.plain_update(),
            walk,
            cursor: None,
            lower: None,
            upper: None,
            estimate: as_owner(|| jobs::row_estimate(relid)),
            remote: None,
        });
    }
    Ok(planned)
}

/// One slice per shard of a distributed table, done on the shard's node.
fn shards(job: &Job, spec: &BackfillSpec) -> Result<Vec<Planned>, Caught> {
    let mut shards = as_owner(|| super::citus::shards(job.relid))?;
    crate::engine::shards::assign_lanes(&mut shards, spec.parallel.unwrap_or(1));
    let rows = as_owner(|| super::citus::shard_rows(&shards));
    Ok(shards
        .into_iter()
        .zip(rows)
        .map(|(shard, estimate)| {
            let b = Backfill {
                schema: &shard.schema,
                table: &shard.table,
                walk: &spec.walk,
                set_clause: &spec.set_clause,
                where_clause: spec.where_clause.as_deref(),
            };
            Planned {
                relid: job.relid,
                relation: display_qualified(&shard.schema, &shard.table),
                label: format!("shard {} on {}", shard.shard_id, shard.node()),
                command: b.plain_update(),
                walk: spec.walk.clone(),
                cursor: None,
                lower: None,
                upper: None,
                estimate,
                remote: Some(shard),
            }
        })
        .collect())
}

/// The leaves of a partition tree: relid, schema, name, relkind.
fn leaves(relid: pg_sys::Oid) -> Vec<(pg_sys::Oid, String, String, String)> {
    use crate::catalog::SpiOrBug;
    Spi::connect(|client| {
        client
            .select(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text
                   FROM pg_catalog.pg_partition_tree($1) WITH ORDINALITY AS t(relid, parentrelid, isleaf, level, ord)
                   JOIN pg_catalog.pg_class c ON c.oid = t.relid
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE t.isleaf
                  ORDER BY t.ord",
                None,
                &[relid.into()],
            )
            .or_bug("listing partitions")
            .map(|r| {
                (
                    r.get(1).or_bug("listing partitions").unwrap_or(pg_sys::Oid::INVALID),
                    r.get(2).or_bug("listing partitions").unwrap_or_default(),
                    r.get(3).or_bug("listing partitions").unwrap_or_default(),
                    r.get(4).or_bug("listing partitions").unwrap_or_default(),
                )
            })
            .collect()
    })
}

/// `parallel => N` on a table: N slices of its key range (cut at keys
/// sampled from the table) or of its blocks.
fn ranges(job: &Job, spec: &BackfillSpec, table: &Table) -> Result<Vec<Planned>, Caught> {
    let n = spec.parallel.unwrap_or(1).max(1) as usize;
    let b = Backfill {
        schema: &table.schema,
        table: &table.name,
        walk: &spec.walk,
        set_clause: &spec.set_clause,
        where_clause: spec.where_clause.as_deref(),
    };
    let estimate = as_owner(|| jobs::row_estimate(job.relid));
    let command = b.plain_update();
    let relation = display_qualified(&table.schema, &table.name);
    let slice = |i: usize,
                 label: String,
                 cursor: Option<Vec<String>>,
                 lower: Option<Vec<String>>,
                 upper: Vec<String>,
                 count: usize| Planned {
        relid: job.relid,
        relation: relation.clone(),
        label: format!("slice {} of {count}: {label}", i + 1),
        walk: spec.walk.clone(),
        command: command.clone(),
        cursor,
        lower,
        upper: Some(upper),
        estimate: estimate / count as i64,
        remote: None,
    };
    match &spec.walk {
        Walk::Ctid => {
            let pages = table.pages;
            if pages <= 0 {
                return Ok(vec![]);
            }
            let count = n.min(pages as usize).max(1);
            Ok((0..count)
                .map(|i| {
                    let start = pages * i as i64 / count as i64;
                    let end = pages * (i as i64 + 1) / count as i64;
                    slice(
                        i,
                        format!("blocks {start} to {}", end - 1),
                        (start > 0).then(|| vec![start.to_string()]),
                        Some(vec![start.to_string()]),
                        vec![end.to_string()],
                        count,
                    )
                })
                .collect())
        }
        Walk::Key { .. } => {
            let upper_sql = b.bound_sql(true).expect("key walk");
            let lower_sql = b.bound_sql(false).expect("key walk");
            let sample_sql = b.sample_keys_sql().expect("key walk");
            let percent = (100.0 * SAMPLE_ROWS / estimate.max(1) as f64).clamp(0.01, 100.0);
            // Read as the job's owner, under the submitter's settings (set
            // by the step) and the job's statement timeout.
            let found = as_job_owner(job, spec, true, || {
                Spi::connect(|client| {
                    let upper: Option<Vec<String>> =
                        client.select(&upper_sql, None, &[])?.first().get_one()?;
                    let Some(upper) = upper else {
                        return Ok(None);
                    };
                    let lower: Option<Vec<String>> =
                        client.select(&lower_sql, None, &[])?.first().get_one()?;
                    let sample: Vec<Vec<String>> = client
                        .select(&sample_sql, None, &[percent.into()])?
                        .map(|r| r.get::<Vec<String>>(1).map(|k| k.unwrap_or_default()))
                        .collect::<Result<_, _>>()?;
                    Ok::<_, pgrx::spi::SpiError>(Some((lower, upper, sample)))
                })
                .unwrap_or_else(|e| pgrx::error!("pg_migrate: cutting the key range: {e}"))
            })?;
            let Some((lower, upper, sample)) = found else {
                return Ok(vec![]);
            };
            let cuts = cut_points(&sample, n);
            let count = cuts.len() + 1;
            let mut out = Vec::with_capacity(count);
            let mut after: Option<Vec<String>> = None;
            for i in 0..count {
                let to = cuts.get(i).cloned().unwrap_or_else(|| upper.clone());
                let from_text = after
                    .as_ref()
                    .map(|a| format!("keys after ({})", a.join(", ")))
                    .unwrap_or_else(|| "keys from the first".into());
                out.push(slice(
                    i,
                    format!("{from_text} up to ({})", to.join(", ")),
                    after.clone(),
                    after.clone().or_else(|| lower.clone()),
                    to.clone(),
                    count,
                ));
                after = Some(to);
            }
            Ok(out)
        }
    }
}

/// Where to cut `sorted` keys into `n` slices of about the same number of
/// keys: at most n - 1 distinct keys, in order.
pub fn cut_points(sorted: &[Vec<String>], n: usize) -> Vec<Vec<String>> {
    let mut cuts: Vec<Vec<String>> = Vec::new();
    if n < 2 || sorted.is_empty() {
        return cuts;
    }
    for i in 1..n {
        let at = sorted.len() * i / n;
        if at == 0 || at >= sorted.len() {
            continue;
        }
        let key = &sorted[at - 1];
        if cuts.last() != Some(key) {
            cuts.push(key.clone());
        }
    }
    cuts
}

/// The progress line of a split job: its slices' rows, summed.
pub fn progress_line(j: &Job) -> Option<String> {
    let slices = as_owner(|| jobs::slices(j.id));
    if slices.is_empty() {
        return None;
    }
    let done: i64 = slices.iter().map(|s| s.rows_done).sum();
    let total: i64 = slices
        .iter()
        .map(|s| s.rows_estimate.max(s.rows_done))
        .sum();
    let finished = slices
        .iter()
        .filter(|s| s.state == JobState::Succeeded)
        .count();
    Some(format!(
        "{} ({finished} of {} slices done)",
        rules::progress_line(j.id, done, total, None),
        slices.len()
    ))
}

#[cfg(test)]
mod tests {
    use crate::kinds::backfill::slices::cut_points;

    fn keys(n: i64) -> Vec<Vec<String>> {
        (1..=n).map(|k| vec![k.to_string()]).collect()
    }

    #[test]
    fn cuts_give_slices_of_about_the_same_size() {
        let cuts = cut_points(&keys(100), 4);
        assert_eq!(cuts, vec![vec!["25"], vec!["50"], vec!["75"]]);
        assert_eq!(cut_points(&keys(100), 2), vec![vec!["50".to_string()]]);
    }

    #[test]
    fn few_keys_make_fewer_slices() {
        assert!(cut_points(&keys(0), 4).is_empty());
        assert!(cut_points(&keys(1), 4).is_empty());
        assert_eq!(cut_points(&keys(2), 4).len(), 1);
        let same: Vec<Vec<String>> = (0..10).map(|_| vec!["7".to_string()]).collect();
        assert_eq!(cut_points(&same, 3), vec![vec!["7".to_string()]]);
    }

    #[test]
    fn one_slice_needs_no_cut() {
        assert!(cut_points(&keys(100), 1).is_empty());
    }
}
