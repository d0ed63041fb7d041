//! Throttles, budgets, windows and retries against a real server: a
//! streaming standby for replay lag, a replication slot for retained WAL,
//! a VACUUM held in progress, budgets of rows and WAL, windows.

mod common;

use common::{wait_until, Cluster};
use postgres::Client;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

fn items(c: &mut Client, rows: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE items (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, pad text);
         INSERT INTO items (id, pad) SELECT g, repeat('x', 100) FROM generate_series(1, {rows}) g;
         ANALYZE items;"
    ))
    .unwrap();
}

fn submit(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", common::message(&e)))
        .get(0)
}

fn state(c: &mut Client, id: i64) -> (String, Option<String>) {
    let r = c
        .query_one(
            "SELECT state, wait_reason FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// Wait until the job waits for a reason that starts with `prefix`.
fn wait_reason(c: &mut Client, id: i64, prefix: &str) -> String {
    wait_until(&format!("job {id} to wait for '{prefix}...'"), LONG, || {
        let (s, reason) = state(c, id);
        assert_ne!(s, "failed", "job {id} failed");
        reason.filter(|r| s == "waiting" && r.starts_with(prefix))
    })
}

fn wait_done(c: &mut Client, id: i64) {
    wait_until(&format!("job {id} to succeed"), LONG, || {
        let (s, _) = state(c, id);
        assert_ne!(s, "failed", "job {id} failed");
        (s == "succeeded").then_some(())
    })
}

fn throttled_ms(c: &mut Client, id: i64) -> f64 {
    c.query_one("SELECT extract(epoch FROM throttled)::float8 * 1000 FROM migrate_progress WHERE job_id = $1", &[&id])
        .unwrap()
        .get(0)
}

fn assert_once(c: &mut Client, rows: i64) {
    let n: i64 = c
        .query_one("SELECT count(*) FROM items WHERE n = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, rows, "every row updated exactly once");
}

#[test]
fn replica_lag_pauses_a_job_until_the_standby_catches_up() {
    let primary = Cluster::start("lag-primary");
    let mut p = primary.create_db("app");
    items(&mut p, 60_000);
    let standby = Cluster::standby_of(&primary, "lag-standby", &["hot_standby=on"]);
    let mut s = standby.connect("app");
    wait_until("the standby to stream", LONG, || {
        let n: i64 = p
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 1).then_some(())
    });
    s.batch_execute("SELECT pg_wal_replay_pause()").unwrap();
    let id = submit(
        &mut p,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 500, sleep_ms => 50, max_replay_lag => '500 ms')",
    );
    let reason = wait_reason(&mut p, id, "replica lag: standby ");
    assert!(reason.contains("(limit 0.5 s)"), "{reason}");
    let before: i64 = p
        .query_one(
            "SELECT rows_done FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    s.batch_execute("SELECT pg_wal_replay_resume()").unwrap();
    wait_done(&mut p, id);
    assert!(before < 60_000, "it paused before the end");
    assert!(
        throttled_ms(&mut p, id) >= 1000.0,
        "time throttled is counted"
    );
    assert_once(&mut p, 60_000);
}

#[test]
fn a_replication_slot_holding_wal_pauses_a_job() {
    let cluster = Cluster::start("slot");
    let mut c = cluster.create_db("app");
    items(&mut c, 40_000);
    c.batch_execute("SELECT pg_create_physical_replication_slot('lagging_consumer', true)")
        .unwrap();
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 1000, max_slot_wal => '1MB')",
    );
    let reason = wait_reason(&mut c, id, "replication slot lagging_consumer holds back ");
    assert!(reason.ends_with("of WAL (limit 1.0 MB)"), "{reason}");
    c.batch_execute("SELECT pg_drop_replication_slot('lagging_consumer')")
        .unwrap();
    wait_done(&mut c, id);
    assert_once(&mut c, 40_000);
}

#[test]
fn a_vacuum_on_the_table_pauses_a_job_when_asked() {
    let cluster = Cluster::start("vacuum");
    let mut c = cluster.create_db("app");
    items(&mut c, 20_000);
    // An open cursor pins the first page; VACUUM (FREEZE) must wait for it,
    // and stays in pg_stat_progress_vacuum meanwhile.
    let mut holder = cluster.connect("app");
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("DECLARE c CURSOR FOR SELECT * FROM items; FETCH 1 FROM c;")
        .unwrap();
    let vacuum_cluster_url = cluster.url("app");
    let vacuum = std::thread::spawn(move || {
        let mut v = Client::connect(&vacuum_cluster_url, postgres::NoTls).unwrap();
        v.batch_execute("VACUUM (FREEZE, DISABLE_PAGE_SKIPPING) items")
            .unwrap();
    });
    wait_until("VACUUM to be in progress", LONG, || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_progress_vacuum WHERE relid = 'items'::regclass",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 1).then_some(())
    });
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', pause_during_vacuum => true)",
    );
    let reason = wait_reason(&mut c, id, "VACUUM is working on the table (pid ");
    assert!(reason.ends_with(')'), "{reason}");
    tx.commit().unwrap();
    vacuum.join().unwrap();
    wait_done(&mut c, id);
    assert_once(&mut c, 20_000);
}

#[test]
fn a_rows_per_second_budget_holds() {
    let cluster = Cluster::start("rows-budget");
    let mut c = cluster.create_db("app");
    items(&mut c, 6_000);
    let t0 = Instant::now();
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', max_rows_per_second => 2000)",
    );
    wait_reason(&mut c, id, "rate limit: 2,000 rows/s");
    wait_done(&mut c, id);
    let secs = t0.elapsed().as_secs_f64();
    // 6,000 rows at 2,000 rows/s: 3 s, less the wait after the last batch.
    assert!(secs >= 2.5, "finished in {secs} s");
    let size: i32 = c
        .query_one(
            "SELECT max(batch_size) FROM migrate_batches WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(
        size <= 400,
        "batches stay small under a budget (2,000 rows/s x 200 ms): {size}"
    );
    assert_once(&mut c, 6_000);
}

#[test]
fn a_rows_budget_counts_rows_written_not_keys_walked() {
    let cluster = Cluster::start("rows-written");
    let mut c = cluster.create_db("app");
    items(&mut c, 20_000);
    let t0 = Instant::now();
    // A fifth of the keys match: 4,000 rows to write at 2,000 rows/s is
    // about 2 s; counting the 20,000 keys walked would take 10 s.
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', 'id % 5 = 0', max_rows_per_second => 2000)",
    );
    wait_done(&mut c, id);
    let secs = t0.elapsed().as_secs_f64();
    let n: i64 = c
        .query_one("SELECT count(*) FROM items WHERE n = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 4_000);
    assert!(
        (1.5..6.0).contains(&secs),
        "4,000 rows written at 2,000 rows/s took {secs:.1} s"
    );
}

#[test]
fn a_wal_budget_holds() {
    let cluster = Cluster::start("wal-budget");
    let mut c = cluster.create_db("app");
    items(&mut c, 8_000);
    let t0 = Instant::now();
    let id = submit(&mut c, "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 500, max_wal_per_second => '400kB')");
    wait_reason(&mut c, id, "WAL budget: 400.0 kB/s");
    wait_done(&mut c, id);
    let wal: i64 = c
        .query_one(
            "SELECT sum(wal_bytes)::bigint FROM migrate_batches WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    let secs = t0.elapsed().as_secs_f64();
    let expected = wal as f64 / (400.0 * 1024.0);
    assert!(
        secs >= expected * 0.8,
        "{wal} bytes of WAL in {secs} s, budget says {expected} s"
    );
    assert_once(&mut c, 8_000);
}

#[test]
fn a_wal_budget_is_spent_in_small_batches_not_bursts() {
    // 200 kB/s over the default 200 ms target: about 40 kB of WAL a batch.
    // Left to itself, the job's batches would grow past 1,000 rows (about
    // 100 kB each here), and every write committed during one would wait
    // for its flush.
    let cluster = Cluster::start("wal-budget-cap");
    let mut c = cluster.create_db("app");
    items(&mut c, 8_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', max_wal_per_second => '200kB')",
    );
    wait_done(&mut c, id);
    let (first, later, batches): (i64, i64, i64) = {
        let r = c
            .query_one(
                "SELECT max(wal_bytes) FILTER (WHERE batch_no = 1)::bigint,
                        max(wal_bytes) FILTER (WHERE batch_no > 1)::bigint, count(*)
                   FROM migrate_batches WHERE job_id = $1",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let per_batch = 200 * 1024 / 5;
    assert!(
        first > per_batch,
        "the first batch ({first} bytes) sets the estimate"
    );
    assert!(
        later <= per_batch * 3 / 2,
        "a batch after the first wrote {later} bytes of WAL; the budget allows {per_batch} per target duration ({batches} batches)"
    );
    assert_once(&mut c, 8_000);
}

#[test]
fn a_lock_timeout_retries_with_a_halved_batch() {
    let cluster = Cluster::start("halve");
    let mut c = cluster.create_db("app");
    items(&mut c, 20_000);
    let mut holder = cluster.connect("app");
    let mut tx = holder.transaction().unwrap();
    tx.execute("SELECT * FROM items WHERE id = 1500 FOR UPDATE", &[])
        .unwrap();
    let id = submit(&mut c, "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 4000, lock_timeout => '100ms')");
    let reason = wait_reason(&mut c, id, "lock timeout; retry 1 of 5 in ");
    assert!(reason.ends_with("with 2,000 rows"), "{reason}");
    let size: i32 = c
        .query_one(
            "SELECT batch_size FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(size, 2000);
    let reason = wait_reason(&mut c, id, "lock timeout; retry 2 of 5 in ");
    assert!(reason.ends_with("with 1,000 rows"), "{reason}");
    tx.commit().unwrap();
    wait_done(&mut c, id);
    assert_once(&mut c, 20_000);
    // a fixed batch size comes back after the narrowed batches got through
    let sizes: Vec<i32> = c
        .query(
            "SELECT batch_size FROM migrate_batches WHERE job_id = $1 ORDER BY batch_no",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sizes[0], 1000, "{sizes:?}");
    assert_eq!(*sizes.last().unwrap(), 4000, "{sizes:?}");
}

#[test]
fn run_at_holds_a_job_until_its_time() {
    let cluster = Cluster::start("run-at");
    let mut c = cluster.create_db("app");
    items(&mut c, 2_000);
    let id = submit(&mut c, "SELECT migrate_backfill('items', 'n = n + 1', run_at => clock_timestamp() + interval '3 seconds')");
    let (s, reason) = state(&mut c, id);
    assert_eq!(s, "queued");
    assert!(reason.unwrap().starts_with("scheduled for "));
    common::stays_for(
        "the job not to start before its time",
        Duration::from_secs(2),
        || state(&mut c, id).0 == "queued",
    );
    wait_done(&mut c, id);
    let ok: bool = c
        .query_one("SELECT started_at >= date_trunc('second', run_at) FROM migrate_progress WHERE job_id = $1", &[&id])
        .unwrap()
        .get(0);
    assert!(ok, "started no earlier than run_at");
    assert_once(&mut c, 2_000);
}

#[test]
fn a_job_runs_only_inside_its_window() {
    let cluster = Cluster::start("window");
    let mut c = cluster.create_db("app");
    items(&mut c, 3_000);
    // Open during even minutes only.  Whatever minute this starts in, the
    // job waits when it is odd and runs when it is even.
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 1000,
                                 window_start => '*/2 * * * *', window_length => '1 minute')",
    );
    let odd: bool = c
        .query_one(
            "SELECT extract(minute FROM clock_timestamp())::int % 2 = 1",
            &[],
        )
        .unwrap()
        .get(0);
    if odd {
        let reason = wait_reason(
            &mut c,
            id,
            "outside its maintenance window (*/2 * * * * for 1 min); it opens at ",
        );
        assert!(!reason.is_empty());
        let worker: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&format!("pg_migrate job {id}")],
            )
            .unwrap()
            .get(0);
        assert_eq!(worker, 0, "no worker waits for a window");
    }
    wait_done(&mut c, id);
    let inside: bool = c
        .query_one(
            "SELECT bool_and(extract(minute FROM finished_at)::int % 2 = 0) FROM migrate_batches WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(inside, "every batch ran inside an even minute");
    assert_once(&mut c, 3_000);
}
