//! Retention: the workers purge finished jobs (with their batches, skipped
//! rows and index builds), batch logs and migrate_exec attempts older than
//! pg_migrate.retention; migration history is never purged, unfinished jobs
//! stay, and a finished job that a waiting job's gate names stays too.

mod common;

use common::{stays_for, wait_until, Cluster};
use std::time::Duration;

fn count(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[test]
fn the_workers_purge_what_retention_no_longer_keeps_and_nothing_else() {
    let cluster = Cluster::start_with("retention", &["pg_migrate.naptime=1"]);
    let mut c = cluster.create_db("keep");
    c.batch_execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0);
         INSERT INTO t (id) SELECT g FROM generate_series(1, 5000) g;
         SELECT migrate_record('shop', '0001_initial');",
    )
    .unwrap();
    let done: i64 = c
        .query_one("SELECT migrate_backfill('t', 'n = n + 1', batch_size => 1000, migration => ARRAY['shop', '0002_fill'])", &[])
        .unwrap()
        .get(0);
    let failed: i64 = c
        .query_one("SELECT migrate_backfill('t', 'n = n / (id - id)')", &[])
        .unwrap()
        .get(0);
    c.batch_execute("CALL migrate_exec('ALTER TABLE t ADD COLUMN note text')")
        .unwrap();
    wait_until("both jobs to end", Duration::from_secs(60), || {
        let ended = count(
            &mut c,
            &format!("SELECT count(*) FROM migrate_progress WHERE job_id IN ({done}, {failed}) AND state IN ('succeeded', 'failed')"),
        );
        (ended == 2).then_some(())
    });
    // A job that waits for the failed one keeps it; one not due stays.
    let gated: i64 = c
        .query_one(
            &format!("SELECT migrate_backfill('t', 'n = n', after_jobs => ARRAY[{failed}])"),
            &[],
        )
        .unwrap()
        .get(0);
    let later: i64 = c
        .query_one(
            "SELECT migrate_backfill('t', 'n = n', run_at => now() + interval '1 day')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM migrate_batches WHERE job_id = {done}")
        ) >= 5
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM migrate_exec_log"), 1);
    let history = count(&mut c, "SELECT count(*) FROM migrate_events");

    // With the default (30 days) nothing goes.
    stays_for("every job to stay", Duration::from_secs(3), || {
        count(&mut c, "SELECT count(*) FROM migrate_progress") == 4
    });

    c.batch_execute("ALTER SYSTEM SET pg_migrate.retention = '2s'")
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until(
        "the finished job to be purged",
        Duration::from_secs(90),
        || {
            (count(
                &mut c,
                &format!("SELECT count(*) FROM migrate_progress WHERE job_id = {done}"),
            ) == 0)
                .then_some(())
        },
    );
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM migrate_batches WHERE job_id = {done}")
        ),
        0
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM migrate_exec_log"), 0);
    // Kept: the failed job a gate names, the two waiting, all history.
    let left: Vec<i64> = c
        .query("SELECT job_id FROM migrate_progress ORDER BY job_id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![failed, gated, later]);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM migrate_events"),
        history
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM migrate_history WHERE name = '0002_fill' AND status = 'applied'"
        ),
        1
    );
    assert!(cluster
        .log()
        .contains("pg_migrate: purged 1 finished job(s)"));

    // Once the gated job is cancelled, the failed one goes too (with the
    // cancelled one, after its own retention).
    c.batch_execute(&format!("SELECT migrate_cancel({gated})"))
        .unwrap();
    wait_until(
        "the failed and cancelled jobs to be purged",
        Duration::from_secs(150),
        || {
            let left = count(&mut c, "SELECT count(*) FROM migrate_progress");
            (left == 1).then_some(())
        },
    );
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT count(*) FROM migrate_progress WHERE job_id = {later}")
        ),
        1
    );
}
