//! Backfills of Citus distributed tables, shard by shard.
//!
//! A batch sent through the coordinator walks the key range of the whole
//! table and so touches every shard.  Instead, a backfill of a distributed
//! table is split into one slice per shard (`slices`), and each slice is
//! done by the pg_migrate of the node that holds the shard: the slice sends
//! the node, as the job's owner (Citus connects as the current role), a
//! `migrate_backfill` of the shard table, then follows that job until it
//! ends.  So every batch touches one shard, on its own node, and commits
//! with its exact cursor there: a crash or `kill -9` of any process on any
//! node loses or doubles nothing (the node's job resumes at its next
//! batch; the slice, resumed anywhere, finds the job it sent and follows
//! it again).  The job's budgets are divided among the slices it runs at
//! once (`parallel`).
//!
//! Reference tables and tables local to the coordinator are backfilled
//! through the coordinator, as any table.

use super::owner::as_job_owner;
use crate::catalog::as_owner;
use crate::catalog::jobs::{self, Job};
use crate::engine::jobs::{self as rules, Control, JobState};
use crate::engine::keyset::{display_qualified, Backfill, BackfillSpec};
use crate::engine::shards::{connection_trouble, interleave, RemoteShard};
use crate::error::literal;
use crate::kinds::model::{Driver, StepReport};
use crate::runner::outcome::{fail, succeed};
use crate::sys::Caught;
use pgrx::prelude::*;
use serde::Deserialize;

/// How long one command of a slice waits on the node for its shard's job
/// to end or stop (it looks every 10 ms there) before it answers.
const FOLLOW_MS: i32 = 1000;
/// How long a slice waits before trying an unreachable node again.
const NODE_AGAIN_MS: i64 = 1000;

/// Is `relid` a Citus table whose rows are spread over shards (hash,
/// range or append distributed)?  Reference tables, single-shard and
/// coordinator-local tables are not.  False without Citus.
pub fn distributed(relid: pg_sys::Oid) -> bool {
    crate::sys::pinned(|| {
        Spi::connect(|client| {
            let citus = client
                .select(
                    "SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
                    None,
                    &[],
                )?
                .first()
                .get_one::<bool>()?
                .unwrap_or(false);
            if !citus {
                return Ok(false);
            }
            client
                .select(
                    "SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p
                                     WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
                                       AND p.partmethod OPERATOR(pg_catalog.<>) 'n')",
                    None,
                    &[relid.into()],
                )?
                .first()
                .get_one::<bool>()
                .map(|b| b.unwrap_or(false))
        })
    })
    .unwrap_or(false)
}

/// What kind of Citus table `relid` is ("distributed table", "reference
/// table", ...), or None for a table Citus does not know (or no Citus).
pub fn citus_table(relid: pg_sys::Oid) -> Option<String> {
    crate::sys::pinned(|| {
        Spi::connect(|client| {
            let citus = client
                .select(
                    "SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
                    None,
                    &[],
                )?
                .first()
                .get_one::<bool>()?
                .unwrap_or(false);
            if !citus {
                return Ok(None);
            }
            client
                .select(
                    "SELECT CASE WHEN p.partmethod OPERATOR(pg_catalog.<>) 'n' THEN 'distributed table'
                                 WHEN p.repmodel OPERATOR(pg_catalog.=) 't' THEN 'reference table'
                                 WHEN p.colocationid OPERATOR(pg_catalog.<>) 0 THEN 'distributed table'
                                 ELSE 'local table' END
                       FROM pg_catalog.pg_dist_partition p
                      WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
                    None,
                    &[relid.into()],
                )?
                .first()
                .get_one::<String>()
        })
    })
    .ok()
    .flatten()
}

/// The distribution column of a hash- or range-distributed Citus table;
/// None for any other table (or without Citus).
pub fn distribution_column(relid: pg_sys::Oid) -> Option<String> {
    if !distributed(relid) {
        return None;
    }
    crate::sys::pinned(|| {
        Spi::get_one_with_args::<String>(
            "SELECT pg_catalog.column_to_column_name(p.logicalrelid, p.partkey)::pg_catalog.text
               FROM pg_catalog.pg_dist_partition p
              WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
                AND p.partkey IS NOT NULL",
            &[relid.into()],
        )
    })
    .ok()
    .flatten()
}

thread_local! {
    static DISTRIBUTED: std::cell::RefCell<std::collections::HashMap<u32, bool>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// `distributed`, asked once per table in this process (a backfill asks
/// at every batch whether its table is split).
pub fn distributed_cached(relid: pg_sys::Oid) -> bool {
    let key = relid.to_u32();
    if let Some(known) = DISTRIBUTED.with(|d| d.borrow().get(&key).copied()) {
        return known;
    }
    let known = distributed(relid);
    DISTRIBUTED.with(|d| d.borrow_mut().insert(key, known));
    known
}

/// The nodes that hold `shards`, each once, in the order first met.
fn nodes_of(shards: &[RemoteShard]) -> Vec<(&str, i32)> {
    let mut nodes: Vec<(&str, i32)> = Vec::new();
    for s in shards {
        if !nodes.contains(&(s.host.as_str(), s.port)) {
            nodes.push((s.host.as_str(), s.port));
        }
    }
    nodes
}

/// The rows of each shard (in `shards` order), from its statistics on its
/// node (the coordinator's own table is empty): one command per node, the
/// nodes at once.  0 for a shard whose node does not answer.
pub fn shard_rows(shards: &[RemoteShard]) -> Vec<i64> {
    let nodes = nodes_of(shards);
    let commands: Vec<String> = nodes
        .iter()
        .map(|(host, port)| {
            let names: Vec<String> = shards
                .iter()
                .filter(|s| s.host == *host && s.port == *port)
                .map(|s| {
                    literal(&format!(
                        "{}.{}",
                        crate::engine::keyset::quote_ident(&s.schema),
                        crate::engine::keyset::quote_ident(&s.table)
                    ))
                })
                .collect();
            format!(
                "SELECT pg_catalog.array_agg(coalesce(
                        (SELECT GREATEST(c.reltuples, 0)::pg_catalog.int8 FROM pg_catalog.pg_class c
                          WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(t.name)), 0) ORDER BY t.i)::pg_catalog.text
                   FROM pg_catalog.unnest(ARRAY[{}]::pg_catalog.text[]) WITH ORDINALITY AS t(name, i)",
                names.join(", ")
            )
        })
        .collect();
    let answers = on_nodes(&nodes, commands);
    let mut rows = vec![0; shards.len()];
    for (host, port, ok, answer) in answers {
        let Some(counts) = ok.then(|| lane_ids(&answer)).flatten() else {
            continue;
        };
        let mut counts = counts.into_iter();
        for (i, s) in shards.iter().enumerate() {
            if s.host == host && s.port == port {
                rows[i] = counts.next().unwrap_or(0);
            }
        }
    }
    rows
}

/// Run one command on each node, the nodes at once (a connection each, as
/// the current role): (host, port, success, answer) of each.
fn on_nodes(nodes: &[(&str, i32)], commands: Vec<String>) -> Vec<(String, i32, bool, String)> {
    let hosts: Vec<String> = nodes.iter().map(|(h, _)| h.to_string()).collect();
    let ports: Vec<i32> = nodes.iter().map(|(_, p)| *p).collect();
    crate::sys::pinned(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT r.node_name, r.node_port, r.success, r.result
                       FROM pg_catalog.master_run_on_worker($1, $2, $3, true) r",
                    None,
                    &[hosts.into(), ports.into(), commands.into()],
                )?
                .map(|r| {
                    Ok((
                        r.get(1)?.unwrap_or_default(),
                        r.get(2)?.unwrap_or(0),
                        r.get(3)?.unwrap_or(false),
                        r.get(4)?.unwrap_or_default(),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
    })
    .unwrap_or_default()
}

/// An index of a distributed table, on the table's shards: how many shards
/// have a valid copy of it, of how many (one command per node, the nodes
/// at once).  None: not a distributed table.
pub fn shard_indexes(relid: pg_sys::Oid, schema: &str, name: &str) -> Option<(i64, i64)> {
    if !distributed(relid) {
        return None;
    }
    let shards = shards(relid).ok()?;
    let total = shards.len() as i64;
    let index = format!(
        "{}.{}",
        crate::engine::keyset::quote_ident(schema),
        crate::engine::keyset::quote_ident(name)
    );
    let ids: Vec<i64> = shards.iter().map(|s| s.shard_id).collect();
    // Each shard's copy is named by Citus (the index's name and the
    // shard's id, shortened with a hash when too long).
    let names: Option<Vec<String>> = crate::sys::pinned(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT pg_catalog.array_agg(pg_catalog.shard_name(i.oid, s.id) ORDER BY s.n)
                       FROM (SELECT pg_catalog.to_regclass($1) AS oid) i,
                            pg_catalog.unnest($2::pg_catalog.int8[]) WITH ORDINALITY AS s(id, n)
                      WHERE i.oid IS NOT NULL",
                    None,
                    &[index.as_str().into(), ids.into()],
                )?
                .first()
                .get_one::<Vec<String>>()
        })
    })
    .ok()
    .flatten();
    let Some(names) = names.filter(|n| n.len() == shards.len()) else {
        return Some((0, total));
    };
    let nodes = nodes_of(&shards);
    let commands: Vec<String> = nodes
        .iter()
        .map(|(host, port)| {
            let here: Vec<String> = shards
                .iter()
                .zip(&names)
                .filter(|(s, _)| s.host == *host && s.port == *port)
                .map(|(_, n)| literal(n))
                .collect();
            format!(
                "SELECT pg_catalog.count(*)::pg_catalog.text
                   FROM pg_catalog.unnest(ARRAY[{}]::pg_catalog.text[]) AS n(name)
                   JOIN pg_catalog.pg_index i
                     ON i.indexrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(n.name)::pg_catalog.oid
                  WHERE i.indisvalid",
                here.join(", ")
            )
        })
        .collect();
    let done = on_nodes(&nodes, commands)
        .into_iter()
        .filter(|(_, _, ok, _)| *ok)
        .filter_map(|(_, _, _, answer)| answer.trim().parse::<i64>().ok())
        .sum();
    Some((done, total))
}

/// The shards of a distributed table with the node of each, in shard
/// order, nodes interleaved (so that slices run at once are on different
/// nodes when they can be).  A shard with more than one placement is
/// refused: each slice follows one job on one node.
pub fn shards(relid: pg_sys::Oid) -> Result<Vec<RemoteShard>, Caught> {
    let rows: Vec<(i64, String, String, String, i32, i64, String)> = crate::sys::pinned(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT s.shardid, n.nspname::text,
                            c.relname::text OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) s.shardid::text,
                            d.nodename, d.nodeport,
                            (SELECT count(*) FROM pg_catalog.pg_dist_placement q
                              WHERE q.shardid OPERATOR(pg_catalog.=) s.shardid),
                            (SELECT x.nspname::text FROM pg_catalog.pg_extension e
                               JOIN pg_catalog.pg_namespace x ON x.oid OPERATOR(pg_catalog.=) e.extnamespace
                              WHERE e.extname OPERATOR(pg_catalog.=) 'pg_migrate')
                       FROM pg_catalog.pg_dist_shard s
                       JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.logicalrelid
                       JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                       JOIN pg_catalog.pg_dist_placement p ON p.shardid OPERATOR(pg_catalog.=) s.shardid
                       JOIN pg_catalog.pg_dist_node d ON d.groupid OPERATOR(pg_catalog.=) p.groupid
                                                     AND d.noderole OPERATOR(pg_catalog.=) 'primary'
                      WHERE s.logicalrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass
                      ORDER BY s.shardid",
                    None,
                    &[relid.into()],
                )?
                .map(|r| {
                    Ok((
                        r.get(1)?.unwrap_or(0),
                        r.get(2)?.unwrap_or_default(),
                        r.get(3)?.unwrap_or_default(),
                        r.get(4)?.unwrap_or_default(),
                        r.get(5)?.unwrap_or(0),
                        r.get(6)?.unwrap_or(0),
                        r.get(7)?.unwrap_or_default(),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
    })
    .map_err(|e| caught("XX000", format!("reading the shards: {e}"), None))?;
    if let Some(r) = rows.iter().find(|r| r.5 > 1) {
        return Err(caught(
            "0A000",
            format!("shard {} has {} placements", r.0, r.5),
            Some("pg_migrate backfills distributed tables whose shards have one placement each (citus.shard_replication_factor = 1).".into()),
        ));
    }
    let mut shards: Vec<RemoteShard> = rows
        .into_iter()
        .map(
            |(shard_id, schema, table, host, port, _, ext)| RemoteShard {
                shard_id,
                schema,
                table,
                host,
                port,
                extension_schema: ext,
                lane: None,
            },
        )
        .collect();
    interleave(&mut shards);
    Ok(shards)
}

fn caught(sqlstate: &str, message: String, hint: Option<String>) -> Caught {
    Caught {
        sqlstate: sqlstate.into(),
        message,
        detail: None,
        hint,
    }
}

/// What the node said of the shard's job.
#[derive(Debug, Deserialize)]
struct Seen {
    #[serde(default)]
    job_id: Option<i64>,
    state: String,
    rows_done: i64,
    rows_updated: i64,
    rows_total: Option<i64>,
    skipped: Option<i64>,
    error: Option<String>,
    wait_reason: Option<String>,
}

/// Why a command on a node did not give its answer.
enum NodeError {
    /// The node could not be reached or went away (it restarts, say):
    /// try again later.
    Unreachable(String),
    /// The node answered with an error.
    Refused(String),
}

/// Run one command on a node, as the current role, in a transaction of its
/// own there; its answer is the first column of its first row.
fn on_node(shard: &RemoteShard, command: &str) -> Result<String, NodeError> {
    let row = crate::sys::pinned(|| {
        Spi::connect(|client| {
            let r = client
                .select(
                    "SELECT r.success, r.result
                       FROM pg_catalog.master_run_on_worker(ARRAY[$1], ARRAY[$2], ARRAY[$3], false) r",
                    None,
                    &[
                        shard.host.as_str().into(),
                        shard.port.into(),
                        command.into(),
                    ],
                )?
                .first();
            Ok::<_, pgrx::spi::SpiError>((
                r.get::<bool>(1)?.unwrap_or(false),
                r.get::<String>(2)?.unwrap_or_default(),
            ))
        })
    });
    match row {
        Ok((true, answer)) => Ok(answer),
        Ok((false, message)) if connection_trouble(&message) => {
            Err(NodeError::Unreachable(message))
        }
        Ok((false, message)) => Err(NodeError::Refused(message)),
        Err(e) => Err(NodeError::Refused(e.to_string())),
    }
}

fn qualified_function(shard: &RemoteShard, name: &str) -> String {
    format!(
        "{}.{name}",
        crate::engine::keyset::quote_ident(&shard.extension_schema)
    )
}

/// The expression that queues the shard's job on its node, unless an
/// earlier run of this slice queued it already (same shard, same command,
/// the slice's `token` as its run_at): then it is that job's id.  `after`
/// is an SQL expression of the id of the job it must wait for, if any.
fn submit_expr(
    spec: &BackfillSpec,
    shard: &RemoteShard,
    token: &str,
    share: i64,
    after: Option<&str>,
) -> String {
    let b = Backfill {
        schema: &shard.schema,
        table: &shard.table,
        walk: &spec.walk,
        set_clause: &spec.set_clause,
        where_clause: spec.where_clause.as_deref(),
    };
    let command = b.plain_update();
    let table = format!(
        "{}.{}",
        crate::engine::keyset::quote_ident(&shard.schema),
        crate::engine::keyset::quote_ident(&shard.table)
    );
    let mut args = vec![
        format!("{}::pg_catalog.regclass", literal(&table)),
        format!("set_clause => {}", literal(&spec.set_clause)),
    ];
    if let Some(w) = &spec.where_clause {
        args.push(format!("where_clause => {}", literal(w)));
    }
    if let Some(n) = spec.fixed_batch_size {
        args.push(format!("batch_size => {n}"));
    }
    args.push(format!("sleep_ms => {}", spec.sleep_ms));
    args.push(format!(
        "lock_timeout => '{} ms'::pg_catalog.interval",
        spec.lock_timeout_ms
    ));
    args.push(format!(
        "statement_timeout => '{} ms'::pg_catalog.interval",
        spec.statement_timeout_ms
    ));
    args.push(format!("max_retries => {}", spec.max_retries));
    args.push(format!(
        "run_at => {}::pg_catalog.timestamptz",
        literal(token)
    ));
    if let Some(id) = after {
        args.push(format!("after_jobs => ARRAY[{id}]::pg_catalog.int8[]"));
    }
    let p = &spec.pace;
    if let Some(v) = p.target_batch_ms {
        args.push(format!("target_batch_ms => {v}"));
    }
    if let Some(v) = p.max_batch_size {
        args.push(format!("max_batch_size => {v}"));
    }
    if let Some(v) = p.max_replay_lag_ms {
        args.push(format!("max_replay_lag => '{v} ms'::pg_catalog.interval"));
    }
    if let Some(v) = p.max_slot_wal_bytes {
        args.push(format!("max_slot_wal => '{v}'"));
    }
    let divided = |v: i64| if v > 0 { (v / share.max(1)).max(1) } else { v };
    if let Some(v) = p.max_rows_per_second {
        args.push(format!("max_rows_per_second => {}", divided(v)));
    }
    if let Some(v) = p.max_wal_bytes_per_second {
        args.push(format!("max_wal_per_second => '{}'", divided(v)));
    }
    if let Some(v) = p.pause_during_vacuum {
        args.push(format!("pause_during_vacuum => {v}"));
    }
    if let Some(w) = &p.window {
        args.push(format!("window_start => {}", literal(&w.cron)));
        args.push(format!(
            "window_length => '{} s'::pg_catalog.interval",
            w.length_secs
        ));
    }
    args.push(format!(
        "on_error => {}",
        literal(match spec.on_error {
            crate::engine::pace::OnError::Fail => "fail",
            crate::engine::pace::OnError::Skip => "skip",
        })
    ));
    format!(
        "COALESCE(
                  (SELECT p.job_id FROM {progress} p
                    WHERE p.kind OPERATOR(pg_catalog.=) 'backfill'
                      AND p.owner::pg_catalog.oid OPERATOR(pg_catalog.=)
                          (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER)
                      AND p.run_at OPERATOR(pg_catalog.=) {token}::pg_catalog.timestamptz
                      AND p.command OPERATOR(pg_catalog.=) {command}
                    ORDER BY p.job_id DESC LIMIT 1),
                  {submit}({args}))",
        progress = qualified_function(shard, "migrate_progress"),
        token = literal(token),
        command = literal(&command),
        submit = qualified_function(shard, "migrate_backfill"),
        args = args.join(", "),
    )
}

/// The one command that queues a lane's jobs on its node (each gated on
/// the one before it, the first on the job `before` if any), in one
/// transaction there, answering their ids as an array (text).  Each
/// `(spec, shard, token)` is one slice of the lane, in lane order.  The
/// submitter's settings hold for this transaction on the node: the jobs
/// keep them for their batches.
pub fn lane_command(
    slices: &[(&BackfillSpec, &RemoteShard, String)],
    share: i64,
    before: Option<i64>,
) -> String {
    let settings: Vec<String> = slices
        .first()
        .map(|(spec, _, _)| spec.settings.clone())
        .unwrap_or_default()
        .iter()
        .map(|(n, v)| {
            format!(
                "pg_catalog.set_config({}, {}, true)",
                literal(n),
                literal(v)
            )
        })
        .collect();
    let mut ctes = vec![format!(
        "_pgm0 AS MATERIALIZED (SELECT {})",
        if settings.is_empty() {
            "1".to_string()
        } else {
            settings.join(", ")
        }
    )];
    for (i, (spec, shard, token)) in slices.iter().enumerate() {
        let prev = format!("_pgm{i}");
        let (after, ids) = if i == 0 {
            (
                before.map(|id| id.to_string()),
                "ARRAY[]::pg_catalog.int8[]".to_string(),
            )
        } else {
            (
                Some(format!("{prev}.ids[pg_catalog.cardinality({prev}.ids)]")),
                format!("{prev}.ids"),
            )
        };
        ctes.push(format!(
            "_pgm{n} AS MATERIALIZED (SELECT pg_catalog.array_append({ids}, {expr}) AS ids FROM {prev})",
            n = i + 1,
            expr = submit_expr(spec, shard, token, share, after.as_deref()),
        ));
    }
    format!(
        "WITH {} SELECT _pgm{}.ids::pg_catalog.text FROM _pgm{}",
        ctes.join(",\n"),
        slices.len(),
        slices.len()
    )
}

/// The ids in a lane command's answer ("{12,13}").
pub fn lane_ids(answer: &str) -> Option<Vec<i64>> {
    let inner = answer.trim().strip_prefix('{')?.strip_suffix('}')?;
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner.split(',').map(|v| v.trim().parse().ok()).collect()
}

/// The command that follows a shard's job on its node: it waits there up
/// to FOLLOW_MS for the job to end or stop, then answers what the job
/// shows (json; empty when `job` names no job).  `job` is an SQL
/// expression of its id.
fn follow_command(job: &str) -> String {
    format!("SELECT pgmigrate._follow({job}, {FOLLOW_MS})")
}

/// The job a slice sent, found by its token (see `sent_job`), followed.
fn find_command(spec: &BackfillSpec, shard: &RemoteShard, token: &str) -> String {
    let b = Backfill {
        schema: &shard.schema,
        table: &shard.table,
        walk: &spec.walk,
        set_clause: &spec.set_clause,
        where_clause: spec.where_clause.as_deref(),
    };
    follow_command(&format!("({})", sent_job(shard, token, &b.plain_update())))
}

/// A query of the job on the node that has the shard, the command and the
/// slice's time as run_at, owned by the current role.
fn sent_job(shard: &RemoteShard, token: &str, command: &str) -> String {
    format!(
        "SELECT p.job_id FROM {progress} p
          WHERE p.kind OPERATOR(pg_catalog.=) 'backfill'
            AND p.owner::pg_catalog.oid OPERATOR(pg_catalog.=)
                (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER)
            AND p.run_at OPERATOR(pg_catalog.=) {token}::pg_catalog.timestamptz
            AND p.command OPERATOR(pg_catalog.=) {command}
          ORDER BY p.job_id DESC LIMIT 1",
        progress = qualified_function(shard, "migrate_progress"),
        token = literal(token),
        command = literal(command),
    )
}

/// A control function (migrate_cancel, _pause, _resume, _retry) on the
/// shard's job.
pub fn control_command(shard: &RemoteShard, function: &str, id: i64) -> String {
    format!(
        "SELECT {}({id})::pg_catalog.text",
        qualified_function(shard, function)
    )
}

/// The id of the job a slice sent to its node (its cursor's first item).
pub fn remote_id(job: &Job) -> Option<i64> {
    job.cursor
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|v| v.parse().ok())
}

/// A slice of a shard was paused, resumed or cancelled (by itself or
/// with its job): do the same to the job it sent to its node, as the
/// calling role.  A cancelled one is marked so that a retry retries it
/// there.  Returns what could not be told, with why.
pub fn controlled(slice: &Job, action: Control) -> Vec<String> {
    let Some(remote) = slice
        .spec
        .get("remote")
        .and_then(|r| serde_json::from_value::<RemoteShard>(r.clone()).ok())
    else {
        return Vec::new();
    };
    let Some(id) = remote_id(slice) else {
        return Vec::new();
    };
    let function = match action {
        Control::Pause => "migrate_pause",
        Control::Resume => "migrate_resume",
        Control::Cancel => "migrate_cancel",
        // The slice's next step retries the node's job (marked failed).
        Control::Retry => return Vec::new(),
    };
    match on_node(&remote, &control_command(&remote, function, id)) {
        Ok(_) => {
            if action == Control::Cancel {
                as_owner(|| jobs::set_cursor(slice.id, &[id.to_string(), "failed".into()]));
            }
            Vec::new()
        }
        Err(NodeError::Unreachable(m) | NodeError::Refused(m)) => {
            vec![format!(
                "job {id} on {} ({}): {m}",
                remote.node(),
                slice.relation
            )]
        }
    }
}

/// Send the slice's shard job to its node.  A slice in a lane sends the
/// jobs of every slice of its lane that has none yet, in order, each gated
/// on the one before it there, so that the node runs the lane's shards
/// back to back (the slices that follow them later find them sent).
/// Ok(false): another slice of the job is sending now; look again soon.
/// Run `command` on the shard's node as the job's owner: its answer, or
/// the end of this step (a node that cannot be reached is waited for;
/// one that answers with an error fails the slice, saying "node <node>
/// <what> <id>: <its error>").
fn ask_node(
    job: &Job,
    spec: &BackfillSpec,
    shard: &RemoteShard,
    command: &str,
    what: &str,
    id: i64,
) -> Result<String, StepReport> {
    match as_job_owner(job, spec, true, || on_node(shard, command)) {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(NodeError::Unreachable(m))) => Err(unreachable_node(job, shard, &m)),
        Ok(Err(NodeError::Refused(m))) => Err(fail(
            job,
            &caught(
                "XX000",
                format!("node {} {what} {id}: {m}", shard.node()),
                None,
            ),
        )),
        Err(e) => Err(fail(job, &e)),
    }
}

/// What `send_lane` did.
enum Lane {
    /// An earlier slice of the lane sent this one's job: what it shows
    /// (the answer of a follow command).
    Found(String),
    /// It sent the lane (or this slice's job).
    Sent,
    /// Another slice of the job sends now: look again soon.
    Busy,
}

fn send_lane(job: &Job, spec: &BackfillSpec, shard: &RemoteShard) -> Result<Lane, NodeError> {
    let parent = job.parent.and_then(|p| as_owner(|| jobs::get(p, false)));
    let share = parent
        .as_ref()
        .and_then(|p| p.spec.get("parallel").and_then(|v| v.as_i64()))
        .unwrap_or(1);
    let lane: Vec<(Job, BackfillSpec, RemoteShard)> = match (shard.lane, &parent) {
        (Some(lane), Some(p)) => as_owner(|| jobs::slices(p.id))
            .iter()
            .filter_map(|s| as_owner(|| jobs::get(s.id, false)))
            .filter_map(|s| {
                let sp = crate::kinds::job::spec_of::<BackfillSpec>(&s).ok()?;
                let r = sp.remote.clone()?;
                (r.lane == Some(lane)).then_some((s, sp, r))
            })
            .collect(),
        _ => vec![(job.clone(), spec.clone(), shard.clone())],
    };
    if lane.len() > 1 {
        // An earlier slice of the lane may have sent this one's job
        // already: then follow it at once (the same command).
        let token = as_owner(|| created_at(job.id));
        match as_job_owner(job, spec, true, || {
            on_node(shard, &find_command(spec, shard, &token))
        }) {
            Ok(Ok(answer)) if !answer.trim().is_empty() => return Ok(Lane::Found(answer)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(NodeError::Refused(e.message)),
        };
        // One slice of the job sends at a time (the others look again
        // soon): two could otherwise both miss a job and both send it.
        if !as_owner(|| jobs::try_lock(parent.as_ref().map_or(job.id, |p| p.id))) {
            return Ok(Lane::Busy);
        }
    }
    // The lane's jobs go in one command, so the lock above is held for
    // one round trip, and the other lanes are sent right after.
    let mut before: Option<i64> = None;
    let mut sending: Vec<(&Job, &BackfillSpec, &RemoteShard)> = Vec::new();
    for (s, sp, r) in &lane {
        match remote_id(s).filter(|_| s.id == job.id) {
            Some(id) if sending.is_empty() => before = Some(id),
            _ => sending.push((s, sp, r)),
        }
    }
    if sending.is_empty() {
        return Ok(Lane::Sent);
    }
    let slices: Vec<(&BackfillSpec, &RemoteShard, String)> = sending
        .iter()
        .map(|(s, sp, r)| (*sp, *r, as_owner(|| created_at(s.id))))
        .collect();
    let command = lane_command(&slices, share, before);
    let answer = match as_job_owner(job, spec, true, || on_node(shard, &command)) {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(NodeError::Refused(e.message)),
    };
    let ids = lane_ids(&answer)
        .filter(|ids| ids.len() == sending.len())
        .ok_or_else(|| NodeError::Refused(format!("it answered {answer:?} to migrate_backfill")))?;
    for ((s, _, r), id) in sending.iter().zip(ids) {
        if s.id == job.id {
            as_owner(|| jobs::set_cursor(s.id, &[id.to_string()]));
            let reason = format!(
                "job {id} on {} backfills {}",
                r.node(),
                display_qualified(&r.schema, &r.table)
            );
            as_owner(|| jobs::mirror(job.id, 0, 0, job.rows_estimate.unwrap_or(0), Some(&reason)));
        }
    }
    Ok(Lane::Sent)
}

/// The step of a slice that is one shard: send the shard's job to its node
/// (first time), then follow it.
pub fn step(job: &Job, spec: &BackfillSpec, shard: &RemoteShard, driver: Driver) -> StepReport {
    let display = display_qualified(&shard.schema, &shard.table);
    let refused = |m: String| {
        fail(
            job,
            &caught(
                "XX000",
                format!("node {} refused the backfill of {display}: {m}", shard.node()),
                Some("Is pg_migrate installed and preloaded on every node (CREATE EXTENSION on the coordinator creates it on the nodes), and may the job's owner connect to them?".into()),
            ),
        )
    };
    let (id, answer) = match remote_id(job) {
        None => match send_lane(job, spec, shard) {
            Ok(Lane::Found(answer)) => match serde_json::from_str::<Seen>(&answer)
                .ok()
                .and_then(|s| s.job_id)
            {
                Some(id) => {
                    as_owner(|| jobs::set_cursor(job.id, &[id.to_string()]));
                    (id, answer)
                }
                None => return refused(format!("it answered {answer:?}")),
            },
            Ok(Lane::Sent) => return looking(driver, None),
            Ok(Lane::Busy) => {
                return StepReport {
                    state: JobState::Running,
                    done: false,
                    sleep_ms: 50,
                    notice: None,
                }
            }
            Err(NodeError::Unreachable(m)) => return unreachable_node(job, shard, &m),
            Err(NodeError::Refused(m)) => return refused(m),
        },
        Some(id) => {
            // A slice that failed with its shard's job and was retried:
            // retry the shard's job too.
            if job
                .cursor
                .as_ref()
                .is_some_and(|c| c.get(1).map(String::as_str) == Some("failed"))
            {
                let command = control_command(shard, "migrate_retry", id);
                if let Err(end) = ask_node(job, spec, shard, &command, "refused to retry job", id) {
                    return end;
                }
                as_owner(|| jobs::set_cursor(job.id, &[id.to_string()]));
            }
            // Wait there for its end (a second at most), and read it.
            let command = follow_command(&format!("{id}::pg_catalog.int8"));
            match ask_node(job, spec, shard, &command, "could not show job", id) {
                Ok(answer) => (id, answer),
                Err(end) => return end,
            }
        }
    };
    let seen = match serde_json::from_str::<Seen>(&answer) {
        Ok(seen) => seen,
        Err(_) => {
            return fail(
                job,
                &caught(
                    "XX000",
                    format!("job {id} on node {} is gone (it answered {answer:?})", shard.node()),
                    Some("Was it purged or removed on the node?  migrate_retry of this job sends the shard's backfill again.".into()),
                ),
            )
        }
    };
    let estimate = seen.rows_total.unwrap_or(0).max(seen.rows_done);
    let mut mirrored = job.clone();
    mirrored.rows_done = seen.rows_done;
    mirrored.rows_updated = seen.rows_updated;
    match JobState::parse(&seen.state) {
        Some(JobState::Succeeded) => {
            as_owner(|| {
                jobs::set_totals(
                    job.id,
                    seen.rows_done,
                    seen.rows_updated,
                    0,
                    seen.skipped.unwrap_or(0),
                )
            });
            succeed(&mirrored)
        }
        Some(JobState::Failed) | Some(JobState::Cancelled) => {
            as_owner(|| jobs::set_cursor(job.id, &[id.to_string(), "failed".into()]));
            fail(
                job,
                &Caught {
                    sqlstate: "XX000".into(),
                    message: format!(
                        "job {id} on node {} ({display}) {}: {}",
                        shard.node(),
                        seen.state,
                        seen.error.unwrap_or_default()
                    ),
                    detail: None,
                    hint: Some(format!(
                        "migrate_progress on node {} shows it; migrate_retry of this job retries it there.",
                        shard.node()
                    )),
                },
            )
        }
        Some(JobState::Paused) => {
            let reason = format!(
                "job {id} on {} ({display}) is paused there; migrate_resume of this job resumes it",
                shard.node()
            );
            as_owner(|| {
                jobs::mirror(
                    job.id,
                    seen.rows_done,
                    seen.rows_updated,
                    estimate,
                    Some(&reason),
                )
            });
            StepReport {
                state: JobState::Running,
                done: false,
                sleep_ms: NODE_AGAIN_MS,
                notice: None,
            }
        }
        _ => {
            let reason = format!(
                "job {id} on {} backfills {display}: {}{}",
                shard.node(),
                seen.state,
                seen.wait_reason
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            );
            as_owner(|| {
                jobs::mirror(
                    job.id,
                    seen.rows_done,
                    seen.rows_updated,
                    estimate,
                    Some(&reason),
                )
            });
            looking(
                driver,
                Some(rules::progress_line(job.id, seen.rows_done, estimate, None)),
            )
        }
    }
}

fn looking(driver: Driver, line: Option<String>) -> StepReport {
    StepReport {
        state: JobState::Running,
        done: false,
        sleep_ms: 0,
        notice: match driver {
            Driver::Session => line,
            Driver::Worker => None,
        },
    }
}

/// The node went away (a restart, a network cut): say so and look again
/// later; the node's job goes on by itself when the node is back.
fn unreachable_node(job: &Job, shard: &RemoteShard, message: &str) -> StepReport {
    let reason = format!("node {} cannot be reached: {message}", shard.node());
    as_owner(|| jobs::throttled(job.id, &reason, NODE_AGAIN_MS));
    StepReport {
        state: JobState::Waiting,
        done: false,
        sleep_ms: NODE_AGAIN_MS,
        notice: None,
    }
}

/// When the slice was queued, as text: with the shard's name and command,
/// it names the job the slice sends to its node.
fn created_at(id: i64) -> String {
    use crate::catalog::SpiOrBug;
    crate::sys::pinned(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT j.created_at::pg_catalog.text FROM pgmigrate.jobs j WHERE j.job_id OPERATOR(pg_catalog.=) $1",
                    None,
                    &[id.into()],
                )?
                .first()
                .get_one::<String>()
        })
    })
    .or_bug("reading a slice")
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use crate::engine::keyset::{BackfillSpec, KeyColumn, Walk};
    use crate::engine::shards::RemoteShard;
    use crate::kinds::backfill::citus::{lane_command, lane_ids};

    fn spec() -> BackfillSpec {
        BackfillSpec {
            set_clause: "n = n + 1".into(),
            where_clause: None,
            walk: Walk::Key {
                columns: vec![KeyColumn {
                    name: "id".into(),
                    type_name: "\"pg_catalog\".\"int8\"".into(),
                    has_max: true,
                }],
            },
            sleep_ms: 0,
            lock_timeout_ms: 1000,
            statement_timeout_ms: 0,
            max_retries: 3,
            settings: vec![("TimeZone".into(), "UTC".into())],
            fixed_batch_size: None,
            pace: Default::default(),
            on_error: Default::default(),
            parallel: None,
            remote: None,
        }
    }

    fn shard(id: i64) -> RemoteShard {
        RemoteShard {
            shard_id: id,
            schema: "public".into(),
            table: format!("items_{id}"),
            host: "10.0.0.1".into(),
            port: 5432,
            extension_schema: "public".into(),
            lane: Some(0),
        }
    }

    #[test]
    fn a_lane_goes_in_one_command_each_job_after_the_one_before() {
        let spec = spec();
        let (a, b, c) = (shard(1), shard(2), shard(3));
        let slices = vec![
            (&spec, &a, "2026-12-06 00:00:01+00".to_string()),
            (&spec, &b, "2026-12-06 00:00:02+00".to_string()),
            (&spec, &c, "2026-12-06 00:00:03+00".to_string()),
        ];
        let sql = lane_command(&slices, 2, Some(41));
        // The settings once, first; then one queued job per shard.
        assert!(sql.starts_with("WITH _pgm0 AS MATERIALIZED (SELECT pg_catalog.set_config('TimeZone', 'UTC', true))"), "{sql}");
        assert_eq!(sql.matches("\"public\".migrate_backfill(").count(), 3);
        // The first waits for the job before the lane, each next one for
        // the one queued before it.
        assert!(
            sql.contains("after_jobs => ARRAY[41]::pg_catalog.int8[]"),
            "{sql}"
        );
        assert!(sql.contains("after_jobs => ARRAY[_pgm1.ids[pg_catalog.cardinality(_pgm1.ids)]]"));
        assert!(sql.contains("after_jobs => ARRAY[_pgm2.ids[pg_catalog.cardinality(_pgm2.ids)]]"));
        assert!(
            sql.ends_with("SELECT _pgm3.ids::pg_catalog.text FROM _pgm3"),
            "{sql}"
        );
        // Each finds the job an earlier try queued (by its slice's time).
        assert!(sql.contains("'2026-12-06 00:00:02+00'::pg_catalog.timestamptz"));
        assert!(sql.contains("'UPDATE \"public\".\"items_3\" SET"));
        // No operator left to the search_path.
        assert!(!sql.replace("n = n + 1", "").contains(" = "), "{sql}");
        // Without a job before it, the first waits for none.
        let sql = lane_command(&slices[..1], 1, None);
        assert!(!sql.contains("after_jobs"), "{sql}");
    }

    #[test]
    fn lane_answers_parse() {
        assert_eq!(lane_ids("{12,13,14}"), Some(vec![12, 13, 14]));
        assert_eq!(lane_ids(" {7}\n"), Some(vec![7]));
        assert_eq!(lane_ids("{}"), Some(vec![]));
        assert_eq!(lane_ids("{12,x}"), None);
        assert_eq!(lane_ids("12"), None);
    }
}
