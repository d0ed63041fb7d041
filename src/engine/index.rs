//! Index jobs as pure logic: what a job builds, drops or rebuilds, how a
//! failed attempt is handled, how long to wait before the next one, and
//! how a build's progress reads.

use crate::engine::keyset::{display_qualified, quote_ident};
use crate::engine::pace::WindowSpec;
use serde::{Deserialize, Serialize};

/// What an index job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexAction {
    /// CREATE INDEX CONCURRENTLY
    Create,
    /// DROP INDEX CONCURRENTLY
    Drop,
    /// REINDEX INDEX CONCURRENTLY
    Reindex,
}

impl IndexAction {
    /// What one run of it is called in messages.
    pub fn noun(self) -> &'static str {
        match self {
            IndexAction::Create => "build",
            IndexAction::Drop => "drop",
            IndexAction::Reindex => "rebuild",
        }
    }
}

/// Everything a worker needs to run an index job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSpec {
    pub action: IndexAction,
    /// Create: the statement to run, CONCURRENTLY and named.  Drop and
    /// reindex: written at each run from the index's current name.
    #[serde(default)]
    pub statement: String,
    /// The index: its schema and name when the job was submitted.
    pub schema: String,
    pub name: String,
    #[serde(default)]
    pub if_not_exists: bool,
    pub max_retries: i32,
    /// The wait before the first retry; it doubles for each next one.
    pub retry_delay_ms: i64,
    /// The longest the statement waits for any one lock or older
    /// transaction (its lock_timeout); 0: as long as it takes.
    pub max_wait_ms: i64,
    #[serde(default)]
    pub window: Option<WindowSpec>,
    /// Reindex: run again at every match of this cron expression.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The submitter's session settings the statement runs under.
    pub settings: Vec<(String, String)>,
    /// CALL migrate_run asked for the next run now, whatever the window.
    #[serde(default)]
    pub run_now: bool,
    /// Create on a partitioned table: `statement` creates the index ON ONLY
    /// the table, and each partition gets its own, attached to it.
    #[serde(default)]
    pub partitioned: bool,
}

/// The statement that runs a drop or reindex job, from the index's current
/// schema and name.
pub fn statement_for(
    action: IndexAction,
    schema: &str,
    name: &str,
    spec_statement: &str,
) -> String {
    let index = display_qualified(schema, name);
    match action {
        IndexAction::Create => spec_statement.to_string(),
        IndexAction::Drop => format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"),
        IndexAction::Reindex => format!("REINDEX INDEX CONCURRENTLY {index}"),
    }
}

/// The start of a CREATE INDEX statement up to its table name: every
/// clause the parser read before the table, written out again, with
/// CONCURRENTLY and the index name always present.
pub fn create_prefix(
    unique: bool,
    concurrently: bool,
    if_not_exists: bool,
    name: &str,
    only: bool,
) -> String {
    format!(
        "CREATE {}INDEX {}{}{} ON {}",
        if unique { "UNIQUE " } else { "" },
        if concurrently { "CONCURRENTLY " } else { "" },
        if if_not_exists { "IF NOT EXISTS " } else { "" },
        quote_ident(name),
        if only { "ONLY " } else { "" }
    )
}

/// How long a drop of a partitioned index waits for any one of its locks
/// unless the job says (ACCESS EXCLUSIVE on the table and each partition:
/// a drop that waits holds up every query behind it).
pub const PARTITIONED_DROP_WAIT_MS: i64 = 2000;

/// The statement of a drop job: CONCURRENTLY, unless the index is a
/// partitioned table's, which PostgreSQL 15 drops only without it.
pub fn drop_statement(schema: &str, name: &str, partitioned: bool) -> String {
    if partitioned {
        format!("DROP INDEX IF EXISTS {}", display_qualified(schema, name))
    } else {
        statement_for(IndexAction::Drop, schema, name, "")
    }
}

/// The name of the index a job on a partitioned table gives partition
/// `table` (oid `oid`) for its index `index`: `{table}_{index}`, or, when
/// that is longer than PostgreSQL's 63 bytes, cut and ended with the
/// partition's oid, so that the same partition always gets the same name
/// (a job that resumes finds what it built) and two cut names differ.
pub fn partition_index_name(table: &str, index: &str, oid: u32) -> String {
    const LIMIT: usize = 63;
    let full = format!("{table}_{index}");
    if full.len() <= LIMIT {
        return full;
    }
    let tail = format!("_{oid}");
    let mut cut = LIMIT - tail.len();
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tail}", &full[..cut])
}

/// The statement that gives a partition (`table`, written qualified) the
/// index `name` matching a partitioned index, from the partitioned index's
/// `pg_get_indexdef` and the head of it that names that index and its table
/// (`CREATE [UNIQUE ]INDEX name ON ONLY schema.table `).  A leaf gets
/// CONCURRENTLY; a partitioned partition gets its own index ON ONLY it.
/// None if the definition does not start with `head`.
pub fn partition_statement(
    definition: &str,
    head: &str,
    unique: bool,
    name: &str,
    table: &str,
    leaf: bool,
) -> Option<String> {
    let rest = definition.strip_prefix(head)?;
    Some(format!(
        "{}{table} {rest}",
        create_prefix(unique, leaf, false, name, !leaf)
    ))
}

/// Where one partition stands, for `next_partition_step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionState {
    pub leaf: bool,
    /// Its parent's index in the job's tree exists.
    pub parent_indexed: bool,
    /// It has an index attached to the tree.
    pub attached: bool,
    /// The index the job names for it exists, not attached: valid or not.
    pub named: Option<bool>,
}

/// What a job on a partitioned table does next, for the partition at the
/// index given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionStep {
    /// A partitioned partition: create its index ON ONLY it.
    CreateOnly(usize),
    /// Its index is there (a leaf's valid; a partitioned partition's
    /// always, valid once its own partitions' are attached): attach it.
    Attach(usize),
    /// A leaf: build its index concurrently (dropping an invalid one an
    /// interrupted build left first).
    Build(usize),
    /// Every partition's index is attached.
    Done,
}

/// The next step, partitions taken parents first: nothing is built twice
/// (a leaf whose index is there is only attached), and a partition whose
/// parent has no index yet waits for its parent's step.
pub fn next_partition_step(parts: &[PartitionState]) -> PartitionStep {
    for (i, p) in parts.iter().enumerate() {
        if p.attached || !p.parent_indexed {
            continue;
        }
        return match (p.leaf, p.named) {
            (false, Some(_)) | (true, Some(true)) => PartitionStep::Attach(i),
            (false, None) => PartitionStep::CreateOnly(i),
            (true, _) => PartitionStep::Build(i),
        };
    }
    PartitionStep::Done
}

/// The middle part of a default index name, as PostgreSQL writes it: the
/// column names (or "expr") joined by underscores.
pub fn name_addition(columns: &[String]) -> String {
    // PostgreSQL stops adding names at NAMEDATALEN - 1 bytes; the caller's
    // ChooseRelationName truncates the whole name to fit.
    const LIMIT: usize = 63;
    let mut out = String::new();
    for c in columns {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(c);
        if out.len() >= LIMIT {
            break;
        }
    }
    out
}

/// Index column names as PostgreSQL gives them to a new index: a name
/// seen before gets a number ("a", "a1", "a2").
pub fn unique_column_names(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        let mut candidate = n.clone();
        let mut i = 0;
        while out.contains(&candidate) {
            i += 1;
            candidate = format!("{n}{i}");
        }
        out.push(candidate);
    }
    out
}

/// How an attempt that raised an error ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    /// Transient: clean up and try again later, if retries are left.
    Retry(&'static str),
    /// Wrong data, definition or privileges: the job fails now.
    Fail,
}

/// Classify a failed statement by SQLSTATE.
pub fn classify(sqlstate: &str) -> AttemptEnd {
    match sqlstate {
        "55P03" => AttemptEnd::Retry("lock timeout"),
        "40P01" => AttemptEnd::Retry("deadlock"),
        "40001" => AttemptEnd::Retry("serialization failure"),
        // A cancel nobody asked for through pg_migrate (pg_cancel_backend
        // on the worker, a recovery conflict): the build is not at fault.
        "57014" => AttemptEnd::Retry("cancelled"),
        "57P01" => AttemptEnd::Retry("administrator command"),
        s if s.starts_with("53") => AttemptEnd::Retry("insufficient resources"),
        s if s.starts_with("58") => AttemptEnd::Retry("system error"),
        _ => AttemptEnd::Fail,
    }
}

/// Wait before retry `attempt` (1, 2, ...): `first_ms`, doubling, at most
/// an hour.
pub fn retry_backoff_ms(first_ms: i64, attempt: i32) -> i64 {
    let doublings = (attempt.max(1) - 1).min(20) as u32;
    first_ms
        .max(0)
        .saturating_mul(1i64 << doublings)
        .min(3_600_000)
}

/// The phase names of `pg_stat_progress_create_index` (parameter 10), for
/// a build whose progress this backend read itself.
pub fn phase_name(phase: i64) -> &'static str {
    match phase {
        0 => "initializing",
        1 => "waiting for writers before build",
        2 => "building index",
        3 => "waiting for writers before validation",
        4 => "index validation: scanning index",
        5 => "index validation: sorting tuples",
        6 => "index validation: scanning table",
        7 => "waiting for old snapshots",
        8 => "waiting for readers before marking dead",
        9 => "waiting for readers before dropping",
        _ => "unknown phase",
    }
}

/// Did the statement wait for another transaction in this phase?
pub fn is_wait_phase(phase: i64) -> bool {
    matches!(phase, 1 | 3 | 7 | 8 | 9)
}

/// Why an attempt that waited too long ended, for the job's error.
pub fn waited_too_long(max_wait_ms: i64, phase: Option<i64>, blocker: Option<&str>) -> String {
    let limit = crate::engine::jobs::human_seconds(max_wait_ms as f64 / 1000.0);
    match (phase, blocker) {
        (Some(p), Some(b)) if is_wait_phase(p) => {
            format!(
                "waited longer than max_wait ({limit}) {}: {b}",
                phase_name(p)
            )
        }
        (_, Some(b)) => format!("waited longer than max_wait ({limit}) for a lock held by {b}"),
        _ => format!("waited longer than max_wait ({limit}) for a lock"),
    }
}

/// What a build reports now (pg_stat_progress_create_index, read through
/// pgmigrate.build_progress).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildProgress {
    pub phase: Option<String>,
    pub blocks_done: Option<i64>,
    pub blocks_total: Option<i64>,
    pub tuples_done: Option<i64>,
    pub tuples_total: Option<i64>,
    pub waiting_for: Option<String>,
}

/// A progress line for NOTICEs: "job 7: building index: scanning table,
/// 1,200 of 5,000 blocks (24.0%)".
pub fn progress_line(job_id: i64, p: &BuildProgress, fallback: &str) -> String {
    use crate::engine::jobs::{percent, thousands};
    let Some(phase) = &p.phase else {
        return format!("job {job_id}: {fallback}");
    };
    let mut s = format!("job {job_id}: {phase}");
    let counted = |done: Option<i64>, total: Option<i64>, unit: &str| match (done, total) {
        (Some(d), Some(t)) if t > 0 => Some(format!(
            "{} of {} {unit} ({:.1}%)",
            thousands(d),
            thousands(t),
            percent(d, t, false)
        )),
        _ => None,
    };
    if let Some(w) = &p.waiting_for {
        s.push_str(&format!(", waiting for {w}"));
    } else if let Some(c) = counted(p.blocks_done, p.blocks_total, "blocks")
        .or_else(|| counted(p.tuples_done, p.tuples_total, "tuples"))
    {
        s.push_str(&format!(", {c}"));
    }
    s
}

/// A job's state after a run that succeeded: a schedule queues it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterSuccess {
    Finished,
    Again,
}

pub fn after_success(spec: &IndexSpec) -> AfterSuccess {
    if spec.schedule.is_some() {
        AfterSuccess::Again
    } else {
        AfterSuccess::Finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(action: IndexAction) -> IndexSpec {
        IndexSpec {
            action,
            statement: String::new(),
            schema: "public".into(),
            name: "orders_created_idx".into(),
            if_not_exists: false,
            max_retries: 3,
            retry_delay_ms: 60_000,
            max_wait_ms: 0,
            window: None,
            schedule: None,
            settings: vec![("search_path".into(), "public".into())],
            run_now: false,
            partitioned: false,
        }
    }

    #[test]
    fn statements_name_the_index_quoted() {
        assert_eq!(
            statement_for(IndexAction::Drop, "public", "Odd \"idx\"", ""),
            "DROP INDEX CONCURRENTLY IF EXISTS public.\"Odd \"\"idx\"\"\""
        );
        assert_eq!(
            statement_for(IndexAction::Reindex, "s", "i", ""),
            "REINDEX INDEX CONCURRENTLY s.i"
        );
        assert_eq!(
            statement_for(
                IndexAction::Create,
                "s",
                "i",
                "CREATE INDEX CONCURRENTLY ..."
            ),
            "CREATE INDEX CONCURRENTLY ..."
        );
    }

    #[test]
    fn partition_steps_go_parents_first_and_never_build_twice() {
        let p = |leaf, parent_indexed, attached, named| PartitionState {
            leaf,
            parent_indexed,
            attached,
            named,
        };
        // A sub-partitioned partition without its index, and its leaf.
        let tree = [p(false, true, false, None), p(true, false, false, None)];
        assert_eq!(next_partition_step(&tree), PartitionStep::CreateOnly(0));
        let tree = [
            p(false, true, false, Some(false)),
            p(true, false, false, None),
        ];
        assert_eq!(next_partition_step(&tree), PartitionStep::Attach(0));
        let tree = [p(false, true, true, None), p(true, true, false, None)];
        assert_eq!(next_partition_step(&tree), PartitionStep::Build(1));
        // Built before a restart, not attached yet: attach, do not build.
        let tree = [p(true, true, true, None), p(true, true, false, Some(true))];
        assert_eq!(next_partition_step(&tree), PartitionStep::Attach(1));
        // An interrupted build left it invalid: build again.
        let tree = [p(true, true, false, Some(false))];
        assert_eq!(next_partition_step(&tree), PartitionStep::Build(0));
        let tree = [p(false, true, true, None), p(true, true, true, None)];
        assert_eq!(next_partition_step(&tree), PartitionStep::Done);
        assert_eq!(next_partition_step(&[]), PartitionStep::Done);
    }

    #[test]
    fn partitions_get_stable_names_within_63_bytes() {
        assert_eq!(
            partition_index_name("m_2024_01", "m_created_idx", 16384),
            "m_2024_01_m_created_idx"
        );
        let long = "x".repeat(40);
        let a = partition_index_name(&long, &"i".repeat(30), 16384);
        assert_eq!(a.len(), 63);
        assert!(a.ends_with("_16384"), "{a}");
        assert_eq!(a, partition_index_name(&long, &"i".repeat(30), 16384));
        assert_ne!(a, partition_index_name(&long, &"i".repeat(30), 16385));
        // Cut at a character boundary.
        let b = partition_index_name(&"é".repeat(40), "i", 7);
        assert!(b.len() <= 63 && b.ends_with("_7"), "{b}");
    }

    #[test]
    fn partition_statements_follow_the_partitioned_index() {
        let def = "CREATE UNIQUE INDEX m_key ON ONLY public.m USING btree (id, at) WHERE (id > 0)";
        let head = "CREATE UNIQUE INDEX m_key ON ONLY public.m ";
        assert_eq!(
            partition_statement(def, head, true, "m_1_m_key", "public.m_1", true).as_deref(),
            Some("CREATE UNIQUE INDEX CONCURRENTLY \"m_1_m_key\" ON public.m_1 USING btree (id, at) WHERE (id > 0)")
        );
        assert_eq!(
            partition_statement(def, head, true, "m_2_m_key", "public.m_2", false).as_deref(),
            Some("CREATE UNIQUE INDEX \"m_2_m_key\" ON ONLY public.m_2 USING btree (id, at) WHERE (id > 0)")
        );
        assert_eq!(
            partition_statement(
                def,
                "CREATE INDEX other ON ONLY public.m ",
                false,
                "x",
                "public.m_1",
                true
            ),
            None
        );
    }

    #[test]
    fn prefix_keeps_every_clause_before_the_table() {
        assert_eq!(
            create_prefix(false, true, false, "t_a_idx", false),
            "CREATE INDEX CONCURRENTLY \"t_a_idx\" ON "
        );
        assert_eq!(
            create_prefix(true, true, true, "u", true),
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS \"u\" ON ONLY "
        );
    }

    #[test]
    fn default_names_join_columns() {
        let cols = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(name_addition(&cols(&["a", "b"])), "a_b");
        assert_eq!(name_addition(&cols(&["lower", "expr"])), "lower_expr");
        let long = name_addition(&cols(&[&"x".repeat(40), &"y".repeat(40), "z"]));
        assert_eq!(long.len(), 81, "stops after the name that crosses 63 bytes");
        assert!(!long.ends_with('z'));
        assert_eq!(
            unique_column_names(&cols(&["expr", "a", "expr", "expr"])),
            cols(&["expr", "a", "expr1", "expr2"])
        );
    }

    #[test]
    fn failures_retry_only_when_transient() {
        assert_eq!(classify("55P03"), AttemptEnd::Retry("lock timeout"));
        assert_eq!(classify("40P01"), AttemptEnd::Retry("deadlock"));
        assert_eq!(classify("57014"), AttemptEnd::Retry("cancelled"));
        assert_eq!(
            classify("53100"),
            AttemptEnd::Retry("insufficient resources")
        );
        assert_eq!(
            classify("23505"),
            AttemptEnd::Fail,
            "a duplicate key fails at once"
        );
        assert_eq!(classify("42P07"), AttemptEnd::Fail);
        assert_eq!(classify("42501"), AttemptEnd::Fail);
        assert_eq!(classify("XX000"), AttemptEnd::Fail);
    }

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(retry_backoff_ms(60_000, 1), 60_000);
        assert_eq!(retry_backoff_ms(60_000, 2), 120_000);
        assert_eq!(retry_backoff_ms(60_000, 4), 480_000);
        assert_eq!(retry_backoff_ms(60_000, 10), 3_600_000);
        assert_eq!(retry_backoff_ms(1_000, 0), 1_000);
        assert_eq!(retry_backoff_ms(1_000, 1000), 3_600_000);
    }

    #[test]
    fn phases_read_as_postgres_names_them() {
        assert_eq!(phase_name(2), "building index");
        assert_eq!(phase_name(7), "waiting for old snapshots");
        assert_eq!(phase_name(42), "unknown phase");
        assert!(is_wait_phase(1) && is_wait_phase(3) && is_wait_phase(7));
        assert!(!is_wait_phase(2) && !is_wait_phase(0));
    }

    #[test]
    fn a_long_wait_names_what_it_waited_for() {
        assert_eq!(
            waited_too_long(10_000, Some(1), Some("pid 42, application 'report'")),
            "waited longer than max_wait (10 s) waiting for writers before build: pid 42, application 'report'"
        );
        assert_eq!(
            waited_too_long(90_000, Some(0), Some("pid 7")),
            "waited longer than max_wait (1 min 30 s) for a lock held by pid 7"
        );
        assert_eq!(
            waited_too_long(1_000, None, None),
            "waited longer than max_wait (1 s) for a lock"
        );
    }

    #[test]
    fn progress_lines_say_phase_and_counts() {
        let mut p = BuildProgress {
            phase: Some("building index: scanning table".into()),
            blocks_done: Some(1_200),
            blocks_total: Some(5_000),
            ..Default::default()
        };
        assert_eq!(
            progress_line(7, &p, "running"),
            "job 7: building index: scanning table, 1,200 of 5,000 blocks (24.0%)"
        );
        p.blocks_total = Some(0);
        p.tuples_done = Some(10);
        p.tuples_total = Some(40);
        assert_eq!(
            progress_line(7, &p, "running"),
            "job 7: building index: scanning table, 10 of 40 tuples (25.0%)"
        );
        p.phase = Some("waiting for writers before build".into());
        p.waiting_for = Some("pid 42, application 'report'".into());
        assert_eq!(
            progress_line(7, &p, "running"),
            "job 7: waiting for writers before build, waiting for pid 42, application 'report'"
        );
        assert_eq!(
            progress_line(7, &BuildProgress::default(), "cleaning up"),
            "job 7: cleaning up"
        );
    }

    #[test]
    fn schedules_queue_the_job_again() {
        let mut s = spec(IndexAction::Reindex);
        assert_eq!(after_success(&s), AfterSuccess::Finished);
        s.schedule = Some("0 3 * * 0".into());
        assert_eq!(after_success(&s), AfterSuccess::Again);
    }

    #[test]
    fn spec_round_trips_and_old_fields_default() {
        let s = spec(IndexAction::Create);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["action"], "create");
        assert_eq!(serde_json::from_value::<IndexSpec>(json).unwrap(), s);
        let minimal = serde_json::json!({
            "action": "drop", "schema": "s", "name": "i", "max_retries": 1,
            "retry_delay_ms": 1000, "max_wait_ms": 0, "settings": []
        });
        let parsed: IndexSpec = serde_json::from_value(minimal).unwrap();
        assert!(!parsed.run_now && parsed.window.is_none() && parsed.statement.is_empty());
    }
}
