//! migrate_alter_type against a real server with its workers: an integer
//! key that foreign keys point at becomes bigint under a live writer; the
//! job goes on at its step after kill -9 of its worker and after an
//! immediate restart; the old column is kept in step until the contract,
//! and migrate_rollback undoes the change before and after the cut-over
//! without losing a write.

mod common;

use common::{wait_until, Cluster};
use postgres::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(180);

/// parent(id serial PRIMARY KEY, ...) with `rows` rows, and child rows
/// whose parent_id points at it.
fn tables(c: &mut Client, rows: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE parent (id serial PRIMARY KEY, name text NOT NULL, score int);
         CREATE INDEX parent_score_idx ON parent (score);
         INSERT INTO parent (name, score) SELECT 'p' || g, g % 100 FROM generate_series(1, {rows}) g;
         CREATE TABLE child (id bigserial PRIMARY KEY, parent_id int NOT NULL REFERENCES parent (id), note text);
         INSERT INTO child (parent_id, note) SELECT 1 + g % {rows}, 'c' FROM generate_series(1, {rows}) g;"
    ))
    .unwrap();
    c.batch_execute("VACUUM ANALYZE parent").unwrap();
    c.batch_execute("VACUUM ANALYZE child").unwrap();
}

fn state(c: &mut Client, id: i64) -> (String, Option<String>, Option<Vec<String>>) {
    let r = c
        .query_one(
            "SELECT state, error, cursor FROM pgmigrate.jobs WHERE job_id = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

fn wait_state(c: &mut Client, id: i64, want: &str) {
    wait_until(&format!("job {id} to be {want}"), LONG, || {
        let (s, error, _) = state(c, id);
        assert!(
            s == want || !matches!(s.as_str(), "succeeded" | "failed" | "cancelled"),
            "job {id} ended {s}: {error:?}"
        );
        (s == want).then_some(())
    });
}

fn wait_step(c: &mut Client, id: i64, step: &str) {
    wait_until(&format!("job {id} to reach step {step}"), LONG, || {
        let (s, error, cursor) = state(c, id);
        assert!(
            !matches!(s.as_str(), "failed" | "cancelled"),
            "job {id} ended {s}: {error:?}"
        );
        (cursor.and_then(|c| c.first().cloned()).as_deref() == Some(step)).then_some(())
    });
}

fn one<T: for<'a> postgres::types::FromSql<'a>>(c: &mut Client, sql: &str) -> T {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn column_type(c: &mut Client, table: &str, column: &str) -> String {
    c.query_one(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
          WHERE attrelid = $1::text::regclass AND attname = $2 AND NOT attisdropped",
        &[&table, &column],
    )
    .unwrap()
    .get(0)
}

/// The columns left by the job (shadow, retired) and its trigger functions.
fn leftovers(c: &mut Client) -> i64 {
    one(
        c,
        "SELECT (SELECT count(*) FROM pg_attribute WHERE attrelid = 'parent'::regclass
                    AND attname LIKE '%\\_pgm\\_%' AND NOT attisdropped)
              + (SELECT count(*) FROM pg_proc WHERE proname LIKE 'pgm\\_%')
              + (SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_pgm\\_%')",
    )
}

/// Every index valid, every constraint validated.
fn all_valid(c: &mut Client) {
    let bad: i64 = one(
        c,
        "SELECT (SELECT count(*) FROM pg_index WHERE indrelid IN ('parent'::regclass, 'child'::regclass) AND NOT indisvalid)
              + (SELECT count(*) FROM pg_constraint WHERE conrelid IN ('parent'::regclass, 'child'::regclass) AND NOT convalidated)",
    );
    assert_eq!(bad, 0, "an index or constraint is not valid");
    let fk_to: String = one(
        c,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'child'::regclass AND contype = 'f'",
    );
    assert_eq!(fk_to, "FOREIGN KEY (parent_id) REFERENCES parent(id)");
    let pk: String = one(
        c,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'parent'::regclass AND contype = 'p'",
    );
    assert_eq!(pk, "PRIMARY KEY (id)");
}

/// The rows' checksum, keyed by id (the writer changes only `score`).
fn checksum(c: &mut Client, upto: i64) -> String {
    c.query_one(
        "SELECT count(*) || ':' || md5(string_agg(id::text || name, ',' ORDER BY id))
           FROM parent WHERE id::bigint <= $1",
        &[&upto],
    )
    .unwrap()
    .get(0)
}

struct Writer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(i64, Vec<String>, Duration)>,
}

/// Inserts a parent and a child of it, and updates a parent, without pause.
/// The type change `id` ends well: succeeded, `column` of the new type,
/// every constraint and index valid, nothing of the job left, the first
/// `rows` rows as `before`.
fn ends_well(c: &mut Client, id: i64, column: &str, new_type: &str, rows: i64, before: &str) {
    wait_state(c, id, "succeeded");
    assert_eq!(column_type(c, "parent", column), new_type);
    all_valid(c);
    assert_eq!(leftovers(c), 0);
    assert_eq!(checksum(c, rows), before);
}

/// A session of `db` that holds `mode` on parent in an open transaction.
fn holding(cluster: &Cluster, db: &str, mode: &str) -> Client {
    let mut h = cluster.connect(db);
    h.batch_execute(&format!("BEGIN; LOCK TABLE parent IN {mode} MODE;"))
        .unwrap();
    h
}

fn writer(cluster: &Cluster, rows: i64) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let mut w = cluster.connect("app");
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        let (mut n, mut errors, mut worst) = (0i64, vec![], Duration::ZERO);
        while !s.load(Ordering::Relaxed) {
            n += 1;
            let t = Instant::now();
            let r = w.batch_execute(&format!(
                "WITH p AS (INSERT INTO parent (name, score) VALUES ('w{n}', {}) RETURNING id)
                 INSERT INTO child (parent_id, note) SELECT id, 'w' FROM p;
                 UPDATE parent SET score = score + 1 WHERE id = {};",
                n % 100,
                1 + n % rows
            ));
            if let Err(e) = r {
                errors.push(common::message(&e));
            }
            worst = worst.max(t.elapsed());
        }
        (n, errors, worst)
    });
    Writer { stop, handle }
}

impl Writer {
    fn stop(self) -> (i64, Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

#[test]
fn an_integer_key_that_children_reference_becomes_bigint_under_a_writer() {
    let cluster = Cluster::start("alter_type_live");
    let mut c = cluster.create_db("app");
    tables(&mut c, 200_000);
    c.batch_execute("UPDATE parent SET score = NULL WHERE id % 1000 = 0")
        .unwrap();
    let before = checksum(&mut c, 200_000);
    let w = writer(&cluster, 200_000);
    std::thread::sleep(Duration::from_millis(300));
    let id: i64 = one(
        &mut c,
        "SELECT migrate_alter_type('parent', 'id', 'bigint', lock_timeout => '300ms')",
    );
    // While it runs, migrate_progress names the step.
    let line: String = wait_until("a step in migrate_progress", LONG, || {
        c.query_opt(
            "SELECT phase FROM migrate_progress WHERE job_id = $1 AND phase IS NOT NULL",
            &[&id],
        )
        .unwrap()
        .map(|r| r.get::<_, String>(0))
    });
    assert!(!line.is_empty());
    wait_state(&mut c, id, "succeeded");
    let (rounds, errors, worst) = w.stop();
    assert!(
        errors.is_empty(),
        "the writer saw {} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(rounds > 50, "the writer ran {rounds} rounds");
    println!("writer: {rounds} rounds, slowest {worst:?}");
    assert_eq!(column_type(&mut c, "parent", "id"), "bigint");
    assert_eq!(column_type(&mut c, "child", "parent_id"), "integer");
    let seq: String = one(
        &mut c,
        "SELECT seqtypid::regtype::text FROM pg_sequence WHERE seqrelid = pg_get_serial_sequence('parent', 'id')::regclass",
    );
    assert_eq!(seq, "bigint", "the sequence grows with the column");
    all_valid(&mut c);
    assert_eq!(leftovers(&mut c), 0, "nothing of the job is left");
    assert_eq!(checksum(&mut c, 200_000), before, "the rows are the same");
    // Every row the writer added is there, with its child.
    let (parents, orphans): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM parent WHERE name LIKE 'w%'),
                        (SELECT count(*) FROM child ch WHERE NOT EXISTS (SELECT 1 FROM parent p WHERE p.id = ch.parent_id))",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(parents, rounds - errors.len() as i64);
    assert_eq!(orphans, 0);
    // The default still numbers new rows, now past what an integer holds.
    c.batch_execute("SELECT setval(pg_get_serial_sequence('parent', 'id'), 3000000000)")
        .unwrap();
    let next: i64 = one(
        &mut c,
        "INSERT INTO parent (name) VALUES ('big') RETURNING id",
    );
    assert_eq!(next, 3_000_000_001);
    // Its children were queued by it and succeeded: a backfill and the
    // primary key's index build.
    let kinds: Vec<String> = c
        .query(
            "SELECT kind || ':' || state FROM pgmigrate.jobs WHERE job_id > $1 ORDER BY job_id",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["backfill:succeeded", "create_index:succeeded"]);
}

#[test]
fn a_type_change_goes_on_at_its_step_after_kill_9_and_an_immediate_restart() {
    let cluster = Cluster::start("alter_type_crash");
    let mut c = cluster.create_db("app");
    tables(&mut c, 1_000_000);
    let before = checksum(&mut c, 1_000_000);
    let id: i64 = one(
        &mut c,
        "SELECT migrate_alter_type('parent', 'id', 'bigint', lock_timeout => '100ms', max_retries => 1000)",
    );
    // kill -9 of the worker that runs the backfill, half-way.  (The step
    // is recorded before the next transaction queues the backfill.)
    wait_step(&mut c, id, "1");
    let fill: i64 = wait_until("the type change to queue its backfill", LONG, || {
        c.query_one(
            "SELECT max(job_id) FROM pgmigrate.jobs WHERE kind = 'backfill' AND job_id > $1",
            &[&id],
        )
        .unwrap()
        .get::<_, Option<i64>>(0)
    });
    let pid: i32 = wait_until("the backfill to be half-way", LONG, || {
        let r = c
            .query_one(
                "SELECT rows_done, driver_pid, state FROM pgmigrate.jobs WHERE job_id = $1",
                &[&fill],
            )
            .unwrap();
        let (done, pid, s): (i64, Option<i32>, String) = (r.get(0), r.get(1), r.get(2));
        assert_ne!(s, "succeeded", "the backfill ended before the test looked");
        (done > 300_000).then_some(pid).flatten()
    });
    drop(c);
    cluster.kill_9(pid);
    let mut c = cluster.connect("app");
    // A writer's lock on the child table (which the cut-over must lock to
    // move the foreign key) stays: the cut-over cannot get its lock,
    // retries, and the crash comes while it waits, at its step.
    let mut reader = cluster.connect("app");
    reader
        .batch_execute("BEGIN; LOCK TABLE child IN ROW EXCLUSIVE MODE;")
        .unwrap();
    wait_step(&mut c, id, "5");
    let why = wait_until("the cut-over to wait for its lock", LONG, || {
        let r = c
            .query_one(
                "SELECT state, wait_reason FROM pgmigrate.jobs WHERE job_id = $1",
                &[&id],
            )
            .unwrap();
        let (s, why): (String, Option<String>) = (r.get(0), r.get(1));
        (s == "waiting").then_some(why).flatten()
    });
    assert!(why.starts_with("step 6 of 9: lock timeout"), "{why}");
    assert_eq!(column_type(&mut c, "parent", "id"), "integer");
    drop(c);
    cluster.restart("immediate");
    drop(reader);
    let mut c = cluster.connect("app");
    ends_well(&mut c, id, "id", "bigint", 1_000_000, &before);
    // The backfill resumed where it was: each row updated once.
    let updated: i64 = one(
        &mut c,
        &format!("SELECT rows_updated FROM pgmigrate.jobs WHERE job_id = {fill}"),
    );
    assert_eq!(updated, 1_000_000, "each row updated once");
    let differ: i64 = one(&mut c, "SELECT count(*) FROM parent WHERE id IS NULL");
    assert_eq!(differ, 0);
}

#[test]
fn the_old_column_stays_in_step_and_rollback_keeps_every_write() {
    let cluster = Cluster::start("alter_type_rollback");
    let mut c = cluster.create_db("app");
    tables(&mut c, 50_000);
    // A writer's lock on the child table holds the cut-over back.
    let mut holder = cluster.connect("app");
    holder
        .batch_execute("BEGIN; LOCK TABLE child IN ROW EXCLUSIVE MODE;")
        .unwrap();
    let id: i64 = one(
        &mut c,
        "SELECT migrate_alter_type('parent', 'id', 'bigint', complete => 'manual', lock_timeout => '50ms', max_retries => 1000)",
    );
    // Before the cut-over the shadow column is in step with every row,
    // those the backfill filled and those written since.
    wait_step(&mut c, id, "5");
    c.batch_execute("INSERT INTO parent (id, name) VALUES (70000, 'before the cut-over'); UPDATE parent SET id = 70001 WHERE id = 70000;")
        .unwrap();
    let differ: i64 = one(
        &mut c,
        "SELECT count(*) FROM parent WHERE id_pgm_new IS DISTINCT FROM id::bigint",
    );
    assert_eq!(differ, 0);
    holder.batch_execute("COMMIT").unwrap();
    // Held after the cut-over: the old column follows every write.
    wait_state(&mut c, id, "paused");
    let why: String = one(
        &mut c,
        &format!("SELECT wait_reason FROM migrate_progress WHERE job_id = {id}"),
    );
    assert!(why.contains(&format!("migrate_complete({id})")), "{why}");
    assert_eq!(column_type(&mut c, "parent", "id"), "bigint");
    let new_id: i64 = one(
        &mut c,
        "INSERT INTO parent (name) VALUES ('after the cut-over') RETURNING id",
    );
    c.batch_execute(&format!(
        "INSERT INTO child (parent_id) VALUES ({new_id}); UPDATE parent SET name = 'changed' WHERE id = 7;"
    ))
    .unwrap();
    let old: i32 = one(
        &mut c,
        &format!("SELECT id_pgm_old FROM parent WHERE id = {new_id}"),
    );
    assert_eq!(old as i64, new_id);
    // migrate_complete is for this job's owner or a superuser only, and
    // only at this step; rollback after the cut-over turns the job round.
    c.batch_execute(&format!("SELECT migrate_rollback({id})"))
        .unwrap();
    wait_state(&mut c, id, "succeeded");
    assert_eq!(column_type(&mut c, "parent", "id"), "integer");
    all_valid(&mut c);
    assert_eq!(leftovers(&mut c), 0);
    let kept: i64 = one(
        &mut c,
        &format!(
            "SELECT count(*) FROM parent WHERE (id = {new_id} AND name = 'after the cut-over') OR (id = 7 AND name = 'changed')"
        ),
    );
    assert_eq!(kept, 2, "writes made after the cut-over are kept");
    let line: String = one(
        &mut c,
        &format!("SELECT spec->>'rolled_back' FROM pgmigrate.jobs WHERE job_id = {id}"),
    );
    assert_eq!(line, "true");

    // Before the cut-over: rollback drops what the job added, at once.
    let id2: i64 = one(
        &mut c,
        "SELECT migrate_alter_type('parent', 'score', 'numeric(10,1)', using_expr => 'score / 2.0')",
    );
    wait_step(&mut c, id2, "1");
    c.execute("SELECT migrate_pause($1)", &[&id2]).unwrap();
    wait_until("the pause", LONG, || {
        (state(&mut c, id2).0 == "paused").then_some(())
    });
    c.batch_execute("INSERT INTO parent (name, score) VALUES ('during', 5)")
        .unwrap();
    // Its backfill is cancelled first; a call that finds it still running
    // says so, and the next one drops what the job added.
    wait_until("the rollback", LONG, || {
        let _ = c.batch_execute(&format!("SELECT migrate_rollback({id2})"));
        (state(&mut c, id2).0 == "cancelled").then_some(())
    });
    assert_eq!(column_type(&mut c, "parent", "score"), "integer");
    assert_eq!(leftovers(&mut c), 0);
    let during: i32 = one(&mut c, "SELECT score FROM parent WHERE name = 'during'");
    assert_eq!(during, 5);
    // A job that is over cannot be rolled back.
    let e = c
        .batch_execute(&format!("SELECT migrate_rollback({id})"))
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "55000", "{}", common::message(&e));
}

#[test]
fn a_using_expression_fills_the_new_column_and_completes_after_its_migration() {
    let cluster = Cluster::start("alter_type_using");
    let mut c = cluster.create_db("app");
    c.batch_execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, at text NOT NULL DEFAULT '2026-01-01', kind text);
         CREATE INDEX events_at_idx ON events (at DESC) INCLUDE (kind);
         CREATE UNIQUE INDEX events_at_id_key ON events (at, id);
         INSERT INTO events SELECT g, '2026-01-01'::date + g % 300, 'k' FROM generate_series(1, 30000) g;",
    )
    .unwrap();
    let id: i64 = one(
        &mut c,
        "SELECT migrate_alter_type('events', 'at', 'date', using_expr => 'pg_catalog.to_date(at, ''YYYY-MM-DD'')',
                                   complete => 'migration:shop.0003_contract')",
    );
    // Cut over, and held until the migration is applied.
    wait_until("the cut-over", LONG, || {
        (column_type(&mut c, "events", "at") == "date").then_some(())
    });
    let why: String = wait_until("the job to wait for its migration", LONG, || {
        c.query_one(
            "SELECT wait_reason FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get::<_, Option<String>>(0)
        .filter(|w| w.contains("shop.0003_contract"))
    });
    assert!(why.contains("not recorded"), "{why}");
    common::stays_for("the job to keep waiting", Duration::from_secs(2), || {
        state(&mut c, id).0 == "waiting"
    });
    // A row written now, with the new column's default and a date (the
    // new column comes last in the table: statements name their columns).
    c.batch_execute("INSERT INTO events (id) VALUES (30001); INSERT INTO events (id, at, kind) VALUES (30002, '2027-03-04', 'x');")
        .unwrap();
    let old: String = one(&mut c, "SELECT at_pgm_old FROM events WHERE id = 30002");
    assert_eq!(old, "2027-03-04");
    c.execute("SELECT migrate_record('shop', '0003_contract')", &[])
        .unwrap();
    wait_state(&mut c, id, "succeeded");
    let defs: Vec<String> = c
        .query(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'events'::regclass ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        defs,
        [
            "CREATE INDEX events_at_idx ON public.events USING btree (at DESC) INCLUDE (kind)",
            "CREATE UNIQUE INDEX events_at_id_key ON public.events USING btree (at, id)",
            "CREATE UNIQUE INDEX events_pkey ON public.events USING btree (id)",
        ]
    );
    let wrong: i64 = one(
        &mut c,
        "SELECT count(*) FROM events WHERE id <= 30000 AND at <> '2026-01-01'::date + (id % 300)::int",
    );
    assert_eq!(wrong, 0);
    let default: String = one(
        &mut c,
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'events'::regclass",
    );
    assert_eq!(default, "('2026-01-01'::text)::date");
    let at: String = one(&mut c, "SELECT at::text FROM events WHERE id = 30001");
    assert_eq!(at, "2026-01-01");
}

#[test]
fn an_identity_key_moves_to_the_new_column_and_goes_on_numbering() {
    let cluster = Cluster::start("alter_type_identity");
    let mut c = cluster.create_db("app");
    c.batch_execute(
        "CREATE TABLE ev (id int GENERATED ALWAYS AS IDENTITY (INCREMENT BY 2) PRIMARY KEY, v text);
         INSERT INTO ev (v) SELECT 'e' || g FROM generate_series(1, 10000) g;",
    )
    .unwrap();
    let seq_before: String = one(&mut c, "SELECT pg_get_serial_sequence('ev', 'id')");
    let id: i64 = one(&mut c, "SELECT migrate_alter_type('ev', 'id', 'bigint')");
    wait_state(&mut c, id, "succeeded");
    assert_eq!(column_type(&mut c, "ev", "id"), "bigint");
    let r = c
        .query_one(
            "SELECT a.attidentity::text, pg_get_serial_sequence('ev', 'id'), s.seqtypid::regtype::text, s.seqincrement
               FROM pg_attribute a, pg_sequence s
              WHERE a.attrelid = 'ev'::regclass AND a.attname = 'id'
                AND s.seqrelid = pg_get_serial_sequence('ev', 'id')::regclass",
            &[],
        )
        .unwrap();
    let (kind, seq, seqtype, inc): (String, String, String, i64) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!(kind, "a", "still GENERATED ALWAYS");
    assert_eq!(seq, seq_before, "the same sequence name");
    assert_eq!(seqtype, "bigint");
    assert_eq!(inc, 2);
    let next: i64 = one(&mut c, "INSERT INTO ev (v) VALUES ('next') RETURNING id");
    assert_eq!(next, 20_001, "numbering goes on where it was");
    let e = c
        .batch_execute("INSERT INTO ev (id, v) VALUES (5, 'x')")
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "428C9", "{}", common::message(&e));
}

#[test]
fn the_pacing_options_reach_the_backfill_and_bad_ones_queue_nothing() {
    let cluster = Cluster::start("alter_type_pacing");
    let mut c = cluster.create_db("app");
    c.batch_execute(
        "CREATE TABLE paced (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO paced SELECT g, g FROM generate_series(1, 5000) g;",
    )
    .unwrap();
    let jobs_before: i64 = one(&mut c, "SELECT count(*) FROM pgmigrate.jobs");
    for (bad, want) in [
        ("max_wal_per_second => '-1MB'", "22023"),
        ("max_wal_per_second => 'fast'", "22023"),
        ("max_rows_per_second => -5", "22023"),
        ("target_batch_ms => 1", "22023"),
    ] {
        let e = c
            .batch_execute(&format!(
                "SELECT migrate_alter_type('paced', 'v', 'bigint', {bad})"
            ))
            .unwrap_err();
        assert_eq!(common::sqlstate(&e), want, "{bad}: {}", common::message(&e));
    }
    let jobs_after: i64 = one(&mut c, "SELECT count(*) FROM pgmigrate.jobs");
    assert_eq!(
        jobs_after, jobs_before,
        "a refused type change queues nothing"
    );

    let id: i64 = one(
        &mut c,
        "SELECT migrate_alter_type('paced', 'v', 'bigint', target_batch_ms => 40,
                max_rows_per_second => 4000, max_replay_lag => '3s', max_wal_per_second => '64MB')",
    );
    wait_state(&mut c, id, "succeeded");
    assert_eq!(column_type(&mut c, "paced", "v"), "bigint");
    let r = c
        .query_one(
            "SELECT (spec->'pace'->>'target_batch_ms')::bigint, (spec->'pace'->>'max_rows_per_second')::bigint,
                    (spec->'pace'->>'max_replay_lag_ms')::bigint, (spec->'pace'->>'max_wal_bytes_per_second')::bigint,
                    rows_updated
               FROM pgmigrate.jobs WHERE kind = 'backfill' AND job_id > $1",
            &[&id],
        )
        .unwrap();
    let got: (i64, i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    assert_eq!(got, (40, 4000, 3000, 64 * 1024 * 1024, 5000));

    // The submitter's build settings reach the index builds the type
    // change queues from its worker, which has the server's.
    c.batch_execute("SET maintenance_work_mem = '77MB'; SET max_parallel_maintenance_workers = 0")
        .unwrap();
    let id: i64 = one(&mut c, "SELECT migrate_alter_type('paced', 'id', 'bigint')");
    c.batch_execute("RESET maintenance_work_mem; RESET max_parallel_maintenance_workers")
        .unwrap();
    wait_state(&mut c, id, "succeeded");
    assert_eq!(column_type(&mut c, "paced", "id"), "bigint");
    let builds: Vec<(String, String)> = c
        .query(
            "SELECT s->>0, s->>1 FROM pgmigrate.jobs j, jsonb_array_elements(j.spec->'settings') s
              WHERE j.kind = 'create_index' AND j.job_id > $1 AND j.state = 'succeeded'
                AND s->>0 IN ('maintenance_work_mem', 'max_parallel_maintenance_workers')
              ORDER BY j.job_id, 1",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        builds,
        [
            ("maintenance_work_mem".to_string(), "77MB".to_string()),
            (
                "max_parallel_maintenance_workers".to_string(),
                "0".to_string()
            ),
        ],
        "the primary key's build, under the submitter's settings"
    );
}

/// kill -9 of the worker that runs `job` (or, with `index`, its index
/// build) while it waits for a lock the test holds; the postmaster then
/// restarts every backend, the holder's too. Returns a new connection and
/// the type change's step (its cursor; none yet is step 0) when the
/// worker was killed.
fn kill_while_it_waits(
    cluster: &Cluster,
    db: &str,
    mut c: Client,
    job: i64,
    index: bool,
) -> (Client, String) {
    let sql = if index {
        "SELECT a.pid, (SELECT coalesce(cursor[1], '0') FROM pgmigrate.jobs WHERE job_id = $1)
           FROM pgmigrate.jobs j JOIN pg_stat_activity a ON a.pid = j.driver_pid
          WHERE j.kind = 'create_index' AND j.job_id > $1 AND a.wait_event_type = 'Lock'"
    } else {
        "SELECT a.pid, coalesce(j.cursor[1], '0') FROM pgmigrate.jobs j JOIN pg_stat_activity a ON a.pid = j.driver_pid
          WHERE j.job_id = $1 AND a.wait_event_type = 'Lock'"
    };
    let (pid, step): (i32, String) =
        wait_until(&format!("job {job} to wait for a lock"), LONG, || {
            let (s, error, _) = state(&mut c, job);
            assert!(
                !matches!(s.as_str(), "succeeded" | "failed" | "cancelled"),
                "job {job} ended {s}: {error:?}"
            );
            c.query_opt(sql, &[&job])
                .unwrap()
                .map(|r| (r.get(0), r.get(1)))
        });
    drop(c);
    cluster.kill_9(pid);
    (cluster.connect(db), step)
}

#[test]
fn each_lock_taking_step_goes_on_after_kill_9_while_it_waits() {
    let cluster = Cluster::start("alter_type_steps");

    // Expand (step 1 of 9) and contract (9 of 9), each killed while it
    // waits behind a reader of the table.
    let mut c = cluster.create_db("s_ends");
    tables(&mut c, 20_000);
    let before = checksum(&mut c, 20_000);
    let reader = holding(&cluster, "s_ends", "ACCESS SHARE");
    let id: i64 = one(
        &mut c,
        "SELECT migrate_alter_type('parent', 'id', 'bigint', complete => 'manual', lock_timeout => '60s')",
    );
    let (mut c, step) = kill_while_it_waits(&cluster, "s_ends", c, id, false);
    drop(reader);
    assert_eq!(step, "0", "killed at the expand");
    wait_state(&mut c, id, "paused");
    let reader = holding(&cluster, "s_ends", "ACCESS SHARE");
    c.batch_execute(&format!("SELECT migrate_complete({id})"))
        .unwrap();
    let (mut c, step) = kill_while_it_waits(&cluster, "s_ends", c, id, false);
    drop(reader);
    assert_eq!(step, "8", "killed at the contract");
    ends_well(&mut c, id, "id", "bigint", 20_000, &before);
    drop(c);

    // The NOT NULL check (step 3 of 9): the reader comes during the
    // backfill, which it does not hold back.
    let mut c = cluster.create_db("s_check");
    tables(&mut c, 20_000);
    let before = checksum(&mut c, 20_000);
    let id: i64 = one(
        &mut c,
        "SELECT migrate_alter_type('parent', 'id', 'bigint', max_rows_per_second => 4000, lock_timeout => '60s')",
    );
    wait_step(&mut c, id, "1");
    let reader = holding(&cluster, "s_check", "ACCESS SHARE");
    let (mut c, step) = kill_while_it_waits(&cluster, "s_check", c, id, false);
    drop(reader);
    assert_eq!(step, "2", "killed at the check");
    ends_well(&mut c, id, "id", "bigint", 20_000, &before);
    drop(c);

    // An index build (step 5 of 9): a writer's open transaction holds
    // CREATE INDEX CONCURRENTLY back; its worker is killed while it waits.
    let mut c = cluster.create_db("s_index");
    tables(&mut c, 20_000);
    let before = checksum(&mut c, 20_000);
    let indexes_before: i64 = one(
        &mut c,
        "SELECT count(*) FROM pg_index WHERE indrelid = 'parent'::regclass",
    );
    let id: i64 = one(
        &mut c,
        "SELECT migrate_alter_type('parent', 'score', 'bigint', max_rows_per_second => 4000)",
    );
    wait_step(&mut c, id, "1");
    let writer = holding(&cluster, "s_index", "ROW EXCLUSIVE");
    let (mut c, step) = kill_while_it_waits(&cluster, "s_index", c, id, true);
    drop(writer);
    assert_eq!(step, "4", "killed during the index step");
    ends_well(&mut c, id, "score", "bigint", 20_000, &before);
    let indexes_after: i64 = one(
        &mut c,
        "SELECT count(*) FROM pg_index WHERE indrelid = 'parent'::regclass",
    );
    assert_eq!(indexes_after, indexes_before, "no index lost or left over");
    let def: String = one(
        &mut c,
        "SELECT pg_get_indexdef('parent_score_idx'::regclass)",
    );
    assert_eq!(
        def,
        "CREATE INDEX parent_score_idx ON public.parent USING btree (score)"
    );
}
