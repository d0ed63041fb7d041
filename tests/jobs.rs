//! Jobs against a real server: background workers, crashes and restarts,
//! several databases and jobs, roles and privileges, control while running.

mod common;

use common::{message, sqlstate, wait_until, Cluster};
use postgres::{Client, NoTls};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(90);

fn progress(c: &mut Client, id: i64) -> (String, i64, Option<i32>) {
    let r = c
        .query_one(
            "SELECT state, rows_done, worker_pid FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

fn wait_state(c: &mut Client, id: i64, want: &str, timeout: Duration) {
    wait_until(&format!("job {id} to be {want}"), timeout, || {
        let (state, _, _) = progress(c, id);
        if state == "failed" && want != "failed" {
            let e: Option<String> = c
                .query_one(
                    "SELECT error FROM migrate_progress WHERE job_id = $1",
                    &[&id],
                )
                .unwrap()
                .get(0);
            panic!("job {id} failed: {e:?}");
        }
        (state == want).then_some(())
    })
}

fn wait_rows(c: &mut Client, id: i64, at_least: i64) {
    wait_until(&format!("job {id} to cover {at_least} rows"), LONG, || {
        let (_, done, _) = progress(c, id);
        (done >= at_least).then_some(())
    })
}

/// A table of `rows` rows with a counter at 0: a non-idempotent backfill
/// (`n = n + 1`) shows any batch applied twice or skipped.
fn counter_table(c: &mut Client, name: &str, rows: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE {name} (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, who text);
         INSERT INTO {name} (id) SELECT g FROM generate_series(1, {rows}) g;
         ANALYZE {name};"
    ))
    .unwrap();
}

fn assert_exactly_once(c: &mut Client, name: &str, rows: i64) {
    let r = c
        .query_one(
            &format!("SELECT count(*), count(*) FILTER (WHERE n = 1) FROM {name}"),
            &[],
        )
        .unwrap();
    let (total, once): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(
        (total, once),
        (rows, rows),
        "every row of {name} updated exactly once"
    );
}

fn submit(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", message(&e)))
        .get(0)
}

#[test]
fn a_worker_picks_up_a_job_within_a_second_and_shows_itself() {
    let cluster = Cluster::start("pickup");
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 60_000);
    let t0 = Instant::now();
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 2000, sleep_ms => 100)",
    );
    let pickup = wait_until("the job to start", Duration::from_secs(5), || {
        let (state, _, pid) = progress(&mut c, id);
        (state == "running" && pid.is_some()).then(|| t0.elapsed())
    });
    eprintln!("pickup latency: {} ms", pickup.as_millis());
    assert!(
        pickup < Duration::from_secs(1),
        "picked up after {pickup:?}"
    );

    let row = c
        .query_one(
            "SELECT backend_type, application_name, query FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("pg_migrate job {id}")],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pg_migrate worker");
    wait_state(&mut c, id, "succeeded", LONG);
    assert_exactly_once(&mut c, "items", 60_000);
}

#[test]
fn kill_9_of_a_worker_resumes_at_the_next_batch() {
    let cluster = Cluster::start("kill9");
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 100_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 1000, sleep_ms => 20)",
    );
    wait_rows(&mut c, id, 20_000);
    let (_, _, pid) = progress(&mut c, id);
    let pid = pid.expect("a worker drives the job");
    drop(c); // the postmaster restarts every backend after a crash
    cluster.kill_9(pid);
    let mut c = cluster.connect("app");
    wait_state(&mut c, id, "succeeded", LONG);
    assert_exactly_once(&mut c, "items", 100_000);
    assert!(
        cluster.log().contains("terminated by signal 9"),
        "the crash really happened"
    );
}

#[test]
fn an_immediate_shutdown_and_restart_resume_exactly_once() {
    let cluster = Cluster::start("immediate");
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 100_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 1000, sleep_ms => 20)",
    );
    wait_rows(&mut c, id, 20_000);
    drop(c);
    cluster.restart("immediate");
    let mut c = cluster.connect("app");
    wait_state(&mut c, id, "succeeded", LONG);
    assert_exactly_once(&mut c, "items", 100_000);
}

#[test]
fn a_fast_shutdown_stops_the_worker_promptly_and_the_job_resumes() {
    let cluster = Cluster::start("fast");
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 400);
    // Batches of 200 rows at 30 ms a row: 6 s each.  A worker that let its
    // batch finish before stopping would hold the shutdown that long.
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1 + 0 * length(pg_sleep(0.03)::text)', batch_size => 200)",
    );
    wait_until("the worker to be inside a batch", LONG, || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE '%: batch %'",
                &[&format!("pg_migrate job {id}")],
            )
            .unwrap()
            .get(0);
        (n == 1).then_some(())
    });
    drop(c);
    let t0 = Instant::now();
    cluster.restart("fast");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "fast restart took {:?}",
        t0.elapsed()
    );
    let mut c = cluster.connect("app");
    wait_state(&mut c, id, "succeeded", LONG);
    assert_exactly_once(&mut c, "items", 400);
}

#[test]
fn jobs_in_two_databases_run_and_at_most_max_workers_at_once() {
    let cluster = Cluster::start_with("multi", &["pg_migrate.max_workers=2"]);
    let mut a = cluster.create_db("shop");
    let mut b = cluster.create_db("billing");
    for t in ["t1", "t2"] {
        counter_table(&mut a, t, 20_000);
    }
    counter_table(&mut b, "t3", 20_000);
    let sql = |t: &str| {
        format!("SELECT migrate_backfill('{t}', 'n = n + 1', batch_size => 1000, sleep_ms => 50)")
    };
    let ids_a = [submit(&mut a, &sql("t1")), submit(&mut a, &sql("t2"))];
    let id_b = submit(&mut b, &sql("t3"));
    let mut admin = cluster.connect("postgres");
    let mut most = 0i64;
    wait_until("all three jobs to finish", LONG, || {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_migrate worker'",
                &[],
            )
            .unwrap()
            .get(0);
        most = most.max(n);
        let done_a = ids_a
            .iter()
            .all(|id| progress(&mut a, *id).0 == "succeeded");
        let done_b = progress(&mut b, id_b).0 == "succeeded";
        (done_a && done_b).then_some(())
    });
    assert!((1..=2).contains(&most), "workers at once: {most}");
    for t in ["t1", "t2"] {
        assert_exactly_once(&mut a, t, 20_000);
    }
    assert_exactly_once(&mut b, "t3", 20_000);
}

#[test]
fn a_non_superusers_job_runs_as_that_role_and_fails_when_its_privilege_goes() {
    let cluster = Cluster::start("roles");
    let mut admin = cluster.create_db("app");
    counter_table(&mut admin, "items", 50_000);
    admin
        .batch_execute("CREATE ROLE app_writer LOGIN; GRANT SELECT, UPDATE ON items TO app_writer;")
        .unwrap();
    let url = cluster
        .url("app")
        .replace("user=postgres", "user=app_writer");
    let mut app = Client::connect(&url, NoTls).unwrap();
    let id = submit(&mut app, "SELECT migrate_backfill('items', 'who = current_user', batch_size => 1000, sleep_ms => 100)");
    wait_rows(&mut app, id, 5_000);
    admin
        .batch_execute("REVOKE UPDATE ON items FROM app_writer")
        .unwrap();
    wait_state(&mut app, id, "failed", LONG);
    let row = app
        .query_one(
            "SELECT error, owner::text FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap();
    let error: String = row.get(0);
    assert!(
        error.contains("permission denied for table items"),
        "{error}"
    );
    assert_eq!(row.get::<_, String>(1), "app_writer");
    let who: Vec<String> = admin
        .query("SELECT DISTINCT who FROM items WHERE who IS NOT NULL", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        who,
        vec!["app_writer".to_string()],
        "every batch ran as the submitter"
    );
    // a stranger cannot control it
    admin.batch_execute("CREATE ROLE stranger LOGIN").unwrap();
    let mut s = Client::connect(
        &cluster.url("app").replace("user=postgres", "user=stranger"),
        NoTls,
    )
    .unwrap();
    let err = s.execute("SELECT migrate_retry($1)", &[&id]).unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}

#[test]
fn pause_resume_and_cancel_a_running_job() {
    let cluster = Cluster::start("control");
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 60_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 1000, sleep_ms => 50)",
    );
    wait_rows(&mut c, id, 5_000);
    c.execute("SELECT migrate_pause($1)", &[&id]).unwrap();
    let (state, done_at_pause, _) = progress(&mut c, id);
    assert_eq!(state, "paused");
    // its worker lets go and nothing moves
    wait_until("the worker to leave", Duration::from_secs(10), || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&format!("pg_migrate job {id}")],
            )
            .unwrap()
            .get(0);
        (n == 0).then_some(())
    });
    let (_, done_later, _) = progress(&mut c, id);
    assert_eq!(done_at_pause, done_later);
    c.execute("SELECT migrate_resume($1)", &[&id]).unwrap();
    wait_rows(&mut c, id, done_at_pause + 5_000);
    c.execute("SELECT migrate_cancel($1)", &[&id]).unwrap();
    assert_eq!(progress(&mut c, id).0, "cancelled");
    let err = c
        .batch_execute(&format!("CALL migrate_wait({id})"))
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    // what was done stays done, once
    let twice: i64 = c
        .query_one("SELECT count(*) FROM items WHERE n > 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(twice, 0);
    // retry picks up where it stopped and finishes
    c.execute("SELECT migrate_retry($1)", &[&id]).unwrap();
    wait_state(&mut c, id, "succeeded", LONG);
    assert_exactly_once(&mut c, "items", 60_000);
}

#[test]
fn migrate_wait_reports_progress_and_returns_at_the_end() {
    let cluster = Cluster::start("wait");
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 30_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 1000, sleep_ms => 50)",
    );
    let notices = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = notices.clone();
    let mut config: postgres::Config = cluster.url("app").parse().unwrap();
    config.notice_callback(move |n| sink.lock().unwrap().push(n.message().to_string()));
    let mut w = config.connect(NoTls).unwrap();
    w.batch_execute(&format!("CALL migrate_wait({id})"))
        .unwrap();
    assert_eq!(progress(&mut c, id).0, "succeeded");
    {
        let notices = notices.lock().unwrap();
        assert!(
            notices
                .iter()
                .any(|n| n.starts_with(&format!("job {id}: "))),
            "{notices:?}"
        );
        assert!(
            notices
                .last()
                .unwrap()
                .starts_with(&format!("job {id} succeeded")),
            "{notices:?}"
        );
    }
    // and a timeout gives up cleanly
    let id2 = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', run_at => now() + interval '1 hour')",
    );
    let err = w
        .batch_execute(&format!("CALL migrate_wait({id2}, timeout => '1 second')"))
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    assert!(
        message(&err).contains("has not finished after"),
        "{}",
        message(&err)
    );
}

#[test]
fn a_lock_timeout_is_retried_until_the_lock_is_free() {
    let cluster = Cluster::start("locks");
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 5_000);
    let mut holder = cluster.connect("app");
    let mut tx = holder.transaction().unwrap();
    tx.execute("SELECT * FROM items WHERE id = 2500 FOR UPDATE", &[])
        .unwrap();
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 500, lock_timeout => '100ms')",
    );
    let reason: String = wait_until("the job to wait for the lock", LONG, || {
        c.query_one(
            "SELECT wait_reason FROM migrate_progress WHERE job_id = $1 AND state = 'waiting'",
            &[&id],
        )
        .ok()
        .and_then(|r| r.get::<_, Option<String>>(0))
    });
    assert!(reason.starts_with("lock timeout; retry 1 of 5"), "{reason}");
    tx.commit().unwrap();
    wait_state(&mut c, id, "succeeded", LONG);
    assert_exactly_once(&mut c, "items", 5_000);
}

/// `CALL migrate_run(id)` in a session of its own, on a thread: its
/// backend pid and the call's outcome.
fn migrate_run_elsewhere(
    cluster: &Cluster,
    id: i64,
) -> (i32, std::thread::JoinHandle<Result<(), postgres::Error>>) {
    let mut runner = cluster.connect("app");
    let pid: i32 = runner
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let handle =
        std::thread::spawn(move || runner.batch_execute(&format!("CALL migrate_run({id})")));
    (pid, handle)
}

#[test]
fn cancelling_migrate_run_pauses_the_job() {
    let cluster = Cluster::start("fgcancel");
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 40_000);
    // queued paused, so only the foreground session runs it
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 1000, sleep_ms => 50)",
    );
    c.execute("SELECT migrate_pause($1)", &[&id]).unwrap();
    let (pid, handle) = migrate_run_elsewhere(&cluster, id);
    wait_rows(&mut c, id, 5_000);
    let (_, _, driver) = progress(&mut c, id);
    assert_eq!(driver, Some(pid), "the session drives it");
    c.execute("SELECT pg_cancel_backend($1)", &[&pid]).unwrap();
    let err = handle.join().unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    assert!(message(&err).contains("is paused"), "{}", message(&err));
    assert_eq!(progress(&mut c, id).0, "paused");
    c.execute("SELECT migrate_resume($1)", &[&id]).unwrap();
    wait_state(&mut c, id, "succeeded", LONG);
    assert_exactly_once(&mut c, "items", 40_000);
}

#[test]
fn without_the_preload_a_job_waits_for_migrate_run() {
    let cluster = Cluster::start_with("nopreload", &["shared_preload_libraries=''"]);
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 10_000);
    let warnings = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let sink = warnings.clone();
    let mut config: postgres::Config = cluster.url("app").parse().unwrap();
    config.notice_callback(move |n| {
        sink.lock()
            .unwrap()
            .push((n.message().to_string(), n.hint().unwrap_or("").to_string()))
    });
    let mut s = config.connect(NoTls).unwrap();
    let id = submit(
        &mut s,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 3000)",
    );
    {
        let w = warnings.lock().unwrap();
        let (msg, hint) = w.first().expect("a warning");
        assert!(msg.contains("no background worker will run it"), "{msg}");
        assert!(hint.contains(&format!("CALL migrate_run({id})")), "{hint}");
    }
    s.batch_execute(&format!("CALL migrate_run({id})")).unwrap();
    assert_eq!(progress(&mut c, id).0, "succeeded");
    assert_exactly_once(&mut c, "items", 10_000);
    // inside a transaction block it says why it cannot
    let mut tx = s.transaction().unwrap();
    let err = tx
        .batch_execute(&format!("CALL migrate_run({id})"))
        .unwrap_err();
    assert_eq!(sqlstate(&err), "25001");
}

#[test]
fn a_reload_applies_max_workers() {
    let cluster = Cluster::start_with("sighup", &["pg_migrate.max_workers=0"]);
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 5_000);
    let id = submit(&mut c, "SELECT migrate_backfill('items', 'n = n + 1')");
    // A worker takes a job within a second (see the pickup test): watch it
    // stay queued for longer than that.
    common::stays_for(
        "the job to stay queued while max_workers = 0",
        Duration::from_millis(1500),
        || progress(&mut c, id).0 == "queued",
    );
    c.batch_execute("ALTER SYSTEM SET pg_migrate.max_workers = 1")
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_state(&mut c, id, "succeeded", Duration::from_secs(30));
    assert_exactly_once(&mut c, "items", 5_000);
}

#[test]
fn drop_extension_is_never_blocked_by_a_running_job() {
    let cluster = Cluster::start("dropext");
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 100_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 500, sleep_ms => 100)",
    );
    wait_rows(&mut c, id, 1_000);
    let t0 = Instant::now();
    c.batch_execute("SET lock_timeout = '5s'; DROP EXTENSION pg_migrate;")
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "DROP EXTENSION took {:?}",
        t0.elapsed()
    );
    wait_until(
        "the worker to leave the database",
        Duration::from_secs(30),
        || {
            let n: i64 = c
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_migrate worker' AND datname = 'app'", &[])
            .unwrap()
            .get(0);
            (n == 0).then_some(())
        },
    );
    // and it comes back cleanly
    c.batch_execute("CREATE EXTENSION pg_migrate").unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM migrate_progress", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn a_job_whose_migrate_run_session_died_in_a_restart_goes_on() {
    let cluster = Cluster::start("fgrestart");
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 40_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 1000, sleep_ms => 50)",
    );
    c.execute("SELECT migrate_pause($1)", &[&id]).unwrap();
    let (_, handle) = migrate_run_elsewhere(&cluster, id);
    wait_rows(&mut c, id, 5_000);
    cluster.restart("immediate");
    assert!(
        handle.join().unwrap().is_err(),
        "the session died with the server"
    );
    let mut c = cluster.connect("app");
    // What migrate_progress promises happens: the workers take it over and
    // it resumes at the next batch, exactly once.
    let reason: Option<String> = c
        .query_one(
            "SELECT wait_reason FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    wait_state(&mut c, id, "succeeded", LONG);
    assert_exactly_once(&mut c, "items", 40_000);
    println!("wait_reason after the restart: {reason:?}");
}

#[test]
fn without_workers_a_job_whose_migrate_run_session_ended_is_resumed_by_hand() {
    let cluster = Cluster::start_with("nopreload_orphan", &["shared_preload_libraries=''"]);
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 40_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 1000, sleep_ms => 50)",
    );
    let (pid, handle) = migrate_run_elsewhere(&cluster, id);
    wait_rows(&mut c, id, 5_000);
    c.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    assert!(handle.join().unwrap().is_err());
    // The view says who can continue it, and migrate_resume may.
    let reason: String = wait_until("the session to be gone", LONG, || {
        c.query_one(
            "SELECT wait_reason FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get::<_, Option<String>>(0)
    });
    assert!(
        reason.contains("CALL migrate_run session ended")
            && reason.contains(&format!("migrate_resume({id})")),
        "{reason}"
    );
    c.execute("SELECT migrate_resume($1)", &[&id])
        .unwrap_or_else(|e| panic!("resume: {}", message(&e)));
    assert_eq!(progress(&mut c, id).0, "queued");
    c.batch_execute(&format!("CALL migrate_run({id})")).unwrap();
    assert_eq!(progress(&mut c, id).0, "succeeded");
    assert_exactly_once(&mut c, "items", 40_000);
}

#[test]
fn a_job_follows_its_table_when_it_is_renamed_or_moved() {
    let cluster = Cluster::start("rename");
    let mut c = cluster.create_db("app");
    counter_table(&mut c, "items", 20_000);
    c.batch_execute("CREATE SCHEMA archive").unwrap();
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 500, sleep_ms => 50)",
    );
    wait_rows(&mut c, id, 2_000);
    c.batch_execute("ALTER TABLE items RENAME TO items_v2")
        .unwrap();
    wait_rows(&mut c, id, 8_000);
    c.batch_execute("ALTER TABLE items_v2 SET SCHEMA archive")
        .unwrap();
    wait_state(&mut c, id, "succeeded", LONG);
    assert_exactly_once(&mut c, "archive.items_v2", 20_000);
}

#[test]
fn batches_commit_without_waiting_for_the_flush_unless_the_setting_says_so() {
    let cl = Cluster::start("sync_batches");
    let mut c = cl.create_db("app");
    counter_table(&mut c, "t", 3000);
    let setting = "who = pg_catalog.current_setting('synchronous_commit')";
    let run = |c: &mut Client| {
        let id = c
            .query_one("SELECT migrate_backfill('t', $1)", &[&setting])
            .unwrap()
            .get::<_, i64>(0);
        wait_state(c, id, "succeeded", LONG);
        let r = c
            .query_one("SELECT count(DISTINCT who), min(who) FROM t", &[])
            .unwrap();
        (r.get::<_, i64>(0), r.get::<_, String>(1))
    };
    assert_eq!(run(&mut c), (1, "off".to_string()), "by default");
    c.batch_execute("ALTER SYSTEM SET pg_migrate.synchronous_batches = on")
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until("the reload", LONG, || {
        let mut fresh = cl.connect("app");
        let on: String = fresh
            .query_one("SHOW pg_migrate.synchronous_batches", &[])
            .unwrap()
            .get(0);
        (on == "on").then_some(())
    });
    assert_eq!(
        run(&mut c),
        (1, "on".to_string()),
        "with pg_migrate.synchronous_batches = on, the server's setting"
    );
}

/// A migration's transaction holds a table (its DDL) and then queues a job
/// gated on a job whose worker waits for that table: the gate's foreign key
/// must not wait for the worker's lock on its job row, or the two deadlock
/// (and one of them, the migration or the job, is killed).
#[test]
fn a_gate_on_a_job_waiting_for_a_locked_table_does_not_deadlock() {
    let cluster = Cluster::start("gate_deadlock");
    let mut c = cluster.create_db("gated");
    counter_table(&mut c, "t", 20_000);
    // A job that takes a while, under way; then the migration's DDL takes
    // the table between two of its batches.
    let first = submit(
        &mut c,
        "SELECT migrate_backfill('t', 'n = n + 1', batch_size => 100, max_rows_per_second => 2000)",
    );
    wait_rows(&mut c, first, 100);
    let mut ddl = cluster.connect("gated");
    ddl.batch_execute("BEGIN; ALTER TABLE t ADD COLUMN note text")
        .unwrap();
    // Its worker has the job and waits for the table.
    wait_until("the worker to wait for the table", LONG, || {
        let waiting: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                  WHERE l.relation = 't'::regclass AND NOT l.granted AND a.backend_type LIKE 'pg_migrate%'",
                &[],
            )
            .unwrap()
            .get(0);
        (waiting > 0).then_some(())
    });
    // The migration queues the next step behind it, and commits.
    let second: i64 = ddl
        .query_one(
            &format!("SELECT migrate_backfill('t', 'n = n + 1', after_jobs => ARRAY[{first}])"),
            &[],
        )
        .unwrap()
        .get(0);
    ddl.batch_execute("COMMIT").unwrap();
    wait_state(&mut c, second, "succeeded", LONG);
    assert_eq!(progress(&mut c, first).0, "succeeded");
    let retries: i32 = c
        .query_one(
            "SELECT retries FROM migrate_progress WHERE job_id = $1",
            &[&first],
        )
        .unwrap()
        .get(0);
    assert_eq!(retries, 0);
    assert!(
        !cluster.log().contains("deadlock detected"),
        "a deadlock was logged"
    );
    let n: Vec<i32> = c
        .query("SELECT DISTINCT n FROM t", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(n, vec![2]);
}

/// A job whose first step cannot get its table within lock_timeout (a long
/// DDL holds it) waits and tries again, saying why, instead of failing.
#[test]
fn a_job_that_cannot_get_its_table_in_time_retries() {
    let cluster = Cluster::start("bounds_retry");
    let mut c = cluster.create_db("bounds");
    counter_table(&mut c, "t", 5_000);
    // Due in 2 s; by then a DDL's transaction holds the table.
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('t', 'n = n + 1', lock_timeout => '200ms', run_at => now() + interval '2 s')",
    );
    let mut ddl = cluster.connect("bounds");
    ddl.batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    wait_until("the job to wait and say why", LONG, || {
        let r = c
            .query_one(
                "SELECT state, wait_reason FROM migrate_progress WHERE job_id = $1",
                &[&id],
            )
            .unwrap();
        let (state, reason): (String, Option<String>) = (r.get(0), r.get(1));
        assert_ne!(state, "failed");
        reason
            .filter(|r| r.starts_with("lock timeout while reading the table; retry 1 of"))
            .map(|_| ())
    });
    ddl.batch_execute("COMMIT").unwrap();
    wait_state(&mut c, id, "succeeded", LONG);
    assert_exactly_once(&mut c, "t", 5_000);
}

/// A backfill queued after a like one (same owner, same clauses) starts at
/// the batch size that one reached; one with another clause starts at the
/// first batch size.  (A Citus node runs its shards' jobs so, one after
/// another.)
#[test]
fn a_job_after_a_like_one_starts_at_its_batch_size() {
    let cl = Cluster::start("inherit_size");
    let mut c = cl.create_db("app");
    for t in ["a", "b", "c"] {
        counter_table(&mut c, t, 20_000);
    }
    let first = submit(
        &mut c,
        "SELECT migrate_backfill('a', 'n = n + 1', run_at => now() + interval '1 hour')",
    );
    let like = submit(
        &mut c,
        &format!("SELECT migrate_backfill('b', 'n = n + 1', after_jobs => ARRAY[{first}])"),
    );
    let other = submit(
        &mut c,
        &format!("SELECT migrate_backfill('c', 'n = n + 2', after_jobs => ARRAY[{first}])"),
    );
    c.batch_execute(&format!("CALL migrate_run({first})"))
        .unwrap();
    wait_state(&mut c, like, "succeeded", LONG);
    wait_state(&mut c, other, "succeeded", LONG);
    let reached: i32 = c
        .query_one(
            "SELECT batch_size FROM migrate_progress WHERE job_id = $1",
            &[&first],
        )
        .unwrap()
        .get(0);
    assert!(reached > 1000, "the first job grew its batches: {reached}");
    let first_batch = |c: &mut Client, id: i64| -> i32 {
        c.query_one(
            "SELECT batch_size FROM migrate_batches WHERE job_id = $1 AND batch_no = 1",
            &[&id],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(first_batch(&mut c, like), reached);
    assert_eq!(first_batch(&mut c, other), 1000);
    assert_exactly_once(&mut c, "b", 20_000);
}
