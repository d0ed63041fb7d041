//! Upgrades, tested like TimescaleDB's: a fresh install of this version, an
//! install of 0.1.0 (the released script, kept in tests/upgrade/) with
//! history and jobs of every kind and state, then ALTER EXTENSION UPDATE,
//! and a pg_dump/pg_restore of the updated database, must have the same
//! catalog contract; the update keeps every row, a backfill running through
//! it and a server restart ends with every row updated exactly once, and
//! the update script locks no table of yours.

mod common;

use common::{project_root, wait_until, Cluster};
use postgres::{Client, SimpleQueryMessage};
use std::process::Command;
use std::time::Duration;

/// Put the 0.1.0 install script where CREATE EXTENSION ... VERSION finds
/// it (cargo pgrx install ships only this version's script and the upgrade
/// scripts).
fn install_old_script() {
    let out = Command::new("/usr/lib/postgresql/15/bin/pg_config")
        .arg("--sharedir")
        .output()
        .unwrap();
    let share = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let from = project_root().join("tests/upgrade/pg_migrate--0.1.0.sql");
    let to = format!("{share}/extension/pg_migrate--0.1.0.sql");
    if std::fs::copy(&from, &to).is_err() {
        // Not root: as cargo pgrx install does, through sudo.
        let status = Command::new("sudo")
            .arg("cp")
            .arg(&from)
            .arg(&to)
            .status()
            .unwrap();
        assert!(status.success(), "copy the 0.1.0 script to {to}");
    }
}

/// Every row of `sql` as text, one line per row.
fn lines(c: &mut Client, sql: &str) -> Vec<String> {
    c.simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join(" | "),
            ),
            _ => None,
        })
        .collect()
}

/// The catalog contract: every object the extension owns, functions with
/// their body, settings, security and privileges, views, tables, columns,
/// constraints, indexes, comments, what pg_dump carries, the job kinds.
const CONTRACT: &[&str] = &[
    "SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend
      WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
        AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_migrate') ORDER BY 1",
    "SELECT p.oid::regprocedure, p.provolatile, p.proisstrict, p.prosecdef, p.proconfig, p.proacl,
            pg_get_function_result(p.oid), md5(p.prosrc), p.probin, obj_description(p.oid, 'pg_proc')
       FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
      WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_migrate') AND d.deptype = 'e'
      ORDER BY p.oid::regprocedure::text",
    "SELECT c.oid::regclass, c.relkind, c.relacl, obj_description(c.oid, 'pg_class'),
            CASE WHEN c.relkind = 'v' THEN md5(pg_get_viewdef(c.oid)) END
       FROM pg_class c WHERE c.relnamespace = 'pgmigrate'::regnamespace OR c.oid IN (SELECT objid FROM pg_depend
            WHERE deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_migrate'))
      ORDER BY c.oid::regclass::text",
    "SELECT c.oid::regclass, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
            pg_get_expr(ad.adbin, ad.adrelid), col_description(c.oid, a.attnum),
            CASE WHEN c.relkind = 'v' THEN a.attnum END
       FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
      WHERE (c.relnamespace = 'pgmigrate'::regnamespace OR c.oid IN (SELECT objid FROM pg_depend
             WHERE deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_migrate')))
        AND c.relkind IN ('r', 'v')
      ORDER BY c.oid::regclass::text, a.attname",
    "SELECT conrelid::regclass, conname, pg_get_constraintdef(oid) FROM pg_constraint
      WHERE connamespace = 'pgmigrate'::regnamespace ORDER BY conrelid::regclass::text, conname",
    "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      WHERE c.relnamespace = 'pgmigrate'::regnamespace ORDER BY 1",
    "SELECT t.tgrelid::regclass, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
      JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = 'pgmigrate'::regnamespace AND NOT t.tgisinternal
      ORDER BY t.tgrelid::regclass::text, t.tgname",
    "SELECT unnest(extconfig)::regclass::text AS dumped FROM pg_extension WHERE extname = 'pg_migrate' ORDER BY 1",
    "SELECT extversion, extrelocatable, extnamespace::regnamespace FROM pg_extension WHERE extname = 'pg_migrate'",
    "SELECT * FROM pgmigrate.kinds ORDER BY kind",
    "SELECT nspname, nspacl FROM pg_namespace WHERE nspname = 'pgmigrate'",
];

fn contract(c: &mut Client) -> Vec<String> {
    CONTRACT
        .iter()
        .flat_map(|q| {
            let mut v = vec![format!(
                "-- {}",
                q.split_whitespace().collect::<Vec<_>>().join(" ")
            )];
            v.extend(lines(c, q));
            v
        })
        .collect()
}

/// What the user's data says: history, jobs (not their progress), gates,
/// builds.
const DATA: &[&str] = &[
    "SELECT app, name, status, checksum, error, applied_by FROM migrate_history ORDER BY app, name",
    "SELECT event_id, app, name, event, status FROM migrate_events ORDER BY event_id",
    "SELECT job_id, kind, relation, owner, command, run_at, migration, parent_job FROM migrate_progress ORDER BY job_id",
    "SELECT job_id, state, error FROM migrate_progress WHERE state NOT IN ('running', 'waiting') ORDER BY job_id",
    "SELECT job_id, wait_reason FROM migrate_progress WHERE state = 'queued' ORDER BY job_id",
    "SELECT job_id, attempt, statement, outcome FROM migrate_index_builds ORDER BY job_id, attempt",
    "SELECT last_value FROM pgmigrate.job_id_seq",
];

fn data(c: &mut Client) -> Vec<String> {
    DATA.iter()
        .flat_map(|q| {
            let mut v = vec![format!("-- {q}")];
            v.extend(lines(c, q));
            v
        })
        .collect()
}

fn job(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

fn state(c: &mut Client, id: i64) -> String {
    c.query_one(
        "SELECT state FROM migrate_progress WHERE job_id = $1",
        &[&id],
    )
    .unwrap()
    .get(0)
}

/// Running, or waiting between batches for its rows budget.
fn active(c: &mut Client, id: i64) -> bool {
    matches!(state(c, id).as_str(), "running" | "waiting")
}

fn diff(what: &str, a: &[String], b: &[String]) {
    if a != b {
        let only_a: Vec<&String> = a.iter().filter(|l| !b.contains(l)).collect();
        let only_b: Vec<&String> = b.iter().filter(|l| !a.contains(l)).collect();
        let at = a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!(
            "{what} differ\n--- only in the first:\n{only_a:#?}\n--- only in the second:\n{only_b:#?}\n--- first difference, line {at}:\n{:?}\n{:?}",
            a.get(at),
            b.get(at)
        );
    }
}

/// History of every shape and jobs of every kind and state, made under
/// 0.1.0; returns the id of the backfill left running.
fn fixtures(c: &mut Client) -> i64 {
    c.batch_execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, note text);
         INSERT INTO t (id) SELECT g FROM generate_series(1, 20000) g;
         CREATE TABLE u (id bigint PRIMARY KEY, v int, w text);
         INSERT INTO u (id, v) SELECT g, g FROM generate_series(1, 1000) g;
         SELECT migrate_record('shop', '0001_initial', checksum => 'sha256:aa');
         SELECT migrate_finish(migrate_start('shop', '0002_orders'), 'failed', 'boom');
         SELECT migrate_start('shop', '0003_left_running');",
    )
    .unwrap();
    let done = job(c, "SELECT migrate_backfill('u', 'w = v::text')");
    let failed = job(c, "SELECT migrate_backfill('u', 'v = v / (id - id)', migration => ARRAY['shop', '0004_fail'])");
    let built = job(
        c,
        "SELECT migrate_create_index('CREATE INDEX u_v_idx ON u (v)')",
    );
    wait_until("the first jobs to end", Duration::from_secs(60), || {
        let s = [state(c, done), state(c, failed), state(c, built)];
        (s == ["succeeded", "failed", "succeeded"]).then_some(())
    });
    let later = "run_at => now() + interval '1 day'";
    let queued = job(
        c,
        &format!("SELECT migrate_backfill('u', 'w = w', {later})"),
    );
    let paused = job(
        c,
        &format!("SELECT migrate_backfill('u', 'v = v', {later})"),
    );
    c.batch_execute(&format!("SELECT migrate_pause({paused})"))
        .unwrap();
    job(
        c,
        &format!("SELECT migrate_set_not_null('u', 'v', {later})"),
    );
    job(
        c,
        &format!("SELECT migrate_add_constraint('u', 'CHECK (v > 0)', {later})"),
    );
    job(
        c,
        &format!("SELECT migrate_alter_type('u', 'v', 'bigint', {later})"),
    );
    job(
        c,
        "SELECT migrate_reindex('u_v_idx', schedule => '0 3 * * 0')",
    );
    job(
        c,
        &format!("SELECT migrate_backfill('u', 'w = w', after_jobs => ARRAY[{queued}])"),
    );
    let cancelled = job(
        c,
        &format!("SELECT migrate_backfill('u', 'w = w', {later})"),
    );
    c.batch_execute(&format!("SELECT migrate_cancel({cancelled})"))
        .unwrap();
    // The one that runs through the update: 20,000 rows at 1,000 a second.
    let running = job(
        c,
        "SELECT migrate_backfill('t', 'n = n + 1', batch_size => 200, max_rows_per_second => 1000)",
    );
    wait_until(
        "the backfill to be running",
        Duration::from_secs(30),
        || active(c, running).then_some(()),
    );
    running
}

#[test]
fn update_from_0_1_0_matches_a_fresh_install_keeps_everything_and_survives_dump_and_restore() {
    install_old_script();
    // A short naptime: the launcher looks at the restored database (which
    // had no extension when it was created) within seconds.
    let cluster = Cluster::start_with("upgrade", &["pg_migrate.naptime=1"]);
    let mut fresh = cluster.create_db("fresh");
    let expected = contract(&mut fresh);

    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE DATABASE old").unwrap();
    let mut old = cluster.connect("old");
    old.batch_execute("CREATE EXTENSION pg_migrate VERSION '0.1.0'")
        .unwrap();
    let running = fixtures(&mut old);
    let before = data(&mut old);

    old.batch_execute("ALTER EXTENSION pg_migrate UPDATE")
        .unwrap();
    assert_eq!(
        lines(
            &mut old,
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_migrate'"
        ),
        ["0.2.0"]
    );
    diff(
        "the user's data before and after the update",
        &before,
        &data(&mut old),
    );
    diff(
        "the catalog of a fresh install and of 0.1.0 updated",
        &expected,
        &contract(&mut old),
    );
    assert!(
        active(&mut old, running),
        "the backfill goes on through the update"
    );

    // A restart onto the library (as after installing a new version),
    // while the backfill runs: it resumes, every row updated once.
    cluster.restart("fast");
    let mut old = cluster.connect("old");
    wait_until("the backfill to succeed", Duration::from_secs(120), || {
        (state(&mut old, running) == "succeeded").then_some(())
    });
    assert_eq!(
        lines(&mut old, "SELECT n, count(*) FROM t GROUP BY n"),
        ["1 | 20000"]
    );

    // A dump of the updated database, taken while another backfill runs,
    // restored into a new database: same catalog, same data; the job that
    // was running is paused there, saying why, and not carried on.
    let slow = job(
        &mut old,
        "SELECT migrate_backfill('t', 'n = n + 1', batch_size => 100, max_rows_per_second => 200)",
    );
    wait_until(
        "the second backfill to be running",
        Duration::from_secs(30),
        || active(&mut old, slow).then_some(()),
    );
    let dump = cluster.dir.join("old.dump");
    cluster.client_program("pg_dump", &["-Fc", "-f", dump.to_str().unwrap(), "old"]);
    let dumped = data(&mut old);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE DATABASE restored").unwrap();
    cluster.client_program("pg_restore", &["-d", "restored", dump.to_str().unwrap()]);
    let mut restored = cluster.connect("restored");
    diff(
        "the catalog of a fresh install and of the restored one",
        &expected,
        &contract(&mut restored),
    );
    let reason = wait_until(
        "the restored job to be paused",
        Duration::from_secs(60),
        || {
            restored
                .query_one(
                    "SELECT state, wait_reason FROM migrate_progress WHERE job_id = $1",
                    &[&slow],
                )
                .ok()
                .filter(|r| r.get::<_, String>(0) == "paused")
                .map(|r| r.get::<_, String>(1))
        },
    );
    assert_eq!(
        reason,
        format!("restored from a dump taken while it ran: check the table, then migrate_resume({slow}) goes on where the dump left it")
    );
    assert!(cluster.log().contains(&format!(
        "this database was restored from a dump taken while job(s) {slow} ran"
    )));
    // Everything else came across as it was.
    let strip = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .filter(|l| !l.starts_with(&format!("{slow} |")))
            .collect()
    };
    diff(
        "the data dumped and restored",
        &strip(dumped),
        &strip(data(&mut restored)),
    );
    // In the original database the job goes on; the restored copy's rows
    // are left as the dump had them until someone resumes it there.
    assert!(active(&mut old, slow));
    let n_restored = lines(&mut restored, "SELECT sum(n) FROM t");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lines(&mut restored, "SELECT sum(n) FROM t"), n_restored);
    restored
        .batch_execute(&format!("SELECT migrate_resume({slow})"))
        .unwrap();
    restored
        .batch_execute(&format!("SELECT migrate_cancel({slow})"))
        .unwrap();
    old.batch_execute(&format!("SELECT migrate_cancel({slow})"))
        .unwrap();
}

#[test]
fn the_update_script_locks_no_table_of_yours() {
    let cluster = Cluster::start("upgrade_locks");
    let mut c = cluster.create_db("locks");
    let script =
        std::fs::read_to_string(project_root().join("sql/pg_migrate--0.1.0--0.2.0.sql")).unwrap();
    let script: String = script
        .lines()
        .filter(|l| !l.starts_with("\\echo"))
        .collect::<Vec<_>>()
        .join("\n");
    // The objects it creates exist in this (fresh) database: analyse it
    // as it runs against 0.1.0, where they do not.
    c.batch_execute(
        "ALTER EXTENSION pg_migrate DROP TABLE pgmigrate.instance; DROP TABLE pgmigrate.instance",
    )
    .unwrap();
    // The extension's own relations (its tables, and its views, which
    // CREATE OR REPLACE VIEW locks for a moment) and the catalogs are not
    // yours.
    let rows = c
        .query(
            "SELECT a.relation::text, a.lock_mode,
                    c.relnamespace = ANY (ARRAY['pgmigrate'::regnamespace, 'pg_catalog'::regnamespace])
                    OR EXISTS (SELECT 1 FROM pg_depend d
                                WHERE d.classid = 'pg_class'::regclass AND d.objid = a.relation::oid AND d.deptype = 'e')
               FROM migrate_analyze($1) a JOIN pg_class c ON c.oid = a.relation::oid",
            &[&script],
        )
        .unwrap();
    let strong = [
        "ShareLock",
        "ShareRowExclusiveLock",
        "ExclusiveLock",
        "AccessExclusiveLock",
    ];
    let mut own = 0;
    for r in &rows {
        let (relation, mode, ours): (String, String, bool) = (r.get(0), r.get(1), r.get(2));
        own += i32::from(ours);
        assert!(
            ours || !strong.contains(&mode.as_str()),
            "the update script takes {mode} on {relation}"
        );
    }
    assert!(own > 0, "the script's own relations were seen: {rows:?}");
    let all: i64 = c
        .query_one("SELECT count(*) FROM migrate_analyze($1)", &[&script])
        .unwrap()
        .get(0);
    assert!(all >= 8, "the script was read: {all} statements");
}
