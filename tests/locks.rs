//! Lock-risk analysis against a real server: migrate_analyze, which
//! executes nothing, must agree with migrate_trace, which runs each
//! statement and rolls it back, on the lock mode of every existing table,
//! view and sequence a statement locks and on whether it rewrites a table,
//! for every statement of a broad corpus.  Each statement is analysed and
//! traced in its own committed transaction, against committed fixtures, so
//! no lock is already held when it runs.

mod common;

use common::corpus::{CORPUS, FIXTURES};
use common::Cluster;
use postgres::Client;
use std::collections::BTreeMap;

type Locks = BTreeMap<String, (String, bool)>;

/// Relations that count: tables, partitioned tables, views, materialized
/// views, foreign tables, sequences (not indexes or TOAST tables).
const KINDS: &str = "c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')";

fn analyzed(c: &mut Client, sql: &str) -> (Locks, bool) {
    let rows = c
        .query(
            &format!(
                "SELECT a.relation::text, a.lock_mode, a.rewrites, a.in_transaction
                   FROM migrate_analyze($1) a LEFT JOIN pg_class c ON c.oid = a.relation
                  WHERE a.relation IS NULL OR {KINDS}"
            ),
            &[&sql],
        )
        .unwrap_or_else(|e| panic!("analyze {sql}: {}", common::message(&e)));
    let mut out = Locks::new();
    let mut in_tx = true;
    for r in rows {
        in_tx &= r.get::<_, bool>(3);
        if let Some(rel) = r.get::<_, Option<String>>(0) {
            out.insert(rel, (r.get(1), r.get(2)));
        }
    }
    (out, in_tx)
}

fn traced(c: &mut Client, sql: &str) -> (Locks, bool, Option<String>) {
    let rows = c
        .query(
            &format!(
                "SELECT t.relation::text, t.lock_mode, t.rewrites, t.in_transaction, t.error_sqlstate || ': ' || t.error
                   FROM migrate_trace($1, lock_timeout => '5s') t LEFT JOIN pg_class c ON c.oid = t.relation
                  WHERE t.relation IS NULL OR {KINDS}"
            ),
            &[&sql],
        )
        .unwrap_or_else(|e| panic!("trace {sql}: {}", common::message(&e)));
    let mut out = Locks::new();
    let mut in_tx = true;
    let mut error = None;
    for r in rows {
        in_tx &= r.get::<_, bool>(3);
        if let Some(e) = r.get::<_, Option<String>>(4) {
            error = Some(e);
        }
        if let Some(rel) = r.get::<_, Option<String>>(0) {
            out.insert(
                rel,
                (r.get(1), r.get::<_, Option<bool>>(2).unwrap_or(false)),
            );
        }
    }
    (out, in_tx, error)
}

#[test]
fn analyze_agrees_with_trace_on_every_statement_of_the_corpus() {
    let cluster = Cluster::start("locks_corpus");
    let mut c = cluster.create_db("corpus");
    c.batch_execute(FIXTURES).unwrap();
    c.batch_execute("VACUUM ANALYZE").unwrap();
    let distinct: std::collections::HashSet<&&str> = CORPUS.iter().collect();
    assert_eq!(
        distinct.len(),
        CORPUS.len(),
        "the corpus repeats a statement"
    );
    assert!(
        CORPUS.len() >= 100,
        "the corpus has {} statements",
        CORPUS.len()
    );
    let mut disagreements = vec![];
    for sql in CORPUS {
        let (a, a_tx) = analyzed(&mut c, sql);
        let (t, t_tx, error) = traced(&mut c, sql);
        if !t_tx {
            if a_tx {
                disagreements.push(format!(
                    "{sql}\n    trace: cannot run in a transaction block; analyze: can"
                ));
            }
            continue;
        }
        if let Some(e) = error {
            disagreements.push(format!("{sql}\n    the trace failed: {e}"));
            continue;
        }
        if !a_tx {
            disagreements.push(format!(
                "{sql}\n    analyze: cannot run in a transaction block; trace ran it"
            ));
        }
        if a != t {
            disagreements.push(format!("{sql}\n    analyze: {a:?}\n    trace:   {t:?}"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} statements disagree:\n{}",
        disagreements.len(),
        CORPUS.len(),
        disagreements.join("\n")
    );
}

fn orders(c: &mut Client) {
    c.batch_execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text);
         INSERT INTO orders SELECT g, 'n' FROM generate_series(1, 1000) g;",
    )
    .unwrap();
}

/// A session that holds ACCESS SHARE on orders in an open transaction
/// until dropped (or until `release`).
struct Holder {
    client: Client,
    pid: i32,
}

impl Holder {
    fn new(cluster: &Cluster, db: &str) -> Holder {
        let mut client = cluster.connect(db);
        client
            .batch_execute(
                "SET application_name = 'long_report'; BEGIN; SELECT count(*) FROM orders;",
            )
            .unwrap();
        let pid = client
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        Holder { client, pid }
    }

    fn release(mut self) {
        self.client.batch_execute("COMMIT").unwrap();
    }
}

#[test]
fn migrate_exec_retries_behind_a_long_transaction_and_records_every_attempt() {
    let cluster = Cluster::start("locks_exec");
    let mut c = cluster.create_db("execdb");
    orders(&mut c);
    let holder = Holder::new(&cluster, "execdb");
    let holder_pid = holder.pid;

    // While the exec waits between attempts, live queries on the table are
    // never stuck behind it: a reader from a third session gets through.
    let url = cluster.url("execdb");
    let exec = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute(
            "CALL migrate_exec('ALTER TABLE orders ADD COLUMN amount int; ALTER TABLE orders ADD COLUMN paid boolean',
                               lock_timeout => '100ms', attempts => 50, retry_delay => '100ms',
                               migration => ARRAY['shop', '0042_amount'])",
        )
    });
    let mut reader = cluster.connect("execdb");
    common::wait_until(
        "two failed attempts",
        std::time::Duration::from_secs(30),
        || {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM migrate_exec_log WHERE outcome = 'lock_timeout'",
                    &[],
                )
                .unwrap()
                .get(0);
            (n >= 2).then_some(())
        },
    );
    reader
        .batch_execute("SET statement_timeout = '1s'; SELECT count(*) FROM orders")
        .expect("a reader is not queued behind migrate_exec");
    holder.release();
    exec.join()
        .unwrap()
        .expect("migrate_exec succeeds once the lock is free");

    let rows = c
        .query(
            "SELECT statement, attempt, outcome, sqlstate, blockers FROM migrate_exec_log ORDER BY statement, attempt",
            &[],
        )
        .unwrap();
    let last = rows
        .iter()
        .filter(|r| r.get::<_, i32>(0) == 1)
        .last()
        .unwrap();
    assert_eq!(last.get::<_, String>(2), "succeeded");
    let timeouts: Vec<_> = rows
        .iter()
        .filter(|r| r.get::<_, String>(2) == "lock_timeout")
        .collect();
    assert!(timeouts.len() >= 2, "{} lock timeouts", timeouts.len());
    for t in &timeouts {
        assert_eq!(t.get::<_, Option<String>>(3).as_deref(), Some("55P03"));
        let who: Option<String> = t.get(4);
        let who = who.expect("the blocker is named");
        assert!(
            who.contains(&format!("pid {holder_pid}")) && who.contains("long_report"),
            "{who}"
        );
    }
    let two: i32 = rows.iter().filter(|r| r.get::<_, i32>(0) == 2).count() as i32;
    assert_eq!(two, 1, "statement 2 ran once, the lock was free by then");
    let cols: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname IN ('amount', 'paid')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(cols, 2);
    let status: String = c
        .query_one(
            "SELECT status FROM migrate_history WHERE app = 'shop' AND name = '0042_amount'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "applied");
}

#[test]
fn migrate_exec_gives_up_after_its_attempts_and_keeps_what_it_did() {
    let cluster = Cluster::start("locks_exec_fail");
    let mut c = cluster.create_db("execdb");
    orders(&mut c);
    c.batch_execute("CREATE TABLE audit (id int)").unwrap();
    let holder = Holder::new(&cluster, "execdb");
    let e = c
        .batch_execute(
            "CALL migrate_exec('ALTER TABLE audit ADD COLUMN at timestamptz; ALTER TABLE orders ADD COLUMN amount int',
                               lock_timeout => '50ms', attempts => 3, retry_delay => '10ms',
                               migration => ARRAY['shop', '0043_audit'])",
        )
        .expect_err("the lock never comes free");
    assert_eq!(common::sqlstate(&e), "55P03");
    let text = common::message(&e) + &common::detail_and_hint(&e);
    assert!(
        text.contains("statement 2 could not get its lock in 3 attempts"),
        "{text}"
    );
    assert!(text.contains(&format!("pid {}", holder.pid)), "{text}");
    holder.release();
    // Statement 1 was committed; statement 2 never ran.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'audit'::regclass AND attname = 'at'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let attempts: i64 = c
        .query_one(
            "SELECT count(*) FROM migrate_exec_log WHERE statement = 2 AND outcome = 'lock_timeout'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(attempts, 3);
    let (status, error): (String, Option<String>) = {
        let r = c
            .query_one(
                "SELECT status, error FROM migrate_history WHERE app = 'shop' AND name = '0043_audit'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(status, "failed");
    assert!(error.unwrap_or_default().contains("statement 2"));
}

#[test]
fn lock_risk_shows_who_a_planned_statement_and_a_queued_job_would_queue_behind() {
    let cluster = Cluster::start_with("locks_risk", &["pg_migrate.max_workers=0"]);
    let mut c = cluster.create_db("riskdb");
    orders(&mut c);
    let job: i64 = c
        .query_one(
            "SELECT migrate_create_index('CREATE INDEX ON orders (note)')",
            &[],
        )
        .unwrap()
        .get(0);
    let plan: i64 = c
        .query_one(
            "SELECT migrate_plan('ALTER TABLE orders ADD COLUMN amount int', 'release 7')",
            &[],
        )
        .unwrap()
        .get(0);
    // Nobody in the way yet.
    let free: i64 = c
        .query_one(
            "SELECT count(*) FROM migrate_lock_risk WHERE would_queue",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(free, 0);

    let holder = Holder::new(&cluster, "riskdb");
    let rows = c
        .query(
            "SELECT source, id, lock_mode, blocking_pids, oldest_xact_pid, would_queue
               FROM migrate_lock_risk WHERE relation = 'orders'::regclass ORDER BY source",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 2);
    let (j, p) = (&rows[0], &rows[1]);
    assert_eq!(
        (j.get::<_, String>(0), j.get::<_, i64>(1)),
        ("job".into(), job)
    );
    assert_eq!(j.get::<_, String>(2), "ShareUpdateExclusiveLock");
    assert!(
        !j.get::<_, bool>(5),
        "ACCESS SHARE does not stop an index build"
    );
    assert_eq!(
        (p.get::<_, String>(0), p.get::<_, i64>(1)),
        ("planned".into(), plan)
    );
    assert_eq!(p.get::<_, String>(2), "AccessExclusiveLock");
    assert_eq!(p.get::<_, Vec<i32>>(3), vec![holder.pid]);
    assert_eq!(p.get::<_, Option<i32>>(4), Some(holder.pid));
    assert!(p.get::<_, bool>(5));

    let blockers = c
        .query(
            "SELECT pid, application_name, mode, granted FROM migrate_blockers('orders')",
            &[],
        )
        .unwrap();
    assert_eq!(blockers.len(), 1);
    assert_eq!(blockers[0].get::<_, i32>(0), holder.pid);
    assert_eq!(blockers[0].get::<_, String>(1), "long_report");
    let none = c
        .query(
            "SELECT 1 FROM migrate_blockers('orders', 'ROW EXCLUSIVE')",
            &[],
        )
        .unwrap();
    assert!(none.is_empty(), "ACCESS SHARE does not block writers");
    holder.release();
    let removed: i64 = c
        .query_one("SELECT migrate_unplan($1)", &[&plan])
        .unwrap()
        .get(0);
    assert_eq!(removed, 1);
}

#[test]
fn analysis_never_waits_for_a_table_someone_holds_exclusively() {
    let cluster = Cluster::start("locks_nowait");
    let mut c = cluster.create_db("nowait");
    orders(&mut c);
    c.batch_execute("VACUUM ANALYZE orders").unwrap();
    let mut holder = cluster.connect("nowait");
    holder
        .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    c.batch_execute("SET statement_timeout = '3s'").unwrap();
    let row = c
        .query_one(
            "SELECT lock_mode, rewrites, row_estimate, table_bytes > 0
               FROM migrate_analyze('ALTER TABLE orders ALTER COLUMN id TYPE numeric')",
            &[],
        )
        .expect("the analysis does not queue behind the ACCESS EXCLUSIVE lock");
    assert_eq!(row.get::<_, String>(0), "AccessExclusiveLock");
    assert!(row.get::<_, bool>(1));
    assert_eq!(
        row.get::<_, Option<i64>>(2),
        Some(1000),
        "from the statistics"
    );
    assert!(row.get::<_, bool>(3));
    let queued: i64 = c
        .query_one("SELECT count(*) FROM pg_locks WHERE NOT granted", &[])
        .unwrap()
        .get(0);
    assert_eq!(queued, 0);
    holder.batch_execute("ROLLBACK").unwrap();
}
