//! What a hostile role tries against a real server: clauses that would
//! escape their batch, locks that would stall the workers or a deploy.

mod common;

use common::{message, sqlstate, wait_until, Cluster};
use postgres::{Client, NoTls};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

fn state_of(c: &mut Client, id: i64) -> (String, Option<String>, Option<String>) {
    let r = c
        .query_one(
            "SELECT state, error_sqlstate, error FROM pgmigrate.jobs WHERE job_id = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

fn wait_finished(c: &mut Client, id: i64) -> (String, Option<String>, Option<String>) {
    wait_until(&format!("job {id} to end"), LONG, || {
        let s = state_of(c, id);
        matches!(s.0.as_str(), "succeeded" | "failed" | "cancelled").then_some(s)
    })
}

fn counter(c: &mut Client, rows: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE counter (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, note text);
         INSERT INTO counter (id) SELECT g FROM generate_series(1, {rows}) g;"
    ))
    .unwrap();
}

/// Every row of `counter` was updated exactly `times` times.
fn counts(c: &mut Client) -> Vec<(i32, i64)> {
    c.query("SELECT n, count(*) FROM counter GROUP BY n ORDER BY n", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn a_clause_cannot_reach_the_statement_around_it() {
    let cluster = Cluster::start("escape");
    let mut c = cluster.create_db("escape");
    counter(&mut c, 1000);
    // Each would make every batch update every row if it reached the
    // batch statement: a parenthesis closed early, a dollar quote opened in
    // one clause and closed in the other, a comment, a second statement.
    let attempts: &[(&str, Option<&str>, &str)] = &[
        ("n = n + 1", Some("true) OR (true"), "42601"),
        ("n = n + 1, note = $$", Some("$$ || 'x' = note"), "42601"),
        ("n = n + 1 /*", Some("*/ true"), "42601"),
        ("n = n + 1 WHERE true --", Some("false"), "42601"),
        ("n = n + 1", Some("true)) --"), "42601"),
        (
            "n = n + 1",
            Some("true; UPDATE counter SET n = 100"),
            "42601",
        ),
        ("n = n + 1", Some("id > 0 UNION SELECT true"), "42601"),
        ("n = n + 1", Some("id > 0 ORDER BY 1"), "42601"),
        ("n = n + 1", Some("id > 0, true"), "42601"),
        ("n = n + 1", Some("id > 0 AS x"), "42601"),
        ("n = n + 1", Some("id > 0 FROM counter"), "42601"),
        ("n = n + 1 FROM counter c2", None, "42601"),
        ("n = n + 1 RETURNING *", None, "42601"),
    ];
    for (set, filter, want) in attempts {
        let r = c.query_one(
            "SELECT migrate_backfill('counter', $1, $2, batch_size => 100)",
            &[set, filter],
        );
        let e = r.expect_err(&format!("SET {set:?} WHERE {filter:?} was accepted"));
        assert_eq!(
            sqlstate(&e),
            *want,
            "SET {set:?} WHERE {filter:?}: {}",
            message(&e)
        );
        let r = c.query_one(
            "SELECT count(*) FROM migrate_estimate('counter', $1, $2)",
            &[set, filter],
        );
        assert!(
            r.is_err(),
            "migrate_estimate took SET {set:?} WHERE {filter:?}"
        );
    }
    assert_eq!(counts(&mut c), vec![(0, 1000)]);

    // Clauses that look alike but are whole: run exactly once per row.
    let id: i64 = c
        .query_one(
            "SELECT migrate_backfill('counter', $1, $2, batch_size => 100)",
            &[
                &"n = n + 1, note = $$a ) OR ( b$$ -- a comment",
                &Some("(id > 0) OR (id < 0) -- ) OR (true"),
            ],
        )
        .unwrap()
        .get(0);
    let (state, _, error) = wait_finished(&mut c, id);
    assert_eq!(state, "succeeded", "{error:?}");
    assert_eq!(counts(&mut c), vec![(1, 1000)]);

    // A job stored with an escaping clause (as an older version could
    // store it) fails before its first batch instead of running it.
    let id: i64 = c
        .query_one(
            "SELECT migrate_backfill('counter', 'n = n + 1', 'id > 0', batch_size => 100,
                                     run_at => now() + interval '1 hour')",
            &[],
        )
        .unwrap()
        .get(0);
    c.execute(
        "UPDATE pgmigrate.jobs
            SET spec = jsonb_set(spec, '{where_clause}', to_jsonb('true) OR (true'::text)),
                run_at = now()
          WHERE job_id = $1",
        &[&id],
    )
    .unwrap();
    let (state, code, error) = wait_finished(&mut c, id);
    assert_eq!(
        (state.as_str(), code.as_deref()),
        ("failed", Some("42601")),
        "{error:?}"
    );
    assert!(error.unwrap_or_default().contains("where_clause"));
    assert_eq!(counts(&mut c), vec![(1, 1000)], "no batch ran");
}

#[test]
fn advisory_locks_of_any_role_stall_neither_workers_nor_a_deploy() {
    let cluster = Cluster::start("locks");
    let mut c = cluster.create_db("locks");
    counter(&mut c, 500);
    c.batch_execute(
        "CREATE ROLE hostile LOGIN;
         GRANT EXECUTE ON FUNCTION migrate_start, migrate_finish TO PUBLIC;",
    )
    .unwrap();
    let url = cluster
        .url("locks")
        .replace("user=postgres", "user=hostile");
    let mut hostile = Client::connect(&url, NoTls).unwrap();
    // The keys workers and migrate_start used before, and a sweep of the
    // first keys of both forms, held in an open transaction.
    hostile
        .batch_execute(
            "BEGIN;
             SELECT pg_advisory_xact_lock(1347242562, 1);
             SELECT pg_advisory_xact_lock(1347242311, hashtext('app' || chr(31) || 'm1'));
             SELECT pg_advisory_xact_lock(k) FROM generate_series(0, 2000) k;
             SELECT pg_advisory_xact_lock(k1, k2) FROM generate_series(0, 20) k1, generate_series(0, 20) k2;",
        )
        .unwrap();
    // A worker claims and runs a job.
    let id: i64 = c
        .query_one(
            "SELECT migrate_backfill('counter', 'n = n + 1', batch_size => 100)",
            &[],
        )
        .unwrap()
        .get(0);
    let (state, _, error) = wait_finished(&mut c, id);
    assert_eq!(state, "succeeded", "{error:?}");
    assert_eq!(counts(&mut c), vec![(1, 500)]);
    // A deploy starts and finishes its migration.
    c.batch_execute("SET statement_timeout = '10s'").unwrap();
    let run: i64 = c
        .query_one("SELECT migrate_start('app', 'm1')", &[])
        .unwrap()
        .get(0);
    c.execute("SELECT migrate_finish($1)", &[&run]).unwrap();

    // The locks pg_migrate takes now are ones no SQL statement of another
    // role can take: they show as object locks on the extension's row.
    let mut worker_view = cluster.connect("locks");
    let mut t = c.transaction().unwrap();
    let run: i64 = t
        .query_one("SELECT migrate_start('app', 'm2')", &[])
        .unwrap()
        .get(0);
    let shown: i64 = worker_view
        .query_one(
            "SELECT count(*) FROM pg_locks
              WHERE locktype = 'object' AND classid = 'pg_extension'::regclass AND objsubid = 2 AND granted",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(shown, 1);
    // A second deploy of the same migration is refused at once, naming the
    // holder.
    let e = worker_view
        .query_one("SELECT migrate_start('app', 'm2')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55006", "{}", message(&e));
    t.execute("SELECT migrate_finish($1)", &[&run]).unwrap();
    t.commit().unwrap();
    hostile.batch_execute("COMMIT").unwrap();
}

#[test]
fn other_roles_neither_see_nor_change_a_roles_work() {
    let cluster = Cluster::start("roles");
    let mut c = cluster.create_db("roles");
    counter(&mut c, 100);
    c.batch_execute(
        "CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN;
         GRANT CREATE, USAGE ON SCHEMA public TO alice, bob;
         GRANT SELECT, UPDATE ON counter TO alice;",
    )
    .unwrap();
    let connect = |who: &str| {
        Client::connect(
            &cluster
                .url("roles")
                .replace("user=postgres", &format!("user={who}")),
            NoTls,
        )
        .unwrap()
    };
    let mut alice = connect("alice");
    let mut bob = connect("bob");

    // An ordinary role may run DDL through migrate_exec and read its log
    // and the lock-risk view.
    for sql in [
        "CREATE TABLE alice_t (id int PRIMARY KEY, note text)",
        "CALL migrate_exec('ALTER TABLE alice_t ADD COLUMN extra int')",
        "SELECT * FROM migrate_lock_risk",
    ] {
        alice
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("alice: {sql}: {}", message(&e)));
    }
    let seen: i64 = alice
        .query_one("SELECT count(*) FROM migrate_exec_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 1);
    // Bob sees none of alice's attempts.
    let seen: i64 = bob
        .query_one("SELECT count(*) FROM migrate_exec_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);

    // A failed job of alice's: its error is hers (it quotes a value of
    // her table); bob sees that there is one, not what it says.
    let id: i64 = alice
        .query_one(
            "SELECT migrate_backfill('counter', 'n = (''secret-'' || id)::int')",
            &[],
        )
        .unwrap()
        .get(0);
    let (state, _, error) = wait_finished(&mut c, id);
    assert_eq!(state, "failed");
    assert!(error.unwrap_or_default().contains("secret-"));
    let theirs: Option<String> = alice
        .query_one(
            "SELECT error FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(theirs.unwrap_or_default().contains("secret-"));
    let shown: Option<String> = bob
        .query_one(
            "SELECT error FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    let shown = shown.unwrap_or_default();
    assert!(
        !shown.contains("secret") && shown.contains("hidden"),
        "{shown}"
    );
    let command: Option<String> = bob
        .query_one(
            "SELECT command FROM migrate_progress WHERE job_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(command, None);

    // Bob cannot touch alice's job, not even through the procedures'
    // internal steps, and cannot call the other internal functions.
    for sql in [
        format!("SELECT migrate_pause({id})"),
        format!("SELECT migrate_retry({id})"),
        format!("SELECT pgmigrate._run_interrupted({id})"),
        format!("SELECT pgmigrate._run_failed({id}, '00000', 'x')"),
        format!("SELECT * FROM pgmigrate._run_step({id})"),
        format!("SELECT pgmigrate._job_outcome({id})"),
        format!("SELECT * FROM pgmigrate._wait_poll({id}, false)"),
        format!("SELECT pgmigrate._follow({id}, 0)"),
        format!("CALL migrate_run({id})"),
        format!("CALL migrate_wait({id})"),
        "SELECT pgmigrate._exec_finish(1)".to_string(),
        "SELECT * FROM pgmigrate._exec_attempt(1, 1)".to_string(),
    ] {
        let e = bob.batch_execute(&sql).unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {}", message(&e));
    }
    let closed: Vec<String> = c
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
              WHERE p.pronamespace = 'pgmigrate'::regnamespace
                AND has_function_privilege('bob', p.oid, 'EXECUTE')
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        closed.iter().all(|f| f.starts_with("pgmigrate._run_")
            || f.starts_with("pgmigrate._wait_")
            || f.starts_with("pgmigrate._exec_")
            || f.starts_with("pgmigrate._job_outcome")
            || f.starts_with("pgmigrate._follow")
            || f.starts_with("pgmigrate.backend_alive")
            || f.starts_with("pgmigrate.build_progress")
            || f.starts_with("pgmigrate.gate_closed")
            || f.starts_with("pgmigrate.shard_builds")
            || f.starts_with("pgmigrate.lock_")
            || f.starts_with("pgmigrate.role_label")),
        "internal functions open to every role: {closed:?}"
    );
    let state: String = c
        .query_one("SELECT state FROM pgmigrate.jobs WHERE job_id = $1", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(state, "failed", "bob changed nothing");
    // Gates are written only by the job functions, for the caller's own new
    // job: bob can neither hold alice's job back nor free one of his own.
    for sql in [
        format!("INSERT INTO pgmigrate.gates (job_id, gate_no, after_app, after_name) VALUES ({id}, 9, 'x', 'y')"),
        "DELETE FROM pgmigrate.gates".to_string(),
    ] {
        let e = bob.batch_execute(&sql).unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {}", message(&e));
    }

    // The log keeps alice by OID: once she is dropped her attempts show
    // as a dropped role's (to superusers), and a new alice sees nothing.
    drop(alice);
    c.batch_execute("DROP OWNED BY alice; DROP ROLE alice; CREATE ROLE alice LOGIN;")
        .unwrap();
    let shown: String = c
        .query_one("SELECT role_name FROM migrate_exec_log", &[])
        .unwrap()
        .get(0);
    assert!(shown.starts_with("(dropped role "), "{shown}");
    let mut new_alice = connect("alice");
    let seen: i64 = new_alice
        .query_one("SELECT count(*) FROM migrate_exec_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        seen, 0,
        "a new role of the same name sees nothing of the old one's"
    );
}

#[test]
fn a_job_runs_with_its_owners_identity_whole() {
    let cluster = Cluster::start("identity");
    let mut c = cluster.create_db("identity");
    counter(&mut c, 50);
    // An audit trigger, as many databases have: who changed the row?
    c.batch_execute(
        "CREATE ROLE carol LOGIN;
         GRANT SELECT, UPDATE ON counter TO carol;
         CREATE TABLE audit (session_user_name name, current_user_name name, is_superuser text, activity_user name);
         GRANT INSERT ON audit TO carol;
         CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO audit VALUES (session_user, current_user, current_setting('is_superuser'),
                                      (SELECT a.usename FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()));
             RETURN NEW;
         END $$;
         CREATE TRIGGER counter_audit BEFORE UPDATE ON counter FOR EACH ROW EXECUTE FUNCTION audit_row();",
    )
    .unwrap();
    let mut carol = Client::connect(
        &cluster
            .url("identity")
            .replace("user=postgres", "user=carol"),
        NoTls,
    )
    .unwrap();
    let id: i64 = carol
        .query_one(
            "SELECT migrate_backfill('counter', 'n = n + 1', batch_size => 10)",
            &[],
        )
        .unwrap()
        .get(0);
    let (state, _, error) = wait_finished(&mut c, id);
    assert_eq!(state, "succeeded", "{error:?}");
    let seen: Vec<(String, String, String, String, i64)> = c
        .query(
            "SELECT session_user_name::text, current_user_name::text, is_superuser, activity_user::text, count(*)
               FROM audit GROUP BY 1, 2, 3, 4 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        seen,
        vec![(
            "carol".into(),
            "carol".into(),
            "off".into(),
            "carol".into(),
            50
        )],
        "every row changed by carol's job is carol's, and not a superuser's (pg_stat_activity too)"
    );
    // The worker takes its own identity back after the job: a superuser's
    // job after carol's runs as the superuser.
    c.batch_execute("TRUNCATE audit").unwrap();
    let id: i64 = c
        .query_one(
            "SELECT migrate_backfill('counter', 'n = n + 1', batch_size => 10)",
            &[],
        )
        .unwrap()
        .get(0);
    let (state, _, error) = wait_finished(&mut c, id);
    assert_eq!(state, "succeeded", "{error:?}");
    let who: Vec<String> = c
        .query(
            "SELECT DISTINCT session_user_name::text || '/' || activity_user::text FROM audit",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(who, vec!["postgres/postgres".to_string()]);
}

#[test]
fn a_type_change_is_its_owners_alone_and_its_trigger_serves_no_one_else() {
    let cluster = Cluster::start("alter_type_roles");
    let mut c = cluster.create_db("roles");
    c.batch_execute(
        "CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN;
         CREATE SCHEMA alice AUTHORIZATION alice;
         GRANT USAGE ON SCHEMA alice TO bob;
         CREATE SCHEMA bobs AUTHORIZATION bob;
         CREATE FUNCTION public.secret() RETURNS int LANGUAGE sql AS 'SELECT 42';
         REVOKE ALL ON FUNCTION public.secret() FROM PUBLIC;",
    )
    .unwrap();
    let connect = |who: &str| {
        Client::connect(
            &cluster
                .url("roles")
                .replace("user=postgres", &format!("user={who}")),
            NoTls,
        )
        .unwrap()
    };
    let mut alice = connect("alice");
    let mut bob = connect("bob");
    alice
        .batch_execute(
            "CREATE TABLE alice.t (id int PRIMARY KEY, v int, note text);
             INSERT INTO alice.t SELECT g, g, 'n' FROM generate_series(1, 2000) g;
             GRANT SELECT, INSERT, UPDATE ON alice.t TO bob;
             CREATE TABLE alice.held (id int PRIMARY KEY, v int);
             INSERT INTO alice.held SELECT g, g FROM generate_series(1, 100) g;",
        )
        .unwrap();
    // A using_expr that calls what alice may not run is refused as hers.
    let e = alice
        .batch_execute("SELECT migrate_alter_type('alice.t', 'v', 'bigint', using_expr => 'v + public.secret()')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{}", message(&e));
    // Bob may write to the table but not change its columns.
    let e = bob
        .batch_execute("SELECT migrate_alter_type('alice.t', 'v', 'bigint')")
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{}", message(&e));
    // Alice's change, held after its cut-over.
    let id: i64 = alice
        .query_one(
            "SELECT migrate_alter_type('alice.held', 'v', 'bigint', complete => 'manual')",
            &[],
        )
        .unwrap()
        .get(0);
    wait_until("alice's job held after its cut-over", LONG, || {
        let s = state_of(&mut c, id);
        assert!(!matches!(s.0.as_str(), "failed" | "cancelled"), "{s:?}");
        (s.0 == "paused").then_some(())
    });
    // Bob can neither complete, roll back, resume nor cancel it.
    for sql in [
        format!("SELECT migrate_complete({id})"),
        format!("SELECT migrate_rollback({id})"),
        format!("SELECT migrate_resume({id})"),
        format!("SELECT migrate_cancel({id})"),
    ] {
        let e = bob.batch_execute(&sql).unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {}", message(&e));
    }
    // The triggers' functions are alice's, and no one else may call them.
    let open: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_proc p WHERE p.proname LIKE 'pgm\\_%'
                AND (p.proacl IS NULL OR has_function_privilege('bob', p.oid, 'EXECUTE')
                     OR p.proowner <> 'alice'::regrole)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "a trigger function is open to others");
    // Bob's writes go through alice's trigger, which keeps the old column
    // in step under a pinned search_path, whatever bob's says.
    alice
        .batch_execute("GRANT SELECT, INSERT, UPDATE ON alice.held TO bob")
        .unwrap();
    bob.batch_execute(
        "CREATE FUNCTION bobs.int4(bigint) RETURNS integer LANGUAGE sql AS 'SELECT 666';
         SET search_path = bobs, alice, public;
         INSERT INTO held (id, v) VALUES (5000, 7);
         UPDATE held SET v = 8 WHERE id = 1;
         RESET search_path;",
    )
    .unwrap();
    let old: Vec<i32> = c
        .query(
            "SELECT v_pgm_old FROM alice.held WHERE id IN (1, 5000) ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(old, [8, 7]);
    alice
        .batch_execute(&format!("SELECT migrate_complete({id})"))
        .unwrap();
    let (s, _, error) = wait_finished(&mut c, id);
    assert_eq!(s, "succeeded", "{error:?}");
    let t: String = c
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'alice.held'::regclass AND attname = 'v'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(t, "bigint");
}
