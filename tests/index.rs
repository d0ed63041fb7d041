//! Index jobs against a real server: a build while a writer writes, a
//! schedule and a window, a failed build cleaned up and retried, a unique
//! violation, pause and cancel of a waiting build, a worker stopped
//! mid-build, a recurring reindex, a drop, CALL migrate_run.

mod common;

use common::{stays_for, wait_until, Cluster};
use postgres::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

fn submit(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", common::message(&e)))
        .get(0)
}

fn accounts(c: &mut Client, rows: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, balance int NOT NULL DEFAULT 0);
         INSERT INTO accounts (id, email) SELECT g, 'user' || g || '@example.com' FROM generate_series(1, {rows}) g;
         ANALYZE accounts;"
    ))
    .unwrap();
}

fn state(c: &mut Client, id: i64) -> String {
    c.query_one(
        "SELECT state FROM migrate_progress WHERE job_id = $1",
        &[&id],
    )
    .unwrap()
    .get(0)
}

fn wait_state(c: &mut Client, id: i64, want: &str) {
    wait_until(&format!("job {id} to be {want}"), LONG, || {
        let s = state(c, id);
        if want != "failed" {
            assert_ne!(s, "failed", "job {id} failed: {:?}", error(c, id));
        }
        (s == want).then_some(())
    })
}

fn error(c: &mut Client, id: i64) -> (Option<String>, Option<String>, Option<String>) {
    let r = c
        .query_one(
            "SELECT error, error_sqlstate, error_detail FROM pgmigrate.jobs WHERE job_id = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// (outcome, waited_for, error, note) of every attempt, in order.
type Attempt = (String, Option<String>, Option<String>, Option<String>);

fn attempts(c: &mut Client, id: i64) -> Vec<Attempt> {
    c.query(
        "SELECT outcome, waited_for, error, note FROM migrate_index_builds WHERE job_id = $1 ORDER BY attempt",
        &[&id],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// Indexes of the table: (name, valid).
fn indexes(c: &mut Client, table: &str) -> Vec<(String, bool)> {
    c.query(
        "SELECT c.relname::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE i.indrelid = $1::text::regclass ORDER BY 1",
        &[&table],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// A session with an open transaction that wrote to the table: every
/// CONCURRENTLY statement on it waits for this one.
fn blocker(cluster: &Cluster, table: &str) -> (Client, i32) {
    let mut b = cluster.connect("app");
    b.batch_execute(&format!(
        "SET application_name = 'long_report'; BEGIN; UPDATE {table} SET balance = balance WHERE id = 1;"
    ))
    .unwrap();
    let pid: i32 = b.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    (b, pid)
}

/// Wait until the job's build waits for backend `pid`, as migrate_progress
/// shows it.
fn wait_waiting_for(c: &mut Client, id: i64, pid: i32) -> String {
    wait_until(&format!("job {id} to wait for pid {pid}"), LONG, || {
        let r = c
            .query_one(
                "SELECT waiting_for_pid, wait_reason, phase FROM migrate_progress WHERE job_id = $1",
                &[&id],
            )
            .unwrap();
        let waiting: Option<i32> = r.get(0);
        let reason: Option<String> = r.get(1);
        let phase: Option<String> = r.get(2);
        (waiting == Some(pid)).then(|| {
            format!(
                "{} | {}",
                phase.unwrap_or_default(),
                reason.unwrap_or_default()
            )
        })
    })
}

/// Update random rows from another connection until told to stop; the
/// longest and the typical time one update took.
fn writer(cluster: &Cluster, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Duration>> {
    let url = cluster.url("app");
    std::thread::spawn(move || {
        let mut w = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let update = w
            .prepare("UPDATE accounts SET balance = balance + 1 WHERE id = $1")
            .unwrap();
        let mut times = Vec::new();
        let mut n: i64 = 0;
        while !stop.load(Ordering::Relaxed) {
            // Rows spread over the first 200,000 ids.
            n += 1;
            let id = (n * 7919) % 200_000 + 1;
            let t = Instant::now();
            w.execute(&update, &[&id]).unwrap();
            times.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
        times
    })
}

fn max_ms(times: &[Duration]) -> f64 {
    times
        .iter()
        .max()
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

#[test]
fn a_build_never_blocks_a_writer_that_a_plain_create_index_blocks() {
    let cluster = Cluster::start("ix-writer");
    let mut c = cluster.create_db("app");
    accounts(&mut c, 200_000);
    c.batch_execute("INSERT INTO accounts (id, email) SELECT g, md5(g::text) FROM generate_series(200001, 1000000) g; ANALYZE accounts")
        .unwrap();

    // Through pg_migrate.
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&cluster, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let id = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX accounts_email_md5 ON accounts (md5(email), email)')",
    );
    wait_state(&mut c, id, "succeeded");
    let job_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during_job = w.join().unwrap();

    // A plain CREATE INDEX of the same index, for comparison.
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&cluster, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    c.batch_execute("CREATE INDEX accounts_email_md5_plain ON accounts (md5(email), email)")
        .unwrap();
    let plain_time = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let during_plain = w.join().unwrap();

    let (job_max, plain_max) = (max_ms(&during_job), max_ms(&during_plain));
    println!(
        "writer max latency: {job_max:.1} ms during migrate_create_index ({} updates, {:.1} s), \
         {plain_max:.1} ms during plain CREATE INDEX ({} updates, {:.1} s)",
        during_job.len(),
        job_time.as_secs_f64(),
        during_plain.len(),
        plain_time.as_secs_f64()
    );
    assert!(
        during_job.len() > 50,
        "the writer kept writing during the build"
    );
    assert!(
        plain_max >= plain_time.as_secs_f64() * 1000.0 * 0.5,
        "the plain build blocks the writer ({plain_max:.1} ms of {plain_time:?})"
    );
    assert!(
        job_max * 4.0 < plain_max,
        "the concurrent build never blocks the writer as the plain one does ({job_max:.1} ms vs {plain_max:.1} ms)"
    );
    assert!(indexes(&mut c, "accounts").contains(&("accounts_email_md5".into(), true)));
    let built: (String, i64) = c
        .query_one(
            "SELECT outcome, index_size FROM migrate_index_builds WHERE job_id = $1",
            &[&id],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(built.0, "succeeded");
    assert!(built.1 > 1_000_000, "its size is recorded: {}", built.1);
}

#[test]
fn a_scheduled_build_starts_at_its_time_and_inside_its_window() {
    let cluster = Cluster::start("ix-schedule");
    let mut c = cluster.create_db("app");
    accounts(&mut c, 5_000);
    let id = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX ON accounts (balance)', run_at => clock_timestamp() + interval '3 seconds')",
    );
    stays_for(
        "the build not to start before its time",
        Duration::from_secs(2),
        || {
            state(&mut c, id) == "queued"
                && indexes(&mut c, "accounts")
                    .iter()
                    .all(|(n, _)| n != "accounts_balance_idx")
        },
    );
    wait_state(&mut c, id, "succeeded");
    let on_time: bool = c
        .query_one(
            "SELECT b.started_at >= date_trunc('second', j.run_at) FROM migrate_index_builds b
               JOIN migrate_progress j USING (job_id) WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(on_time, "started no earlier than run_at");

    // A window open during even minutes only: whatever minute this is,
    // the build starts inside one.
    let id = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX ON accounts (email)', window_start => '*/2 * * * *', window_length => '1 minute')",
    );
    let odd: bool = c
        .query_one(
            "SELECT extract(minute FROM clock_timestamp())::int % 2 = 1",
            &[],
        )
        .unwrap()
        .get(0);
    if odd {
        let reason = wait_until("the build to wait for its window", LONG, || {
            let r = c
                .query_one(
                    "SELECT state, wait_reason FROM migrate_progress WHERE job_id = $1",
                    &[&id],
                )
                .unwrap();
            let (s, reason): (String, Option<String>) = (r.get(0), r.get(1));
            reason.filter(|_| s == "waiting")
        });
        assert!(
            reason.starts_with(
                "outside its maintenance window (*/2 * * * * for 1 min); it opens at "
            ),
            "{reason}"
        );
        assert!(
            attempts(&mut c, id).is_empty(),
            "nothing started outside the window"
        );
    }
    wait_state(&mut c, id, "succeeded");
    let inside: bool = c
        .query_one(
            "SELECT bool_and(extract(minute FROM started_at)::int % 2 = 0) FROM migrate_index_builds WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(inside, "the build started inside an even minute");
}

#[test]
fn a_build_that_waits_too_long_is_cleaned_up_and_retried() {
    let cluster = Cluster::start("ix-retry");
    let mut c = cluster.create_db("app");
    accounts(&mut c, 20_000);
    let (mut b, blocker_pid) = blocker(&cluster, "accounts");
    let id = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX accounts_balance_idx ON accounts (balance)',
                                     max_wait => '1 s', retry_delay => '1 s', max_retries => 20)",
    );
    // The first attempt gives up after a second, names what it waited
    // for, and the job waits to try again.
    let first = wait_until("the first attempt to give up", LONG, || {
        attempts(&mut c, id)
            .into_iter()
            .next()
            .filter(|a| a.0 == "retrying")
    });
    let waited = first.1.unwrap_or_default();
    assert!(
        waited.starts_with(&format!("pid {blocker_pid}, application 'long_report'")),
        "{waited}"
    );
    let err = first.2.unwrap_or_default();
    assert!(
        err.starts_with("waited longer than max_wait (1 s) waiting for writers before build: pid "),
        "{err}"
    );
    // The blocker ends: the next attempt drops whatever invalid index is
    // left and builds.
    b.batch_execute("COMMIT").unwrap();
    wait_state(&mut c, id, "succeeded");
    assert_eq!(
        indexes(&mut c, "accounts"),
        vec![
            ("accounts_balance_idx".into(), true),
            ("accounts_pkey".into(), true)
        ],
        "one valid index, nothing invalid left"
    );
    let all = attempts(&mut c, id);
    assert!(all.len() >= 2, "{all:?}");
    assert_eq!(all.last().unwrap().0, "succeeded");
    assert!(
        all.iter()
            .filter_map(|a| a.3.as_deref())
            .any(|n| n.contains("dropped invalid index public.accounts_balance_idx")),
        "the invalid index was dropped: {all:?}"
    );
    let retries: i32 = c
        .query_one(
            "SELECT retries FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(retries >= 1);
}

#[test]
fn a_unique_violation_fails_at_once_with_its_key_and_leaves_nothing() {
    let cluster = Cluster::start("ix-unique");
    let mut c = cluster.create_db("app");
    accounts(&mut c, 10_000);
    c.batch_execute("INSERT INTO accounts (id, email) VALUES (10001, 'user42@example.com')")
        .unwrap();
    let id = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE UNIQUE INDEX accounts_email_key ON accounts (email)', retry_delay => '1 s')",
    );
    wait_state(&mut c, id, "failed");
    let (message, sqlstate, detail) = error(&mut c, id);
    assert_eq!(sqlstate.as_deref(), Some("23505"));
    assert_eq!(
        message.as_deref(),
        Some("could not create unique index \"accounts_email_key\"")
    );
    assert_eq!(
        detail.as_deref(),
        Some("Key (email)=(user42@example.com) is duplicated.")
    );
    let all = attempts(&mut c, id);
    assert_eq!(all.len(), 1, "no retry: {all:?}");
    assert_eq!(all[0].0, "failed");
    assert_eq!(
        all[0].3.as_deref(),
        Some("dropped invalid index public.accounts_email_key")
    );
    assert_eq!(
        indexes(&mut c, "accounts"),
        vec![("accounts_pkey".into(), true)]
    );
    // CALL migrate_wait says so too.
    let e = c
        .batch_execute(&format!("CALL migrate_wait({id})"))
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "23505");
    assert!(common::detail_and_hint(&e).contains("Key (email)=(user42@example.com) is duplicated."));
}

#[test]
fn pause_and_cancel_interrupt_a_waiting_build_and_clean_up() {
    let cluster = Cluster::start("ix-pause");
    let mut c = cluster.create_db("app");
    accounts(&mut c, 20_000);

    let (mut b, blocker_pid) = blocker(&cluster, "accounts");
    let id = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX accounts_balance_idx ON accounts (balance)')",
    );
    let shown = wait_waiting_for(&mut c, id, blocker_pid);
    assert!(
        shown.starts_with(&format!(
            "waiting for writers before build | the build waits for pid {blocker_pid}, application 'long_report', client backend, transaction open "
        )),
        "{shown}"
    );
    c.batch_execute(&format!("SELECT migrate_pause({id})"))
        .unwrap();
    assert_eq!(state(&mut c, id), "paused");
    // The cleanup waits for the blocker too (DROP INDEX CONCURRENTLY).
    b.batch_execute("COMMIT").unwrap();
    let paused = wait_until("the paused attempt to end", LONG, || {
        attempts(&mut c, id)
            .into_iter()
            .next()
            .filter(|a| a.0 != "running")
    });
    assert_eq!(paused.0, "paused");
    assert_eq!(paused.2, None, "a pause is not an error");
    assert_eq!(
        indexes(&mut c, "accounts"),
        vec![("accounts_pkey".into(), true)]
    );
    c.batch_execute(&format!("SELECT migrate_resume({id})"))
        .unwrap();
    wait_state(&mut c, id, "succeeded");
    assert!(indexes(&mut c, "accounts").contains(&("accounts_balance_idx".into(), true)));

    let (mut b, blocker_pid) = blocker(&cluster, "accounts");
    let id = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX accounts_email_idx ON accounts (email)')",
    );
    wait_waiting_for(&mut c, id, blocker_pid);
    c.batch_execute(&format!("SELECT migrate_cancel({id})"))
        .unwrap();
    b.batch_execute("COMMIT").unwrap();
    let cancelled = wait_until("the cancelled attempt to end", LONG, || {
        attempts(&mut c, id)
            .into_iter()
            .next()
            .filter(|a| a.0 != "running")
    });
    assert_eq!(cancelled.0, "cancelled");
    assert_eq!(state(&mut c, id), "cancelled");
    assert!(
        !indexes(&mut c, "accounts")
            .iter()
            .any(|(n, _)| n == "accounts_email_idx"),
        "the cancelled build left nothing"
    );
    let worker: Option<i32> = c
        .query_one(
            "SELECT worker_pid FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(worker, None, "the worker let go of it");
}

#[test]
fn a_worker_stopped_mid_build_leaves_nothing_and_the_job_finishes() {
    let cluster = Cluster::start("ix-terminate");
    let mut c = cluster.create_db("app");
    accounts(&mut c, 20_000);
    let (mut b, blocker_pid) = blocker(&cluster, "accounts");
    let id = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX accounts_balance_idx ON accounts (balance)')",
    );
    wait_waiting_for(&mut c, id, blocker_pid);
    assert!(
        indexes(&mut c, "accounts").contains(&("accounts_balance_idx".into(), false)),
        "the build has its invalid index in the catalog"
    );
    let worker: i32 = c
        .query_one(
            "SELECT worker_pid FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    c.batch_execute(&format!("SELECT pg_terminate_backend({worker})"))
        .unwrap();
    wait_until("the worker to be gone", LONG, || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&worker],
            )
            .unwrap()
            .get(0);
        (n == 0).then_some(())
    });
    b.batch_execute("COMMIT").unwrap();
    wait_state(&mut c, id, "succeeded");
    assert_eq!(
        indexes(&mut c, "accounts"),
        vec![
            ("accounts_balance_idx".into(), true),
            ("accounts_pkey".into(), true)
        ]
    );
    let all = attempts(&mut c, id);
    assert_eq!(all[0].0, "interrupted", "{all:?}");
    assert_eq!(all.last().unwrap().0, "succeeded");
    assert!(
        all.last().unwrap().3.as_deref().is_some_and(|n| n.contains(
            "dropped invalid index public.accounts_balance_idx left by an earlier attempt"
        )),
        "{all:?}"
    );
}

#[test]
fn a_recurring_reindex_queues_itself_again_and_a_drop_drops() {
    let cluster = Cluster::start("ix-reindex");
    let mut c = cluster.create_db("app");
    accounts(&mut c, 20_000);
    c.batch_execute("CREATE INDEX accounts_email_idx ON accounts (email); SET TimeZone = 'UTC'")
        .unwrap();
    let before: u32 = c
        .query_one("SELECT 'accounts_email_idx'::regclass::oid", &[])
        .unwrap()
        .get(0);
    let id = submit(
        &mut c,
        "SELECT migrate_reindex('accounts_email_idx', run_at => now(), schedule => '0 3 * * *')",
    );
    wait_until("the first rebuild", LONG, || {
        attempts(&mut c, id)
            .into_iter()
            .next()
            .filter(|a| a.0 == "succeeded")
    });
    wait_state(&mut c, id, "queued");
    let next: String = c
        .query_one(
            "SELECT to_char(run_at AT TIME ZONE 'UTC', 'HH24:MI') || '|' || (run_at > now())::text FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(next, "03:00|true", "queued for its next 03:00");
    let after: u32 = c
        .query_one("SELECT 'accounts_email_idx'::regclass::oid", &[])
        .unwrap()
        .get(0);
    assert_ne!(
        before, after,
        "REINDEX CONCURRENTLY built a new index under the old name"
    );
    assert_eq!(
        indexes(&mut c, "accounts"),
        vec![
            ("accounts_email_idx".into(), true),
            ("accounts_pkey".into(), true)
        ],
        "nothing left over"
    );
    c.batch_execute(&format!("SELECT migrate_cancel({id})"))
        .unwrap();
    assert_eq!(state(&mut c, id), "cancelled");

    let id = submit(&mut c, "SELECT migrate_drop_index('accounts_email_idx')");
    wait_state(&mut c, id, "succeeded");
    assert_eq!(
        indexes(&mut c, "accounts"),
        vec![("accounts_pkey".into(), true)]
    );
    let size: Option<i64> = c
        .query_one(
            "SELECT index_size FROM migrate_index_builds WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(
        size.is_some_and(|s| s > 0),
        "the dropped index's size is recorded"
    );
}

#[test]
fn migrate_run_hands_an_index_job_to_a_worker_now() {
    let cluster = Cluster::start("ix-run");
    let mut c = cluster.create_db("app");
    accounts(&mut c, 20_000);
    let id = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX accounts_balance_idx ON accounts (balance)',
                                     window_start => '0 3 1 1 *', window_length => '1 hour')",
    );
    wait_until("the job to wait for its window", LONG, || {
        (state(&mut c, id) == "waiting").then_some(())
    });
    let notices = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = notices.clone();
    let mut config: postgres::Config = cluster.url("app").parse().unwrap();
    config.notice_callback(move |n| seen.lock().unwrap().push(n.message().to_string()));
    let mut s = config.connect(postgres::NoTls).unwrap();
    s.batch_execute(&format!("CALL migrate_run({id})")).unwrap();
    assert_eq!(state(&mut c, id), "succeeded");
    let notices = notices.lock().unwrap().clone();
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with(&format!("job {id} succeeded: created index public.accounts_balance_idx in 1 attempt, index size "))),
        "{notices:?}"
    );
}

#[test]
fn one_index_job_per_table_at_a_time() {
    let cluster = Cluster::start_with("ix-one-per-table", &["pg_migrate.max_workers=3"]);
    let mut c = cluster.create_db("app");
    accounts(&mut c, 20_000);
    let (mut b, blocker_pid) = blocker(&cluster, "accounts");
    let first = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX accounts_balance_idx ON accounts (balance)')",
    );
    wait_waiting_for(&mut c, first, blocker_pid);
    let second = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX accounts_email_idx ON accounts (email)')",
    );
    stays_for(
        "the second build on the table to wait for the first",
        Duration::from_secs(2),
        || {
            let r = c
                .query_one(
                    "SELECT state, wait_reason FROM migrate_progress WHERE job_id = $1",
                    &[&second],
                )
                .unwrap();
            let (s, reason): (String, Option<String>) = (r.get(0), r.get(1));
            s == "queued"
                && reason.as_deref()
                    == Some(&format!(
                        "waits for job {first}: one index job per table at a time"
                    ))
                && attempts(&mut c, second).is_empty()
        },
    );
    b.batch_execute("COMMIT").unwrap();
    wait_state(&mut c, first, "succeeded");
    wait_state(&mut c, second, "succeeded");
    let (first_end, second_start): (std::time::SystemTime, std::time::SystemTime) = c
        .query_one(
            "SELECT (SELECT finished_at FROM migrate_index_builds WHERE job_id = $1),
                    (SELECT started_at FROM migrate_index_builds WHERE job_id = $2)",
            &[&first, &second],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(
        second_start >= first_end,
        "the second began after the first ended"
    );
}

#[test]
fn cancelling_migrate_run_of_an_index_job_pauses_it_and_cleans_up() {
    let cluster = Cluster::start("ix-run-cancel");
    let mut c = cluster.create_db("app");
    accounts(&mut c, 20_000);
    let (mut b, blocker_pid) = blocker(&cluster, "accounts");
    let id = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX accounts_balance_idx ON accounts (balance)', run_at => now() + interval '1 day')",
    );
    let url = cluster.url("app");
    let runner = std::thread::spawn(move || {
        let mut s = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        s.batch_execute("SET application_name = 'deployer'")
            .unwrap();
        s.batch_execute(&format!("CALL migrate_run({id})"))
            .unwrap_err()
    });
    wait_waiting_for(&mut c, id, blocker_pid);
    c.batch_execute(
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'deployer'",
    )
    .unwrap();
    let e = runner.join().unwrap();
    assert_eq!(common::sqlstate(&e), "57014");
    assert_eq!(
        common::message(&e),
        format!("CALL migrate_run({id}) was cancelled; job {id} is paused")
    );
    assert_eq!(state(&mut c, id), "paused");
    b.batch_execute("COMMIT").unwrap();
    let ended = wait_until("the interrupted attempt to end", LONG, || {
        attempts(&mut c, id)
            .into_iter()
            .next()
            .filter(|a| a.0 != "running")
    });
    assert_eq!(ended.0, "paused");
    assert_eq!(
        indexes(&mut c, "accounts"),
        vec![("accounts_pkey".into(), true)]
    );
}

/// A partitioned table two levels deep: `m` by date into `m_2024` (itself
/// by id into `m_2024_a` and `m_2024_b`), `m_2025` and a default `m_def`.
fn partitioned(c: &mut Client, rows: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE m (id bigint NOT NULL, at date NOT NULL, v int, note text) PARTITION BY RANGE (at);
         CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY RANGE (id);
         CREATE TABLE m_2024_a PARTITION OF m_2024 FOR VALUES FROM (0) TO (5000);
         CREATE TABLE m_2024_b PARTITION OF m_2024 FOR VALUES FROM (5000) TO (MAXVALUE);
         CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
         CREATE TABLE m_def PARTITION OF m DEFAULT;
         INSERT INTO m SELECT g, date '2024-01-01' + (g % 900)::int, g FROM generate_series(1, {rows}) g;
         ANALYZE m;"
    ))
    .unwrap();
}

/// Each partition of `m` (at any depth) with the index attached to
/// `index`'s tree on it, and whether that is valid; and `index`'s validity.
fn index_tree(c: &mut Client, index: &str) -> (Vec<(String, String, bool)>, bool) {
    let parts = c
        .query(
            "SELECT t.relid::regclass::text, coalesce(x.relid::regclass::text, '-'), coalesce(i.indisvalid, false)
               FROM pg_partition_tree('m') t
               LEFT JOIN pg_index i ON i.indrelid = t.relid
                AND i.indexrelid IN (SELECT relid FROM pg_partition_tree($1::text::regclass))
               LEFT JOIN pg_partition_tree($1::text::regclass) x ON x.relid = i.indexrelid
              WHERE t.level > 0 ORDER BY 1",
            &[&index],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let valid: bool = c
        .query_one(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = $1::text::regclass",
            &[&index],
        )
        .unwrap()
        .get(0);
    (parts, valid)
}

#[test]
fn a_partitioned_tables_index_is_built_partition_by_partition_and_ends_valid() {
    let cluster = Cluster::start("ix-parts");
    let mut c = cluster.create_db("app");
    partitioned(&mut c, 20_000);
    // Unique (with the partition keys), partial, with an expression.
    let id = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE UNIQUE INDEX m_key ON m (id, at, (lower(note))) WHERE v > 0')",
    );
    wait_state(&mut c, id, "succeeded");
    let (parts, valid) = index_tree(&mut c, "m_key");
    assert!(valid, "the partitioned index ends valid");
    assert_eq!(
        parts,
        vec![
            ("m_2024".into(), "m_2024_m_key".into(), true),
            ("m_2024_a".into(), "m_2024_a_m_key".into(), true),
            ("m_2024_b".into(), "m_2024_b_m_key".into(), true),
            ("m_2025".into(), "m_2025_m_key".into(), true),
            ("m_def".into(), "m_def_m_key".into(), true),
        ]
    );
    // One concurrent build per leaf, each attached; the index ON ONLY each
    // partitioned table.
    let statements: Vec<String> = c
        .query(
            "SELECT statement FROM migrate_index_builds WHERE job_id = $1 AND outcome = 'succeeded' ORDER BY attempt",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let count = |p: &str| statements.iter().filter(|s| s.starts_with(p)).count();
    assert_eq!(
        count("CREATE UNIQUE INDEX CONCURRENTLY"),
        4,
        "{statements:#?}"
    );
    assert_eq!(
        count("CREATE UNIQUE INDEX \"m_2024_m_key\" ON ONLY public.m_2024"),
        1
    );
    assert_eq!(count("ALTER INDEX"), 5, "{statements:#?}");
    assert_eq!(statements.len(), 11, "{statements:#?}");
    let r = c
        .query_one(
            "SELECT partitions_done, partitions_total FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(
        (r.get::<_, Option<i64>>(0), r.get::<_, Option<i64>>(1)),
        (Some(4), Some(4))
    );
    // The index works as a unique index of m.
    let dup = c
        .execute(
            "INSERT INTO m VALUES (6001, '2024-03-01', 1, 'x'), (6001, '2024-03-01', 1, 'X')",
            &[],
        )
        .unwrap_err();
    assert_eq!(common::sqlstate(&dup), "23505");
}

#[test]
fn a_partitioned_build_resumes_after_kill_9_without_building_a_partition_twice() {
    let cluster = Cluster::start("ix-parts-kill");
    let mut c = cluster.create_db("app");
    partitioned(&mut c, 20_000);
    // A partition whose name needs quoting, in a schema of its own.
    c.batch_execute(
        "CREATE SCHEMA \"Odd s\"; CREATE TABLE \"Odd s\".\"M 2029 \"\"x\"\"; --\" PARTITION OF m
           FOR VALUES FROM ('2029-01-01') TO ('2030-01-01');
         INSERT INTO m VALUES (7, '2029-05-01', 7);",
    )
    .unwrap();
    c.batch_execute("CREATE TABLE m_2030 (LIKE m INCLUDING ALL); INSERT INTO m_2030 VALUES (1, '2030-02-01', 1)")
        .unwrap();
    // m_2024_b comes last: its build waits for this lock (a lock, not a
    // write: an open transaction that wrote holds up every CONCURRENTLY
    // build, on any table).
    let mut b = cluster.connect("app");
    b.batch_execute("BEGIN; LOCK TABLE m_2024_b IN SHARE MODE;")
        .unwrap();
    let id = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX m_v_idx ON m (v)')",
    );
    let worker: i32 = wait_until("the build of m_2024_b to wait for its lock", LONG, || {
        let r = c
            .query_one(
                "SELECT p.phase, a.pid FROM migrate_progress p
                   LEFT JOIN pg_stat_activity a ON a.pid = p.worker_pid AND a.wait_event_type = 'Lock'
                  WHERE p.job_id = $1",
                &[&id],
            )
            .unwrap();
        let phase: Option<String> = r.get(0);
        let waiting: Option<i32> = r.get(1);
        assert_ne!(state(&mut c, id), "failed");
        (phase.is_some_and(|p| p.starts_with("partition 5 of 5, public.m_2024_b")))
            .then_some(waiting)
            .flatten()
    });
    // Partitions created or attached while the job runs.
    c.batch_execute(
        "CREATE TABLE m_2031 PARTITION OF m FOR VALUES FROM ('2031-01-01') TO ('2032-01-01');
         ALTER TABLE m ATTACH PARTITION m_2030 FOR VALUES FROM ('2030-01-01') TO ('2031-01-01');",
    )
    .unwrap();
    // The lock is held until the crash ends every session.
    drop(c);
    cluster.kill_9(worker);
    drop(b);
    let mut c = cluster.connect("app");
    wait_state(&mut c, id, "succeeded");
    let (parts, valid) = index_tree(&mut c, "m_v_idx");
    assert!(valid);
    assert!(
        parts.iter().all(|(_, ix, ok)| ix != "-" && *ok),
        "{parts:#?}"
    );
    assert_eq!(parts.len(), 8, "{parts:#?}");
    // Every leaf built by the job was built once; the one the kill cut
    // short was cleaned up and built again.
    let builds: Vec<(String, String)> = c
        .query(
            "SELECT outcome, statement FROM migrate_index_builds
              WHERE job_id = $1 AND statement LIKE 'CREATE INDEX CONCURRENTLY%' ORDER BY attempt",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for leaf in ["m_2024_a", "m_2025", "m_def"] {
        let n = builds
            .iter()
            .filter(|(_, s)| s.contains(&format!(" ON public.{leaf} ")))
            .count();
        assert_eq!(n, 1, "{leaf} built once: {builds:#?}");
    }
    let b_builds: Vec<&str> = builds
        .iter()
        .filter(|(_, s)| s.contains(" ON public.m_2024_b "))
        .map(|(o, _)| o.as_str())
        .collect();
    assert_eq!(b_builds, vec!["interrupted", "succeeded"], "{builds:#?}");
    assert!(cluster.log().contains("terminated by signal 9"));
}

#[test]
fn a_partitioned_tables_index_needs_every_partition_to_be_the_callers() {
    let cluster = Cluster::start("ix-parts-owner");
    let mut c = cluster.create_db("app");
    partitioned(&mut c, 100);
    c.batch_execute(
        "CREATE ROLE app_owner LOGIN; CREATE ROLE intruder LOGIN;
         GRANT CREATE, USAGE ON SCHEMA public TO app_owner;
         ALTER TABLE m OWNER TO app_owner; ALTER TABLE m_2024 OWNER TO app_owner;
         ALTER TABLE m_2024_a OWNER TO app_owner; ALTER TABLE m_2025 OWNER TO app_owner;
         ALTER TABLE m_def OWNER TO app_owner;
         ALTER TABLE m_2024_b OWNER TO intruder;",
    )
    .unwrap();
    let mut o = postgres::Client::connect(
        &cluster
            .url("app")
            .replace("user=postgres", "user=app_owner"),
        postgres::NoTls,
    )
    .unwrap();
    let e = o
        .query_one("SELECT migrate_create_index('CREATE INDEX ON m (v)')", &[])
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "42501", "{}", common::message(&e));
    assert!(
        common::message(&e).contains("public.m_2024_b (a partition of public.m)"),
        "{}",
        common::message(&e)
    );
    // ONLY asks for an index that stays invalid: refused with the way out.
    c.batch_execute("ALTER TABLE m_2024_b OWNER TO app_owner")
        .unwrap();
    let e = o
        .query_one(
            "SELECT migrate_create_index('CREATE INDEX ON ONLY m (v)')",
            &[],
        )
        .unwrap_err();
    assert!(
        common::detail_and_hint(&e).contains("leave out ONLY"),
        "{}",
        common::detail_and_hint(&e)
    );
    // The owner's job builds on every partition as the owner.
    let id: i64 = o
        .query_one(
            "SELECT migrate_create_index('CREATE INDEX m_v ON m (v)')",
            &[],
        )
        .unwrap()
        .get(0);
    wait_state(&mut c, id, "succeeded");
    let owners: Vec<String> = c
        .query(
            "SELECT DISTINCT pg_get_userbyid(c.relowner)::text FROM pg_partition_tree('m_v') t JOIN pg_class c ON c.oid = t.relid",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, vec!["app_owner".to_string()]);
}

#[test]
fn a_partitioned_index_is_rebuilt_concurrently_and_dropped_without_a_long_wait() {
    let cluster = Cluster::start("ix-parts-reindex");
    let mut c = cluster.create_db("app");
    partitioned(&mut c, 5_000);
    c.batch_execute("CREATE INDEX m_v ON m (v)").unwrap();
    let files = |c: &mut Client| -> Vec<(String, u32)> {
        c.query(
            "SELECT c.relname::text, c.relfilenode::oid::int8::int4 FROM pg_partition_tree('m_v') t
               JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get::<_, i32>(1) as u32))
        .collect()
    };
    let before = files(&mut c);
    assert_eq!(before.len(), 4);
    let id = submit(&mut c, "SELECT migrate_reindex('m_v')");
    wait_state(&mut c, id, "succeeded");
    let after = files(&mut c);
    assert_eq!(after.len(), 4, "{after:?}");
    for ((n0, f0), (n1, f1)) in before.iter().zip(&after) {
        assert_eq!(n0, n1);
        assert_ne!(f0, f1, "{n0} was rebuilt");
    }
    let (_, valid) = index_tree(&mut c, "m_v");
    assert!(valid);
    let copies: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_cc%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(copies, 0, "no copy left behind");

    // The drop needs ACCESS EXCLUSIVE on every partition: a reader of one
    // holds it off; the job gives up after 2 s and tries again.
    let mut reader = cluster.connect("app");
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM m_2025;")
        .unwrap();
    let id = submit(
        &mut c,
        "SELECT migrate_drop_index('m_v', retry_delay => '1s')",
    );
    let spec_wait: i64 = c
        .query_one(
            "SELECT (spec->>'max_wait_ms')::int8 FROM pgmigrate.jobs WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(spec_wait, 2000);
    wait_until("the drop to give up waiting once", LONG, || {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM migrate_index_builds WHERE job_id = $1 AND outcome = 'retrying'",
                &[&id],
            )
            .unwrap()
            .get(0);
        (n >= 1).then_some(())
    });
    // Between its tries the job holds no lock: a write goes through.
    let t = Instant::now();
    c.execute("INSERT INTO m VALUES (1, '2024-02-01', 1)", &[])
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    reader.batch_execute("COMMIT").unwrap();
    wait_state(&mut c, id, "succeeded");
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%m\\_v'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the index and its partitions' indexes are gone");
    let statement: String = c
        .query_one(
            "SELECT statement FROM migrate_index_builds WHERE job_id = $1 AND outcome = 'succeeded'",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(statement, "DROP INDEX IF EXISTS public.m_v");
}
