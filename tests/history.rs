//! Migration history against a real server: several sessions, crashes,
//! dump and restore, a hot standby.

mod common;

use common::{detail_and_hint, message, sqlstate, wait_until, Cluster};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn start(c: &mut postgres::Client, app: &str, name: &str) -> Result<i64, postgres::Error> {
    c.query_one("SELECT migrate_start($1, $2)", &[&app, &name])
        .map(|r| r.get(0))
}

#[test]
fn concurrent_starts_have_exactly_one_winner() {
    let cluster = Arc::new(Cluster::start("race"));
    drop(cluster.create_db("race"));
    const SESSIONS: usize = 8;
    for round in 0..5 {
        let name = format!("0001_round_{round}");
        let barrier = Arc::new(Barrier::new(SESSIONS));
        let handles: Vec<_> = (0..SESSIONS)
            .map(|_| {
                let (cluster, barrier, name) = (cluster.clone(), barrier.clone(), name.clone());
                std::thread::spawn(move || {
                    let mut c = cluster.connect("race");
                    barrier.wait();
                    start(&mut c, "shop", &name).map_err(|e| sqlstate(&e))
                })
            })
            .collect();
        let results: Vec<Result<i64, String>> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(r, "55006", "losers get object_in_use: {results:?}");
        }
        let mut c = cluster.connect("race");
        let running: i64 = c
            .query_one(
                "SELECT count(*) FROM migrate_events WHERE name = $1 AND status = 'running'",
                &[&name],
            )
            .unwrap()
            .get(0);
        assert_eq!(running, 1, "never two running rows");
    }
}

#[test]
fn an_open_transaction_makes_others_fail_fast_then_see_the_outcome() {
    let cluster = Cluster::start("open_tx");
    let mut a = cluster.create_db("deploy");
    let mut b = cluster.connect("deploy");
    let a_pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);

    let mut tx = a.transaction().unwrap();
    let run: i64 = tx
        .query_one("SELECT migrate_start('shop', '0002_orders_status')", &[])
        .unwrap()
        .get(0);

    // B is not blocked behind A's uncommitted work: it is told at once who holds it.
    let t0 = Instant::now();
    let err = start(&mut b, "shop", "0002_orders_status").unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(sqlstate(&err), "55006");
    assert!(
        message(&err).contains("being changed by another session"),
        "{}",
        message(&err)
    );
    assert!(
        detail_and_hint(&err).contains(&format!("Backend {a_pid}")),
        "{}",
        detail_and_hint(&err)
    );

    tx.execute("ALTER TABLE pg_class RENAME TO x", &[]).ok(); // fails: the migration's own work fails...
    drop(tx); // ...so A rolls back: no trace of the run.
    let id = start(&mut b, "shop", "0002_orders_status").expect("B may start once A rolled back");
    assert!(id > run);

    // Now A is the latecomer: the run is committed and running.
    let err = start(&mut a, "shop", "0002_orders_status").unwrap_err();
    assert_eq!(sqlstate(&err), "55006");
    assert!(
        message(&err).contains("is already running"),
        "{}",
        message(&err)
    );

    b.execute("SELECT migrate_finish($1)", &[&id]).unwrap();
    let err = start(&mut a, "shop", "0002_orders_status").unwrap_err();
    assert_eq!(sqlstate(&err), "42710", "{err}");
}

#[test]
fn an_abandoned_run_names_its_dead_backend() {
    let cluster = Cluster::start("abandoned");
    drop(cluster.create_db("deploy"));
    let mut deployer = cluster.connect("deploy");
    let pid: i32 = deployer
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let run = start(&mut deployer, "shop", "0003_backfill").unwrap();
    drop(deployer); // the deploy script dies

    let mut app = cluster.connect("deploy");
    wait_until(
        "the deploy backend to exit",
        Duration::from_secs(10),
        || {
            let n: i64 = app
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                )
                .unwrap()
                .get(0);
            (n == 0).then_some(())
        },
    );
    let err = app
        .execute("SELECT migrate_require('shop', '0003_backfill')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "55000");
    assert!(
        detail_and_hint(&err).contains("which has since exited"),
        "{}",
        detail_and_hint(&err)
    );

    let err = start(&mut app, "shop", "0003_backfill").unwrap_err();
    assert_eq!(sqlstate(&err), "55006");
    assert!(
        detail_and_hint(&err).contains(&format!("SELECT migrate_finish({run}, 'failed'")),
        "the hint says how to close the run: {}",
        detail_and_hint(&err)
    );
    app.execute(
        "SELECT migrate_finish($1, 'failed', 'deploy host rebooted')",
        &[&run],
    )
    .unwrap();
    start(&mut app, "shop", "0003_backfill").expect("a new run may begin");
}

const HISTORY_ROWS: &str = "SELECT string_agg(concat_ws('|', app, name, status, checksum, description, started_at,
                                               finished_at, applied_by, error, run_id), E'\\n' ORDER BY app, name)
                              FROM migrate_history";

fn populate(c: &mut postgres::Client) {
    c.batch_execute(
        "SELECT migrate_finish(migrate_start('shop', '0001_initial', 'sha:1', 'tables'));
         SELECT migrate_finish(migrate_start('shop', '0002_status', 'sha:2'), 'failed', 'boom');
         SELECT migrate_record('billing', '0001_initial', duration => '3 s');
         SELECT migrate_unapply('billing', '0001_initial', 'rolled back');
         SELECT migrate_start('shop', '0003_running');",
    )
    .unwrap();
}

#[test]
fn history_survives_pg_dump_and_pg_restore() {
    let cluster = Cluster::start("dump");
    let mut src = cluster.create_db("src");
    populate(&mut src);
    let before: String = src.query_one(HISTORY_ROWS, &[]).unwrap().get(0);
    let max_run: i64 = src
        .query_one("SELECT max(run_id) FROM migrate_history", &[])
        .unwrap()
        .get(0);

    let dump = cluster.dir.join("src.dump");
    cluster.client_program("pg_dump", &["-Fc", "-f", dump.to_str().unwrap(), "src"]);
    cluster
        .connect("postgres")
        .batch_execute("CREATE DATABASE dst")
        .unwrap();
    cluster.client_program("pg_restore", &["-d", "dst", dump.to_str().unwrap()]);

    let mut dst = cluster.connect("dst");
    let after: String = dst.query_one(HISTORY_ROWS, &[]).unwrap().get(0);
    assert_eq!(before, after);
    // the id sequence came along: new runs do not reuse ids
    let next = start(&mut dst, "shop", "0004_after_restore").unwrap();
    assert!(next > max_run, "{next} > {max_run}");
    // and the log is still append-only
    let err = dst
        .execute("DELETE FROM pgmigrate.events", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "0A000");
}

#[test]
fn history_survives_an_immediate_restart() {
    let cluster = Cluster::start("crash");
    let mut c = cluster.create_db("app");
    populate(&mut c);
    let before: String = c.query_one(HISTORY_ROWS, &[]).unwrap().get(0);
    drop(c);
    cluster.restart("immediate");
    let mut c = cluster.connect("app");
    let after: String = c.query_one(HISTORY_ROWS, &[]).unwrap().get(0);
    assert_eq!(before, after);
    let err = c
        .execute("SELECT migrate_require('shop', '0003_running')", &[])
        .unwrap_err();
    assert!(
        detail_and_hint(&err).contains("which has since exited"),
        "{}",
        detail_and_hint(&err)
    );
}

#[test]
fn the_startup_check_works_on_a_hot_standby() {
    let primary = Cluster::start("primary");
    let mut p = primary.create_db("app");
    let standby = Cluster::standby_of(&primary, "standby", &["hot_standby=on"]);
    p.execute("SELECT migrate_record('shop', '0001_initial')", &[])
        .unwrap();

    let mut s = standby.connect("app");
    let in_recovery: bool = s
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(in_recovery);
    wait_until(
        "the standby to replay the migration",
        Duration::from_secs(30),
        || {
            let applied: bool = s
                .query_one("SELECT migrate_applied('shop', '0001_initial')", &[])
                .unwrap()
                .get(0);
            applied.then_some(())
        },
    );
    s.execute("SELECT migrate_require('shop', '0001_initial')", &[])
        .unwrap();
    let err = s
        .execute("SELECT migrate_require('shop', '0002_next')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "55000");
    // views read fine too
    let n: i64 = s
        .query_one("SELECT count(*) FROM migrate_history", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // no launcher, no workers on a standby
    let workers: i64 = s
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_migrate%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(workers, 0);
    // writing is refused by the standby itself, clearly
    let err = s
        .execute("SELECT migrate_record('shop', '0002_next')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "25006", "{err}"); // read_only_sql_transaction
}
