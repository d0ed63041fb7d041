//! Backfills split into slices against a real server: `parallel => N` on a
//! table, partitioned tables (a slice per partition, at any depth, the
//! default partition included), a kill -9 in the middle, control of the
//! whole job, shared budgets, and what another role may not do.

mod common;

use common::{message, sqlstate, wait_until, Cluster};
use postgres::{Client, NoTls};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

fn connect_as(cluster: &Cluster, db: &str, role: &str) -> Client {
    Client::connect(
        &cluster
            .url(db)
            .replace("user=postgres", &format!("user={role}")),
        NoTls,
    )
    .unwrap()
}

fn submit(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", message(&e)))
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

fn wait_state(c: &mut Client, id: i64, want: &str) {
    wait_until(&format!("job {id} to be {want}"), LONG, || {
        let (s, reason) = state(c, id);
        if s == "failed" && want != "failed" {
            let e: Option<String> = c
                .query_one(
                    "SELECT error FROM migrate_progress WHERE job_id = $1",
                    &[&id],
                )
                .unwrap()
                .get(0);
            panic!("job {id} failed: {e:?} ({reason:?})");
        }
        (s == want).then_some(())
    })
}

/// The slices of job `id` and how many of them live backends drive now.
fn slices(c: &mut Client, id: i64) -> (i64, i64) {
    let r = c
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE worker_pid IS NOT NULL)
               FROM migrate_progress WHERE parent_job = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

fn counter_table(c: &mut Client, rows: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE items (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0);
         INSERT INTO items (id) SELECT g FROM generate_series(1, {rows}) g;
         ANALYZE items;"
    ))
    .unwrap();
}

/// Two levels: a range partition per quarter, each split by hash into
/// four; one quarter is a plain leaf; rows outside every range go to the
/// default partition.  `rows` rows in all, with a counter at 0.
fn partitioned_table(c: &mut Client, rows: i64) {
    c.batch_execute(
        "CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, n int NOT NULL DEFAULT 0,
                              PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE events_q1 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2026-04-01')
             PARTITION BY HASH (id);
         CREATE TABLE events_q2 PARTITION OF events FOR VALUES FROM ('2026-04-01') TO ('2026-07-01')
             PARTITION BY HASH (id);
         CREATE TABLE events_q3 PARTITION OF events FOR VALUES FROM ('2026-07-01') TO ('2026-10-01');
         CREATE TABLE events_other PARTITION OF events DEFAULT;",
    )
    .unwrap();
    for q in ["q1", "q2"] {
        for h in 0..4 {
            c.batch_execute(&format!(
                "CREATE TABLE events_{q}_{h} PARTITION OF events_{q} FOR VALUES WITH (MODULUS 4, REMAINDER {h})"
            ))
            .unwrap();
        }
    }
    c.batch_execute(&format!(
        "INSERT INTO events (id, at) SELECT g, date '2026-01-01' + (g % 400)::int FROM generate_series(1, {rows}) g;
         ANALYZE events;"
    ))
    .unwrap();
}

fn assert_once(c: &mut Client, table: &str, rows: i64) {
    let r = c
        .query_one(
            &format!("SELECT count(*), count(*) FILTER (WHERE n = 1) FROM {table}"),
            &[],
        )
        .unwrap();
    let (total, once): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(
        (total, once),
        (rows, rows),
        "every row of {table} updated exactly once"
    );
}

/// Follow a split job to its end: the most slices seen running at once.
fn most_at_once(c: &mut Client, id: i64) -> i64 {
    let mut most = 0;
    wait_until(&format!("job {id} to succeed"), LONG, || {
        let (_, running) = slices(c, id);
        most = most.max(running);
        let (s, reason) = state(c, id);
        assert!(
            !matches!(s.as_str(), "failed" | "cancelled"),
            "job {id} is {s}: {reason:?}"
        );
        (s == "succeeded").then_some(())
    });
    most
}

#[test]
fn parallel_slices_share_the_key_range_and_each_row_is_updated_once() {
    let cluster = Cluster::start_with("parallel", &["pg_migrate.max_workers=4"]);
    let mut c = cluster.create_db("app");
    counter_table(&mut c, 120_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 2000, sleep_ms => 20, parallel => 2)",
    );
    let most = most_at_once(&mut c, id);
    assert_eq!(most, 2, "two slices ran at once, never more");
    assert_eq!(slices(&mut c, id).0, 2);
    assert_once(&mut c, "items", 120_000);
    // The job's row sums its slices'; each slice walked its own range.
    let r = c
        .query_one(
            "SELECT rows_done, rows_updated, percent FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(r.get::<_, Option<i64>>(0), Some(120_000));
    assert_eq!(r.get::<_, Option<i64>>(1), Some(120_000));
    let ranges: Vec<(Option<String>, i64)> = c
        .query(
            "SELECT slice, rows_done FROM migrate_progress WHERE parent_job = $1 ORDER BY job_id",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(ranges[0]
        .0
        .as_deref()
        .unwrap()
        .starts_with("slice 1 of 2: keys from the first up to ("));
    assert!(
        ranges.iter().all(|(_, n)| *n > 20_000),
        "both slices did a fair share: {ranges:?}"
    );
}

#[test]
fn a_partitioned_table_is_done_a_partition_at_a_time_exactly_once_across_kill_9() {
    let cluster = Cluster::start("partitioned");
    let mut c = cluster.create_db("app");
    partitioned_table(&mut c, 100_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('events', 'n = n + 1', batch_size => 1000, sleep_ms => 10)",
    );
    // Eight hash leaves, the plain quarter and the default partition.
    wait_until("the job to split", LONG, || {
        (slices(&mut c, id).0 == 10).then_some(())
    });
    let labels: Vec<String> = c
        .query(
            "SELECT slice FROM migrate_progress WHERE parent_job = $1 ORDER BY job_id",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        labels.contains(&"partition public.events_other".to_string()),
        "{labels:?}"
    );
    assert!(
        labels.contains(&"partition public.events_q2_3".to_string()),
        "{labels:?}"
    );
    // Half-way, kill the worker of the running slice.
    let pid: i32 = wait_until("a slice half-way", LONG, || {
        let r = c
            .query_one(
                "SELECT (SELECT sum(rows_done)::bigint FROM migrate_progress WHERE parent_job = $1),
                        (SELECT worker_pid FROM migrate_progress WHERE parent_job = $1 AND worker_pid IS NOT NULL LIMIT 1)",
                &[&id],
            )
            .unwrap();
        let done: Option<i64> = r.get(0);
        let pid: Option<i32> = r.get(1);
        (done.unwrap_or(0) >= 40_000).then_some(pid).flatten()
    });
    drop(c);
    cluster.kill_9(pid);
    let mut c = cluster.connect("app");
    let most = most_at_once(&mut c, id);
    assert_eq!(most, 1, "without parallel, one partition at a time");
    assert_once(&mut c, "events", 100_000);
    let done: i64 = c
        .query_one(
            "SELECT rows_done FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(done, 100_000);
    assert!(cluster.log().contains("terminated by signal 9"));
}

#[test]
fn parallel_on_a_partitioned_table_runs_partitions_at_once_exactly_once_across_kill_9() {
    let cluster = Cluster::start_with("partitioned-parallel", &["pg_migrate.max_workers=3"]);
    let mut c = cluster.create_db("app");
    partitioned_table(&mut c, 100_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('events', 'n = n + 1', batch_size => 1000, sleep_ms => 10, parallel => 2)",
    );
    let pid: i32 = wait_until("two slices running", LONG, || {
        let (_, running) = slices(&mut c, id);
        let pid: Option<i32> = c
            .query_opt(
                "SELECT worker_pid FROM migrate_progress WHERE parent_job = $1 AND worker_pid IS NOT NULL
                  ORDER BY job_id DESC LIMIT 1",
                &[&id],
            )
            .unwrap()
            .and_then(|r| r.get(0));
        (running == 2).then_some(pid).flatten()
    });
    drop(c);
    cluster.kill_9(pid);
    let mut c = cluster.connect("app");
    let most = most_at_once(&mut c, id);
    assert!(
        most <= 2,
        "parallel => 2 allows two slices at once, not {most}"
    );
    assert_once(&mut c, "events", 100_000);
}

#[test]
fn pause_resume_and_cancel_of_a_split_job_act_on_its_slices() {
    let cluster = Cluster::start_with("slice-control", &["pg_migrate.max_workers=3"]);
    let mut c = cluster.create_db("app");
    counter_table(&mut c, 100_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 500, sleep_ms => 50, parallel => 2)",
    );
    wait_until("two slices running", LONG, || {
        (slices(&mut c, id).1 == 2).then_some(())
    });
    c.execute("SELECT migrate_pause($1)", &[&id]).unwrap();
    wait_until("the slices to stop", LONG, || {
        (slices(&mut c, id).1 == 0).then_some(())
    });
    let states: Vec<String> = c
        .query(
            "SELECT state FROM migrate_progress WHERE parent_job = $1",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(states, vec!["paused", "paused"]);
    let (s, _) = state(&mut c, id);
    assert_eq!(s, "paused");
    // Nothing moves while paused.
    let before: i64 = c
        .query_one("SELECT count(*) FROM items WHERE n = 1", &[])
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_millis(500));
    let after: i64 = c
        .query_one("SELECT count(*) FROM items WHERE n = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(before, after, "a paused job's slices do nothing");

    c.execute("SELECT migrate_resume($1)", &[&id]).unwrap();
    wait_until("the slices to run again", LONG, || {
        (slices(&mut c, id).1 > 0).then_some(())
    });
    c.execute("SELECT migrate_cancel($1)", &[&id]).unwrap();
    wait_until("the slices to stop", LONG, || {
        (slices(&mut c, id).1 == 0).then_some(())
    });
    let states: Vec<String> = c
        .query(
            "SELECT DISTINCT state FROM migrate_progress WHERE parent_job = $1",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(states, vec!["cancelled"]);

    // Retry goes on where each slice stopped: still each row once.
    c.execute("SELECT migrate_retry($1)", &[&id]).unwrap();
    wait_state(&mut c, id, "succeeded");
    assert_once(&mut c, "items", 100_000);
}

#[test]
fn a_budget_is_for_the_whole_job_not_each_slice() {
    let cluster = Cluster::start_with("slice-budget", &["pg_migrate.max_workers=3"]);
    let mut c = cluster.create_db("app");
    counter_table(&mut c, 12_000);
    let t0 = Instant::now();
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', max_rows_per_second => 3000, parallel => 2)",
    );
    wait_state(&mut c, id, "succeeded");
    let secs = t0.elapsed().as_secs_f64();
    // 12,000 rows at 3,000 rows/s is 4 s; a budget per slice would let two
    // slices do it in 2 s.
    assert!(
        secs >= 3.3,
        "12,000 rows at 3,000 rows/s in all took {secs:.1} s"
    );
    assert_once(&mut c, "items", 12_000);
}

#[test]
fn a_slice_stopped_on_its_own_holds_the_job_and_says_how_to_go_on() {
    let cluster = Cluster::start_with("slice-stopped", &["pg_migrate.max_workers=3"]);
    let mut c = cluster.create_db("app");
    counter_table(&mut c, 60_000);
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 500, sleep_ms => 50, parallel => 2)",
    );
    let first: i64 = wait_until("the slices", LONG, || {
        c.query_opt(
            "SELECT job_id FROM migrate_progress WHERE parent_job = $1 AND worker_pid IS NOT NULL ORDER BY job_id LIMIT 1",
            &[&id],
        )
        .unwrap()
        .map(|r| r.get(0))
    });
    c.execute("SELECT migrate_pause($1)", &[&first]).unwrap();
    let reason = wait_until("the job to say why it waits", LONG, || {
        let (s, reason) = state(&mut c, id);
        reason
            .filter(|r| s != "succeeded" && r.starts_with(&format!("its slice job {first} paused")))
    });
    assert!(
        reason.contains(&format!("migrate_resume({first})")),
        "{reason}"
    );
    c.execute("SELECT migrate_resume($1)", &[&first]).unwrap();
    wait_state(&mut c, id, "succeeded");
    assert_once(&mut c, "items", 60_000);
}

#[test]
fn refused_at_submit_partition_keys_bad_parallel_and_partitions_the_role_may_not_update() {
    let cluster = Cluster::start("slice-refusals");
    let mut c = cluster.create_db("app");
    partitioned_table(&mut c, 1_000);
    let jobs = |c: &mut Client| -> i64 {
        c.query_one("SELECT count(*) FROM migrate_progress", &[])
            .unwrap()
            .get(0)
    };
    for (sql, state, words) in [
        // The partition keys are in the primary key, which a backfill
        // never changes.
        (
            "SELECT migrate_backfill('events', 'at = at + 1')",
            "22023",
            "key column \"at\"",
        ),
        (
            "SELECT migrate_backfill('events', 'n = 1', parallel => 0)",
            "22023",
            "parallel",
        ),
        (
            "SELECT migrate_backfill('events', 'n = 1', parallel => 65)",
            "22023",
            "parallel",
        ),
    ] {
        let e = c.query_one(sql, &[]).unwrap_err();
        assert_eq!(sqlstate(&e), state, "{sql}: {}", message(&e));
        assert!(message(&e).contains(words), "{sql}: {}", message(&e));
    }
    // A role granted the parent but not a partition.
    c.batch_execute(
        "CREATE ROLE app_writer LOGIN;
         GRANT SELECT, UPDATE ON events TO app_writer;
         GRANT SELECT, UPDATE ON events_q1_0, events_q1_1, events_q1_2, events_q1_3 TO app_writer;",
    )
    .unwrap();
    let mut w = connect_as(&cluster, "app", "app_writer");
    let e = w
        .query_one("SELECT migrate_backfill('events', 'n = n + 1')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{}", message(&e));
    assert!(
        message(&e).starts_with("permission denied for partition public.events_")
            && !message(&e).contains("events_q1"),
        "{}",
        message(&e)
    );
    assert!(common::detail_and_hint(&e).contains("GRANT SELECT, UPDATE ON public.events_"));
    assert_eq!(jobs(&mut c), 0, "nothing queued");
}

#[test]
fn another_role_can_neither_see_the_slices_commands_nor_stop_them() {
    let cluster = Cluster::start_with("slice-hostile", &["pg_migrate.max_workers=3"]);
    let mut c = cluster.create_db("app");
    counter_table(&mut c, 60_000);
    c.batch_execute("CREATE ROLE mallory LOGIN").unwrap();
    let id = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 500, sleep_ms => 50, parallel => 2)",
    );
    wait_until("two slices", LONG, || {
        (slices(&mut c, id).0 == 2).then_some(())
    });
    let slice: i64 = c
        .query_one(
            "SELECT min(job_id) FROM migrate_progress WHERE parent_job = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    let mut m = connect_as(&cluster, "app", "mallory");
    for f in ["migrate_pause", "migrate_cancel"] {
        for target in [id, slice] {
            let e = m
                .execute(&format!("SELECT {f}($1)"), &[&target])
                .unwrap_err();
            assert_eq!(sqlstate(&e), "42501", "{f}({target}): {}", message(&e));
        }
    }
    let hidden: Option<String> = m
        .query_one(
            "SELECT command FROM migrate_progress WHERE job_id = $1",
            &[&slice],
        )
        .unwrap()
        .get(0);
    assert_eq!(hidden, None);
    wait_state(&mut c, id, "succeeded");
    assert_once(&mut c, "items", 60_000);
}
