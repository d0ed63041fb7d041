//! Citus: a coordinator and two worker nodes on this machine, each with
//! `shared_preload_libraries = 'citus,pg_migrate'` (Citus 13.2.2, built by
//! scripts/setup.sh from ../shared/vendor).  Backfills of a distributed
//! table go shard by shard, each shard done by the node that holds it;
//! reference and coordinator-local tables are backfilled as any table;
//! kill -9 of the process that backfills a shard loses or doubles nothing;
//! cancel reaches the nodes; a type change of a distributed table is
//! refused; the nodes' jobs run as the job's owner.

mod common;

use common::{message, sqlstate, stays_for, wait_until, Cluster};
use postgres::{Client, NoTls};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(180);
const PRELOAD: &str = "shared_preload_libraries='citus,pg_migrate'";

struct Citus {
    coordinator: Cluster,
    workers: Vec<Cluster>,
}

impl Citus {
    /// Three servers, database `app` on each with Citus; the coordinator
    /// knows the two workers; pg_migrate created on the coordinator (Citus
    /// creates it on the workers); role app_owner owns the tables.
    fn start(name: &str) -> Citus {
        assert!(
            std::path::Path::new("/usr/lib/postgresql/15/lib/citus.so").exists(),
            "Citus is not installed: scripts/setup.sh builds it from ../shared/vendor"
        );
        let coordinator = Cluster::start_with(&format!("{name}-c"), &[PRELOAD]);
        let workers: Vec<Cluster> = (1..=2)
            .map(|i| Cluster::start_with(&format!("{name}-w{i}"), &[PRELOAD]))
            .collect();
        for node in std::iter::once(&coordinator).chain(workers.iter()) {
            node.connect("postgres")
                .batch_execute("CREATE DATABASE app")
                .unwrap();
            node.connect("app")
                .batch_execute("CREATE EXTENSION citus; CREATE ROLE app_owner LOGIN")
                .unwrap();
        }
        let mut c = coordinator.connect("app");
        c.execute(
            "SELECT citus_set_coordinator_host('127.0.0.1', $1)",
            &[&(coordinator.port as i32)],
        )
        .unwrap();
        for w in &workers {
            c.execute(
                "SELECT citus_add_node('127.0.0.1', $1)",
                &[&(w.port as i32)],
            )
            .unwrap();
        }
        c.batch_execute(
            "CREATE EXTENSION pg_migrate;
             GRANT CREATE ON SCHEMA public TO app_owner",
        )
        .unwrap();
        Citus {
            coordinator,
            workers,
        }
    }

    fn owner(&self) -> Client {
        connect_as(&self.coordinator, "app", "app_owner")
    }
}

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

fn wait_done(c: &mut Client, id: i64) -> String {
    wait_until(&format!("job {id} to end"), LONG, || {
        let r = c
            .query_one(
                "SELECT state, coalesce(error, '') FROM migrate_progress WHERE job_id = $1",
                &[&id],
            )
            .unwrap();
        let (state, error): (String, String) = (r.get(0), r.get(1));
        match state.as_str() {
            "succeeded" | "failed" | "cancelled" => Some(format!("{state}{error}")),
            _ => {
                // A slice that stopped holds the job: say which.
                let failed: Option<String> = c
                    .query_opt(
                        "SELECT error FROM migrate_progress WHERE parent_job = $1 AND state = 'failed' LIMIT 1",
                        &[&id],
                    )
                    .unwrap()
                    .and_then(|r| r.get(0));
                failed.map(|e| format!("slice failed: {e}"))
            }
        }
    })
}

/// A distributed table of `rows` rows in 32 shards, n = 0 everywhere.
fn distributed(c: &mut Client, table: &str, rows: i64) {
    c.batch_execute(&format!(
        "SET citus.shard_count = 32;
         CREATE TABLE {table} (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, note text);
         SELECT create_distributed_table('{table}', 'id');
         INSERT INTO {table} SELECT g, 0, 'row ' || g FROM generate_series(1, {rows}) g;
         ANALYZE {table};"
    ))
    .unwrap();
}

fn counts(c: &mut Client, table: &str) -> Vec<(i32, i64)> {
    c.query(
        &format!("SELECT n, count(*) FROM {table} GROUP BY n ORDER BY n"),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// `sql` is refused with 0A000 and a message that says `says`, and
/// queues nothing.
fn refused_at_submit(c: &mut Client, sql: &str, says: &str) {
    let count = |c: &mut Client| -> i64 {
        c.query_one("SELECT count(*) FROM migrate_progress", &[])
            .unwrap()
            .get(0)
    };
    let before = count(c);
    let e = c.query_one(sql, &[]).unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{}", message(&e));
    assert!(message(&e).contains(says), "{}", message(&e));
    assert_eq!(before, count(c), "nothing queued");
}

#[test]
fn distributed_backfills_go_shard_by_shard_on_their_nodes() {
    let citus = Citus::start("citus-shards");
    let mut c = citus.owner();
    distributed(&mut c, "items", 20_000);

    let job = submit(&mut c, "SELECT migrate_backfill('items', 'n = n + 1')");
    assert_eq!(wait_done(&mut c, job), "succeeded");
    assert_eq!(counts(&mut c, "items"), vec![(1, 20_000)]);
    // One slice per shard, named by shard and node, each done.
    let r = c
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded'),
                    count(*) FILTER (WHERE slice ~ '^shard [0-9]+ on 127\\.0\\.0\\.1:[0-9]+$'),
                    sum(rows_done)::bigint
               FROM migrate_progress WHERE parent_job = $1",
            &[&job],
        )
        .unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)),
        (32, 32, 32)
    );
    assert_eq!(r.get::<_, i64>(3), 20_000);
    let progress: String = c
        .query_one(
            "SELECT rows_done::text FROM migrate_progress WHERE job_id = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(progress, "20000");
    // Each worker node ran a backfill of each of its 16 shards, as the
    // job's owner, each of the shard's rows once.
    let mut node_rows = 0;
    for w in &citus.workers {
        let mut n = w.connect("app");
        let r = n
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded'),
                        count(*) FILTER (WHERE owner::text = 'app_owner'),
                        count(*) FILTER (WHERE relation ~ '^public\\.items_[0-9]+$'),
                        coalesce(sum(rows_done), 0)::bigint
                   FROM migrate_progress WHERE kind = 'backfill'",
                &[],
            )
            .unwrap();
        let (jobs, ok, owned, shards): (i64, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!((jobs, ok, owned, shards), (16, 16, 16, 16));
        node_rows += r.get::<_, i64>(4);
    }

    assert_eq!(node_rows, 20_000);

    // parallel => 2: two shards at once, every row once more.
    let job = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', where_clause => 'n = 1', parallel => 2)",
    );
    assert_eq!(wait_done(&mut c, job), "succeeded");
    assert_eq!(counts(&mut c, "items"), vec![(2, 20_000)]);

    // A reference table and a table local to the coordinator: as any table.
    c.batch_execute(
        "CREATE TABLE kinds (id int PRIMARY KEY, n int NOT NULL DEFAULT 0);
         SELECT create_reference_table('kinds');
         INSERT INTO kinds SELECT g, 0 FROM generate_series(1, 3000) g;
         CREATE TABLE local_notes (id int PRIMARY KEY, n int NOT NULL DEFAULT 0);
         INSERT INTO local_notes SELECT g, 0 FROM generate_series(1, 3000) g;",
    )
    .unwrap();
    for t in ["kinds", "local_notes"] {
        let job = submit(
            &mut c,
            &format!("SELECT migrate_backfill('{t}', 'n = n + 1', batch_size => 500)"),
        );
        assert_eq!(wait_done(&mut c, job), "succeeded", "{t}");
        assert_eq!(counts(&mut c, t), vec![(1, 3000)], "{t}");
        let slices: i64 = c
            .query_one(
                "SELECT count(*) FROM migrate_progress WHERE parent_job = $1",
                &[&job],
            )
            .unwrap()
            .get(0);
        assert_eq!(slices, 0, "{t} is not split");
    }

    // A type change of a distributed table is refused at submit, nothing
    // queued; a CHECK constraint and NOT NULL work (Citus runs their DDL
    // on every shard).
    refused_at_submit(
        &mut c,
        "SELECT migrate_alter_type('items', 'n', 'bigint')",
        "Citus distributed table",
    );
    let job = submit(
        &mut c,
        "SELECT migrate_add_constraint('items', 'CHECK (n >= 0)')",
    );
    assert_eq!(wait_done(&mut c, job), "succeeded");
    let e = c
        .execute("INSERT INTO items (id, n) VALUES (-1, -5)", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23514");
    let job = submit(&mut c, "SELECT migrate_set_not_null('items', 'note')");
    assert_eq!(wait_done(&mut c, job), "succeeded");
    let e = c
        .execute("INSERT INTO items (id, n, note) VALUES (-2, 0, NULL)", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23502");
    // A UNIQUE key with the distribution column and a foreign key to a
    // reference table work, on every shard; a UNIQUE key without the
    // distribution column is refused at submit, naming it.
    let job = submit(
        &mut c,
        "SELECT migrate_add_constraint('items', 'UNIQUE (id, n)')",
    );
    assert_eq!(wait_done(&mut c, job), "succeeded");
    c.batch_execute(
        "ALTER TABLE items ADD COLUMN kind int;
         UPDATE items SET kind = 1 + id % 3000;",
    )
    .unwrap();
    let job = submit(
        &mut c,
        "SELECT migrate_add_constraint('items', 'FOREIGN KEY (kind) REFERENCES kinds (id)')",
    );
    assert_eq!(wait_done(&mut c, job), "succeeded");
    let e = c
        .execute("UPDATE items SET kind = 99999 WHERE id = 5", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23503");
    let on_shards: i64 = c
        .query_one(
            "SELECT sum(result::int)::bigint FROM run_command_on_shards('items',
                $$SELECT count(*) FROM pg_constraint WHERE conrelid = '%s'::regclass AND contype IN ('u', 'f')$$)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        on_shards, 64,
        "the key and the foreign key on each of 32 shards"
    );
    refused_at_submit(
        &mut c,
        "SELECT migrate_add_constraint('items', 'UNIQUE (n)')",
        "must include its distribution column id",
    );

    // migrate_analyze says where a statement on a distributed table runs.
    let said: String = c
        .query_one(
            "SELECT string_agg(reason, ' ') FROM migrate_analyze('UPDATE items SET n = 0; UPDATE kinds SET n = 0')",
            &[],
        )
        .unwrap()
        .get(0);
    let nodes: Vec<String> = citus
        .workers
        .iter()
        .map(|w| format!("127.0.0.1:{}", w.port))
        .collect();
    assert!(
        said.contains(
            "items is a Citus distributed table: the statement runs on each of its 32 shards"
        ),
        "{said}"
    );
    assert!(nodes.iter().all(|n| said.contains(n.as_str())), "{said}");
    assert!(said.contains("kinds is a Citus reference table"), "{said}");

    // An index job builds through Citus: a valid index on every shard.
    let job = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX items_n_idx ON items (n)')",
    );
    assert_eq!(wait_done(&mut c, job), "succeeded");
    let mut valid = 0;
    for w in &citus.workers {
        let mut n = w.connect("app");
        n.batch_execute("SET citus.override_table_visibility = off")
            .unwrap();
        valid += n
            .query_one(
                "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                  WHERE c.relname ~ '^items_n_idx_[0-9]+$' AND i.indisvalid",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0);
    }
    assert_eq!(valid, 32);

    // A build that fails on one shard (a duplicate there) leaves no index
    // on any shard nor on the coordinator; with the duplicate gone,
    // migrate_retry builds it on every shard.
    c.batch_execute(
        "SET citus.shard_count = 32;
         CREATE TABLE dups (id bigint NOT NULL, n int NOT NULL DEFAULT 0);
         SELECT create_distributed_table('dups', 'id');
         INSERT INTO dups SELECT g FROM generate_series(1, 1000) g;
         INSERT INTO dups VALUES (7, 1);",
    )
    .unwrap();
    let job = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE UNIQUE INDEX dups_id_key ON dups (id)')",
    );
    let end = wait_done(&mut c, job);
    assert!(end.starts_with("failed"), "{end}");
    let shard_indexes = |valid_only: bool| -> i64 {
        citus
            .workers
            .iter()
            .map(|w| {
                let mut n = w.connect("app");
                n.batch_execute("SET citus.override_table_visibility = off")
                    .unwrap();
                n.query_one(
                    "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                      WHERE c.relname ~ '^dups_id_key_[0-9]+$' AND (i.indisvalid OR NOT $1)",
                    &[&valid_only],
                )
                .unwrap()
                .get::<_, i64>(0)
            })
            .sum()
    };
    assert_eq!(shard_indexes(false), 0, "no index left on any shard");
    let left: Option<String> = c
        .query_one("SELECT to_regclass('dups_id_key')::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, None, "no index left on the coordinator");
    c.batch_execute("DELETE FROM dups WHERE n = 1").unwrap();
    c.execute("SELECT migrate_retry($1)", &[&job]).unwrap();
    assert_eq!(wait_done(&mut c, job), "succeeded");
    assert_eq!(shard_indexes(true), 32);
    let shown = |c: &mut Client, job: i64| -> (String, Option<i64>, Option<i64>) {
        let r = c
            .query_one(
                "SELECT state, shards_done, shards_total FROM migrate_progress WHERE job_id = $1",
                &[&job],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        shown(&mut c, job),
        ("succeeded".to_string(), Some(32), Some(32))
    );

    // While a build waits on one node (a transaction there holds an older
    // snapshot), migrate_progress shows the shards done so far; a role
    // that does not own the job sees the same counts.
    let mut blocker = citus.workers[0].connect("app");
    blocker
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .unwrap();
    let job = submit(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX dups_n_idx ON dups (n)')",
    );
    let mut admin = citus.coordinator.connect("app");
    admin.batch_execute("CREATE ROLE watcher LOGIN").unwrap();
    let mut watcher = connect_as(&citus.coordinator, "app", "watcher");
    let part = wait_until(
        "the other node's shards built, not all",
        LONG,
        || match shown(&mut watcher, job) {
            (state, Some(done), Some(32)) if state == "running" && (16..32).contains(&done) => {
                Some(done)
            }
            _ => None,
        },
    );
    assert_eq!(part, 16, "the waiting node's shards are not done");
    blocker.batch_execute("COMMIT").unwrap();
    assert_eq!(wait_done(&mut c, job), "succeeded");
    assert_eq!(
        shown(&mut watcher, job),
        ("succeeded".to_string(), Some(32), Some(32))
    );
    // Any other job: no shard counts.
    let (_, done, total) = shown(&mut c, 1);
    assert_eq!((done, total), (None, None));
}

#[test]
fn kill_9_of_a_shard_backfill_and_cancel_reach_the_nodes() {
    let citus = Citus::start("citus-crash");
    let mut c = citus.owner();
    distributed(&mut c, "items", 100_000);

    // Small batches with a pause between them: a shard takes a while.
    let job = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 300, sleep_ms => 5, parallel => 2)",
    );
    // kill -9 of the process that backfills a shard on the first worker,
    // once it is half-way through its shard.
    let w = &citus.workers[0];
    let victim: i32 = wait_until("a shard half-way on worker 1", LONG, || {
        let mut n = w.connect("app");
        n.query_opt(
            "SELECT worker_pid FROM migrate_progress
              WHERE state = 'running' AND worker_pid IS NOT NULL AND rows_done > 1000 LIMIT 1",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0))
    });
    w.kill_9(victim);
    // And the coordinator's process that follows a shard, too.
    let follower: i32 = wait_until("a slice followed on the coordinator", LONG, || {
        c.query_opt(
            "SELECT worker_pid FROM migrate_progress
              WHERE parent_job = $1 AND state = 'running' AND worker_pid IS NOT NULL LIMIT 1",
            &[&job],
        )
        .unwrap()
        .map(|r| r.get(0))
    });
    citus.coordinator.kill_9(follower);
    let mut c = citus.owner();
    assert_eq!(wait_done(&mut c, job), "succeeded");
    // Every row updated exactly once.
    assert_eq!(counts(&mut c, "items"), vec![(1, 100_000)]);

    // Cancel reaches the nodes: the shards' jobs stop there.
    let job = submit(
        &mut c,
        "SELECT migrate_backfill('items', 'n = n + 1', batch_size => 100, sleep_ms => 50)",
    );
    wait_until("a shard's job running on a node", LONG, || {
        c.query_opt(
            "SELECT 1 FROM migrate_progress WHERE parent_job = $1 AND rows_done > 0",
            &[&job],
        )
        .unwrap()
    });
    c.execute("SELECT migrate_cancel($1)", &[&job]).unwrap();
    for w in &citus.workers {
        let mut n = w.connect("app");
        wait_until("the node's shard jobs to stop", LONG, || {
            let running: i64 = n
                .query_one(
                    "SELECT count(*) FROM migrate_progress
                      WHERE kind = 'backfill' AND state NOT IN ('succeeded', 'failed', 'cancelled')",
                    &[],
                )
                .unwrap()
                .get(0);
            (running == 0).then_some(())
        });
    }
    let moved = counts(&mut c, "items");
    stays_for(
        "the table to stay as the cancel left it",
        Duration::from_secs(2),
        || counts(&mut c, "items") == moved,
    );

    // Another role sees none of its SQL, cannot control it, and cannot
    // backfill the table.
    let mut admin = citus.coordinator.connect("app");
    admin.batch_execute("CREATE ROLE intruder LOGIN").unwrap();
    let mut i = connect_as(&citus.coordinator, "app", "intruder");
    let seen: i64 = i
        .query_one(
            "SELECT count(command) FROM migrate_progress WHERE job_id = $1 OR parent_job = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    let e = i.execute("SELECT migrate_retry($1)", &[&job]).unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{}", message(&e));
    let e = i
        .query_one("SELECT migrate_backfill('items', 'n = 0')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{}", message(&e));
}
