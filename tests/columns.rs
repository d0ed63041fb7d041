//! Column changes run by the server, against a real server with its
//! workers: migrate_set_not_null under a live writer, behind a lock it
//! must not queue behind, and across an immediate restart.

mod common;

use common::{wait_until, Cluster};
use postgres::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

fn table(c: &mut Client, name: &str, rows: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE {name} (id bigint PRIMARY KEY, v int, note text);
         INSERT INTO {name} SELECT g, g % 1000, 'row ' || g FROM generate_series(1, {rows}) g;"
    ))
    .unwrap();
    c.batch_execute(&format!("VACUUM ANALYZE {name}")).unwrap();
}

fn job(c: &mut Client, id: i64) -> (String, Option<String>, Option<String>, Option<Vec<String>>) {
    let r = c
        .query_one(
            "SELECT state, wait_reason, error, cursor FROM pgmigrate.jobs WHERE job_id = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

fn wait_state(c: &mut Client, id: i64, state: &str) {
    wait_until(&format!("job {id} to be {state}"), LONG, || {
        let (s, _, error, _) = job(c, id);
        assert!(
            s == state || !matches!(s.as_str(), "succeeded" | "failed" | "cancelled"),
            "job {id} ended {s}: {error:?}"
        );
        (s == state).then_some(())
    });
}

fn not_null(c: &mut Client, table: &str, column: &str) -> bool {
    c.query_one(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = $2",
        &[&table, &column],
    )
    .unwrap()
    .get(0)
}

#[test]
fn set_not_null_never_blocks_a_writer_longer_than_its_lock_timeout() {
    let cluster = Cluster::start("not_null_live");
    let mut c = cluster.create_db("app");
    table(&mut c, "orders", 300_000);
    // A writer inserts and updates without pause, timing every statement.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut w = cluster.connect("app");
        std::thread::spawn(move || {
            let (mut worst, mut n, mut errors) = (Duration::ZERO, 0i64, vec![]);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t = Instant::now();
                let r = w.execute(
                    "INSERT INTO orders VALUES (1000000 + $1::bigint, 1, 'new') ON CONFLICT (id) DO UPDATE SET v = orders.v + 1",
                    &[&n],
                );
                if let Err(e) = r {
                    errors.push(common::message(&e));
                }
                let t2 = Instant::now();
                w.execute(
                    "UPDATE orders SET v = v + 1 WHERE id = $1",
                    &[&(1 + n % 300_000)],
                )
                .map_err(|e| errors.push(common::message(&e)))
                .ok();
                worst = worst.max(t.elapsed().max(t2.elapsed()));
            }
            (worst, n, errors)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let id: i64 = c
        .query_one(
            "SELECT migrate_set_not_null('orders', 'v', lock_timeout => '200ms')",
            &[],
        )
        .unwrap()
        .get(0);
    wait_state(&mut c, id, "succeeded");
    stop.store(true, Ordering::Relaxed);
    let (worst, statements, errors) = writer.join().unwrap();
    assert!(
        errors.is_empty(),
        "the writer saw {} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(statements > 100, "the writer ran {statements} statements");
    println!("writer: {statements} rounds, slowest statement {worst:?}");
    assert!(not_null(&mut c, "orders", "v"));
    // Each lock-taking step waits at most 200 ms for its lock, and holds it
    // only for a moment; the writer behind it waits no longer than that
    // plus the moment (generous margin for a busy 2-core machine).
    assert!(
        worst < Duration::from_millis(1500),
        "a writer's statement took {worst:?}"
    );
    let helpers: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype = 'c'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(helpers, 0, "the helper check is dropped");
}

#[test]
fn set_not_null_retries_behind_a_lock_and_resumes_at_its_step_after_a_restart() {
    let cluster = Cluster::start("not_null_restart");
    let mut c = cluster.create_db("app");
    // Big enough that the validation takes a while (a second or so).
    table(&mut c, "items", 2_000_000);
    // A long reader: its ACCESS SHARE lock lets the validation through
    // (SHARE UPDATE EXCLUSIVE) but not the steps that need ACCESS EXCLUSIVE.
    let mut reader = cluster.connect("app");
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM items;")
        .unwrap();
    let id: i64 = c
        .query_one(
            "SELECT migrate_set_not_null('items', 'v', lock_timeout => '100ms', max_retries => 50)",
            &[],
        )
        .unwrap()
        .get(0);
    // The first step cannot get its lock: the job waits and says why, and
    // the reader is not blocked.
    let reason = wait_until("the job to wait for its lock", LONG, || {
        let (state, reason, _, _) = job(&mut c, id);
        (state == "waiting").then_some(reason.unwrap_or_default())
    });
    assert!(
        reason.starts_with("step 1 of 4: lock timeout; retry"),
        "{reason}"
    );
    let shown: String = c
        .query_one(
            "SELECT wait_reason FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(shown.contains("lock timeout"), "{shown}");
    // Let it add the check; pause it while it validates: the pause takes
    // effect after that step, which is recorded.
    reader.batch_execute("COMMIT").unwrap();
    wait_until("the job to add its check", LONG, || {
        let (_, _, _, cursor) = job(&mut c, id);
        assert_ne!(
            cursor.as_deref(),
            Some(&["3".to_string()][..]),
            "the validation was over before the test looked"
        );
        (cursor.as_deref() == Some(&["1".to_string()][..])).then_some(())
    });
    // A new reader at once: the validation goes on beside it, but the
    // third step cannot begin before the pause lands (on a fast day the
    // validation is over in a moment).
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM items;")
        .unwrap();
    c.execute("SELECT migrate_pause($1)", &[&id]).unwrap();
    wait_state(&mut c, id, "paused");
    // Paused at a step boundary: after the validation, or (when the pause
    // came before the worker began it) before it.
    let (_, _, _, cursor) = job(&mut c, id);
    assert!(
        cursor == Some(vec!["2".to_string()]) || cursor == Some(vec!["1".to_string()]),
        "paused between steps, at {cursor:?}"
    );
    // Resumed behind the reader, its third step waits for its lock.
    c.execute("SELECT migrate_resume($1)", &[&id]).unwrap();
    let reason = wait_until("the third step to wait for its lock", LONG, || {
        let (state, reason, _, _) = job(&mut c, id);
        (state == "waiting").then_some(reason.unwrap_or_default())
    });
    assert!(reason.starts_with("step 3 of 4: lock timeout"), "{reason}");
    // Before the crash: the check it added and validated is there, valid,
    // committed with the cursor.
    let validated: bool = c
        .query_one(
            "SELECT convalidated FROM pg_constraint WHERE conrelid = 'items'::regclass AND conname = 'items_v_not_null'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(validated);
    let (_, _, _, cursor) = job(&mut c, id);
    assert_eq!(cursor, Some(vec!["2".to_string()]));
    // The crash comes while the reader still holds its lock (it dies with
    // the server).  The job goes on at its third step.
    drop(c);
    cluster.restart("immediate");
    drop(reader);
    let mut c = cluster.connect("app");
    wait_state(&mut c, id, "succeeded");
    assert!(not_null(&mut c, "items", "v"));
    let steps: i32 = c
        .query_one(
            "SELECT batches FROM pgmigrate.jobs WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(steps, 3, "three steps recorded before the last, none twice");
}

fn one_i64(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn reason(c: &mut Client, id: i64) -> String {
    c.query_one(
        "SELECT coalesce(wait_reason, '') FROM migrate_progress WHERE job_id = $1",
        &[&id],
    )
    .unwrap()
    .get(0)
}

#[test]
fn a_plan_queued_at_once_runs_in_order_behind_its_gates() {
    let cluster = Cluster::start("constraints_gates");
    let mut c = cluster.create_db("app");
    c.batch_execute(
        "CREATE TABLE customers (id int PRIMARY KEY);
         INSERT INTO customers SELECT generate_series(1, 100);
         CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, v int, ref text);
         INSERT INTO orders SELECT g, 1 + g % 100, g % 7, NULL FROM generate_series(1, 200000) g;
         CREATE TABLE legacy (code int, note text);
         INSERT INTO legacy SELECT g, 'n' FROM generate_series(1, 50000) g;
         CREATE TABLE notes (id int, order_id bigint, stars int);
         INSERT INTO notes VALUES (1, 17, 5), (2, 424242424, -1);
         ANALYZE;",
    )
    .unwrap();
    // The plan: a backfill that waits for the deploy's migration, a unique
    // constraint on what it fills (its index job waits for the backfill), a
    // check that waits for the unique constraint.
    let fill = one_i64(
        &mut c,
        "SELECT migrate_backfill('orders', 'ref = ''r'' || id', after_migration => ARRAY['shop', '0002_deploy'])",
    );
    let unique = one_i64(
        &mut c,
        &format!("SELECT migrate_add_constraint('orders', 'CONSTRAINT orders_ref_key UNIQUE (ref)', after_jobs => ARRAY[{fill}::bigint])"),
    );
    let index_job = one_i64(
        &mut c,
        &format!("SELECT max(after_job) FROM pgmigrate.gates WHERE job_id = {unique}"),
    );
    assert_ne!(
        index_job, fill,
        "the constraint waits for its index build too"
    );
    let check = one_i64(
        &mut c,
        &format!("SELECT migrate_add_constraint('orders', 'CHECK (ref IS NOT NULL AND v >= 0)', after_jobs => ARRAY[{unique}::bigint])"),
    );
    // Outside the plan, a foreign key runs at once.
    let fk = one_i64(
        &mut c,
        "SELECT migrate_add_constraint('orders', 'FOREIGN KEY (customer_id) REFERENCES customers (id)')",
    );
    wait_state(&mut c, fk, "succeeded");
    // The plan stays queued while its migration is not applied, and says why.
    common::stays_for(
        "the plan to wait for its migration",
        Duration::from_secs(3),
        || {
            [fill, index_job, unique, check]
                .iter()
                .all(|id| job(&mut c, *id).0 == "queued")
        },
    );
    assert_eq!(
        reason(&mut c, fill),
        "waits for migration shop.0002_deploy to be applied (now: not recorded)"
    );
    assert!(
        reason(&mut c, index_job).starts_with(&format!("waits for job {fill} (backfill queued)")),
        "{}",
        reason(&mut c, index_job)
    );
    assert!(
        reason(&mut c, check).starts_with(&format!("waits for job {unique} (constraint queued)")),
        "{}",
        reason(&mut c, check)
    );
    // CALL migrate_run does not jump a gate.
    let e = c
        .batch_execute(&format!("CALL migrate_run({check})"))
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "55000", "{}", common::message(&e));
    assert!(
        common::message(&e).contains("cannot start yet"),
        "{}",
        common::message(&e)
    );
    // The deploy records its migration: the plan runs by itself, in order.
    c.execute("SELECT migrate_record('shop', '0002_deploy')", &[])
        .unwrap();
    wait_state(&mut c, check, "succeeded");
    let out_of_order = one_i64(
        &mut c,
        "SELECT count(*) FROM pgmigrate.gates g
           JOIN pgmigrate.jobs j ON j.job_id = g.job_id JOIN pgmigrate.jobs d ON d.job_id = g.after_job
          WHERE j.started_at < d.finished_at",
    );
    assert_eq!(
        out_of_order, 0,
        "a job started before the job it waits for ended"
    );
    let valid = one_i64(
        &mut c,
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders'::regclass
            AND convalidated AND contype IN ('u', 'c', 'f')",
    );
    assert_eq!(valid, 3, "unique, check and foreign key, all valid");
    let unique_index = one_i64(
        &mut c,
        "SELECT count(*) FROM pg_index i JOIN pg_constraint k ON k.conindid = i.indexrelid
          WHERE k.conname = 'orders_ref_key' AND i.indisunique AND i.indisvalid",
    );
    assert_eq!(unique_index, 1);

    // A primary key on a nullable column: NOT NULL first, then the index,
    // then the key, each its own job.
    let pk = one_i64(
        &mut c,
        "SELECT migrate_add_constraint('legacy', 'PRIMARY KEY (code)')",
    );
    wait_state(&mut c, pk, "succeeded");
    let (name, not_null): (String, bool) = {
        let r = c
            .query_one(
                "SELECT k.conname::text, a.attnotnull FROM pg_constraint k
                   JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
                  WHERE k.conrelid = 'legacy'::regclass AND k.contype = 'p'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(name, "legacy_pkey");
    assert!(not_null);
    let jobs_for_pk = one_i64(
        &mut c,
        "SELECT count(*) FROM pgmigrate.jobs WHERE relid = 'legacy'::regclass AND state = 'succeeded'",
    );
    assert_eq!(jobs_for_pk, 3, "set_not_null, index build, constraint");

    // A row that breaks a foreign key fails the job with that row's key, and
    // the NOT VALID constraint is gone.
    let bad_fk = one_i64(
        &mut c,
        "SELECT migrate_add_constraint('notes', 'FOREIGN KEY (order_id) REFERENCES orders (id)')",
    );
    wait_state(&mut c, bad_fk, "failed");
    let (sqlstate, detail): (String, String) = {
        let r = c
            .query_one(
                "SELECT error_sqlstate, error_detail FROM pgmigrate.jobs WHERE job_id = $1",
                &[&bad_fk],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(sqlstate, "23503");
    assert!(detail.contains("(order_id)=(424242424)"), "{detail}");
    let bad_check = one_i64(
        &mut c,
        "SELECT migrate_add_constraint('notes', 'CHECK (stars >= 0)')",
    );
    wait_state(&mut c, bad_check, "failed");
    let detail: String = c
        .query_one(
            "SELECT error_detail FROM pgmigrate.jobs WHERE job_id = $1",
            &[&bad_check],
        )
        .unwrap()
        .get(0);
    assert!(
        detail.contains("Rows that break it: SELECT * FROM public.notes WHERE NOT ((stars >= 0));"),
        "{detail}"
    );
    let left = one_i64(
        &mut c,
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'notes'::regclass",
    );
    assert_eq!(left, 0, "failed constraints leave nothing behind");
    // Fixed, a retry adds it from the first step.
    c.batch_execute("UPDATE notes SET stars = 0 WHERE stars < 0")
        .unwrap();
    c.execute("SELECT migrate_retry($1)", &[&bad_check])
        .unwrap();
    wait_state(&mut c, bad_check, "succeeded");
}

#[test]
fn a_step_gets_an_autovacuum_out_of_its_way_within_its_lock_timeout() {
    let cluster = Cluster::start_with("not_null_autovacuum", &["autovacuum_naptime=1"]);
    let mut c = cluster.create_db("app");
    table(&mut c, "slowvac", 100_000);
    // An autovacuum of the table that would take many minutes.
    c.batch_execute(
        "ALTER TABLE slowvac SET (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,
                                  autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1);
         UPDATE slowvac SET note = note || '.';",
    )
    .unwrap();
    let vacuuming = "SELECT count(*) FROM pg_stat_activity
                      WHERE backend_type = 'autovacuum worker' AND query LIKE '%slowvac%'";
    wait_until("an autovacuum of the table", LONG, || {
        (one_i64(&mut c, vacuuming) > 0).then_some(())
    });
    // Each of the job's three lock-taking steps waits at most 200 ms, and
    // may retry twice: a wait that outlasted the autovacuum could not
    // succeed; the server cancels the autovacuum for the step instead.
    let id = one_i64(
        &mut c,
        "SELECT migrate_set_not_null('slowvac', 'v', lock_timeout => '200ms', max_retries => 2)",
    );
    wait_state(&mut c, id, "succeeded");
    assert!(not_null(&mut c, "slowvac", "v"));
    let log = cluster.log();
    assert!(
        log.contains("canceling autovacuum task"),
        "the autovacuum was not cancelled: {log}"
    );
}
