// In-process tests of jobs: submit-time validation, the step that workers
// and CALL migrate_run both use (driven here directly, in the test's own
// transaction), control functions and who may use them.

fn drive(id: i64) -> crate::engine::jobs::JobState {
    assert!(crate::catalog::as_owner(|| crate::catalog::jobs::claim_for_session(id)), "claim job {id}");
    for _ in 0..10_000 {
        let r = crate::runner::step(id, crate::runner::Driver::Session);
        if r.done {
            return r.state;
        }
    }
    panic!("job {id} did not finish in 10000 steps");
}

fn job_field(id: i64, column: &str) -> Option<String> {
    Spi::get_one::<String>(&format!("SELECT {column}::text FROM pgmigrate.jobs WHERE job_id = {id}")).unwrap()
}

fn submit(sql: &str) -> i64 {
    Spi::get_one::<i64>(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).unwrap()
}

#[pg_test]
fn backfill_updates_every_row_exactly_once() {
    run("CREATE TABLE t1 (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0)");
    run("INSERT INTO t1 (id) SELECT g FROM generate_series(1, 10000) g");
    let id = submit("SELECT migrate_backfill('t1', 'n = n + 1', batch_size => 777)");
    assert_eq!(drive(id), crate::engine::jobs::JobState::Succeeded);
    assert_eq!(one::<String>("SELECT string_agg(DISTINCT n::text, ',') FROM t1"), Some("1".into()));
    assert_eq!(job_field(id, "batches"), Some("13".into()), "ceil(10000 / 777) batches with rows");
    assert_eq!(job_field(id, "rows_done"), Some("10000".into()));
    assert_eq!(job_field(id, "rows_total"), Some("10000".into()));
    assert_eq!(
        one::<String>(&format!("SELECT format('%s|%s', state, percent) FROM migrate_progress WHERE job_id = {id}")),
        Some("succeeded|100.0".into())
    );
}

#[pg_test]
fn the_where_clause_limits_the_update_and_may_name_the_key() {
    run("CREATE TABLE t2 (id int PRIMARY KEY, n int NOT NULL DEFAULT 0)");
    run("INSERT INTO t2 (id) SELECT g FROM generate_series(1, 1000) g");
    let id = submit("SELECT migrate_backfill('t2', 'n = id * 2', 'id % 10 = 0', batch_size => 100)");
    drive(id);
    assert_eq!(one::<i64>("SELECT count(*) FROM t2 WHERE n <> 0"), Some(100));
    assert_eq!(one::<i64>("SELECT count(*) FROM t2 WHERE n <> 0 AND n <> id * 2"), Some(0));
    assert_eq!(job_field(id, "rows_updated"), Some("100".into()));
    assert_eq!(job_field(id, "rows_done"), Some("1000".into()));
}

#[pg_test]
fn every_key_type_is_walked() {
    for (ty, values) in [
        ("numeric", "g::numeric / 10"),
        ("uuid", "md5(g::text)::uuid"),
        ("text", "'k' || lpad(g::text, 5, '0') || 'é'"),
        ("timestamp", "'2024-01-01'::timestamp + g * interval '1 minute'"),
        ("timestamptz", "'2024-01-01 00:00+00'::timestamptz + g * interval '1 second'"),
        ("bigint", "g::bigint * 1000000000"),
    ] {
        run("DROP TABLE IF EXISTS tk");
        run(&format!("CREATE TABLE tk (k {ty} PRIMARY KEY, n int NOT NULL DEFAULT 0)"));
        run(&format!("INSERT INTO tk (k) SELECT {values} FROM generate_series(1, 2000) g"));
        // A DateStyle that would misread dates if the cursor's text were
        // parsed under other settings than it was written with.
        run("SET LOCAL DateStyle = 'SQL, DMY'");
        let id = submit("SELECT migrate_backfill('tk', 'n = n + 1', batch_size => 333)");
        assert_eq!(drive(id), crate::engine::jobs::JobState::Succeeded, "{ty}");
        assert_eq!(one::<i64>("SELECT count(*) FROM tk WHERE n <> 1"), Some(0), "{ty}: every row once");
    }
}

#[pg_test]
fn a_composite_key_is_walked_in_order() {
    run("CREATE TABLE tc (tenant int, seq int, n int NOT NULL DEFAULT 0, PRIMARY KEY (tenant, seq))");
    run("INSERT INTO tc (tenant, seq) SELECT t, s FROM generate_series(1, 30) t, generate_series(1, 70) s");
    let id = submit("SELECT migrate_backfill('tc', 'n = n + 1', batch_size => 64)");
    drive(id);
    assert_eq!(one::<i64>("SELECT count(*) FROM tc WHERE n <> 1"), Some(0));
    assert_eq!(job_field(id, "upper_bound"), Some("{30,70}".into()));
    assert!(job_field(id, "spec").unwrap().contains(r#""columns": [{"name": "tenant", "type_name": "integer"}, {"name": "seq", "type_name": "integer"}]"#));
}

#[pg_test]
fn a_unique_not_null_index_stands_in_for_a_primary_key() {
    run("CREATE TABLE tu (code text NOT NULL, n int NOT NULL DEFAULT 0)");
    run("CREATE UNIQUE INDEX ON tu (code)");
    run("INSERT INTO tu (code) SELECT 'c' || g FROM generate_series(1, 500) g");
    let id = submit("SELECT migrate_backfill('tu', 'n = n + 1', batch_size => 50)");
    drive(id);
    assert_eq!(one::<i64>("SELECT count(*) FROM tu WHERE n <> 1"), Some(0));
    assert!(job_field(id, "spec").unwrap().contains(r#""mode": "key""#));
}

#[pg_test]
fn a_table_without_a_key_is_walked_by_block_ranges() {
    run("CREATE TABLE tn (a int, b int)");
    run("INSERT INTO tn (a) SELECT g FROM generate_series(1, 5000) g");
    run("ANALYZE tn");
    let id = submit("SELECT migrate_backfill('tn', 'b = a * 3', 'b IS NULL', batch_size => 400)");
    drive(id);
    assert!(job_field(id, "spec").unwrap().contains(r#""mode": "ctid""#));
    assert_eq!(one::<i64>("SELECT count(*) FROM tn WHERE b IS DISTINCT FROM a * 3"), Some(0));
    assert_eq!(job_field(id, "rows_updated"), Some("5000".into()));
}

#[pg_test]
fn an_empty_table_succeeds_at_once() {
    run("CREATE TABLE te (id int PRIMARY KEY, n int)");
    let id = submit("SELECT migrate_backfill('te', 'n = 1')");
    assert_eq!(drive(id), crate::engine::jobs::JobState::Succeeded);
    assert_eq!(job_field(id, "rows_done"), Some("0".into()));
}

#[pg_test]
fn a_failing_row_fails_the_job_and_is_named() {
    run("CREATE TABLE tf (id int PRIMARY KEY, d int NOT NULL)");
    run("INSERT INTO tf SELECT g, CASE WHEN g = 1234 THEN 0 ELSE 1 END FROM generate_series(1, 3000) g");
    run("ALTER TABLE tf ADD COLUMN r int");
    let id = submit("SELECT migrate_backfill('tf', 'r = 100 / d', batch_size => 1000)");
    assert_eq!(drive(id), crate::engine::jobs::JobState::Failed);
    assert_eq!(job_field(id, "error"), Some("division by zero".into()));
    assert_eq!(job_field(id, "error_sqlstate"), Some("22012".into()));
    assert_eq!(job_field(id, "error_detail"), Some("Failing row: (id)=(1234).".into()));
    // The batches before the bad one are done; the bad batch rolled back.
    assert_eq!(one::<i64>("SELECT count(*) FROM tf WHERE r IS NOT NULL"), Some(1000));
    assert_eq!(job_field(id, "cursor"), Some("{1000}".into()));
    // Fix the data, retry: it resumes at the batch that failed.
    run("UPDATE tf SET d = 1 WHERE id = 1234");
    run(&format!("SELECT migrate_retry({id})"));
    assert_eq!(drive(id), crate::engine::jobs::JobState::Succeeded);
    assert_eq!(one::<i64>("SELECT count(*) FROM tf WHERE r = 100"), Some(3000));
}

#[pg_test]
fn a_linked_migration_follows_its_job() {
    run("CREATE TABLE tm (id int PRIMARY KEY, n int)");
    run("INSERT INTO tm SELECT g FROM generate_series(1, 100) g");
    let id = submit("SELECT migrate_backfill('tm', 'n = 1', migration => ARRAY['shop', '0043_backfill_n'])");
    assert_eq!(status_of("shop", "0043_backfill_n").as_deref(), Some("running"));
    assert!(one::<String>("SELECT description FROM migrate_history").unwrap().contains("backfill of"));
    drive(id);
    assert_eq!(status_of("shop", "0043_backfill_n").as_deref(), Some("applied"));
    assert_eq!(one::<String>(&format!("SELECT migration FROM migrate_progress WHERE job_id = {id}")), Some("shop.0043_backfill_n".into()));
    // an applied migration cannot be linked again
    assert_eq!(
        sqlstate_of("SELECT migrate_backfill('tm', 'n = 2', migration => ARRAY['shop', '0043_backfill_n'])").as_deref(),
        Some("42710")
    );
}

#[pg_test]
fn a_cancelled_linked_job_fails_its_migration_and_retry_starts_a_new_run() {
    run("CREATE TABLE tl (id int PRIMARY KEY, n int)");
    run("INSERT INTO tl SELECT g FROM generate_series(1, 10) g");
    let id = submit("SELECT migrate_backfill('tl', 'n = 1', migration => ARRAY['shop', '0044'])");
    run(&format!("SELECT migrate_cancel({id})"));
    assert_eq!(status_of("shop", "0044").as_deref(), Some("failed"));
    assert!(one::<String>("SELECT error FROM migrate_history").unwrap().contains("was cancelled by"));
    run(&format!("SELECT migrate_retry({id})"));
    assert_eq!(status_of("shop", "0044").as_deref(), Some("running"));
    drive(id);
    assert_eq!(status_of("shop", "0044").as_deref(), Some("applied"));
}

#[pg_test]
fn bad_submissions_are_refused_with_their_sqlstate() {
    run("CREATE TABLE tb (id int PRIMARY KEY, n int, s text)");
    run("CREATE TABLE tnk (a int)");
    run("CREATE VIEW vb AS SELECT * FROM tb");
    run("CREATE TEMP TABLE ttemp (id int PRIMARY KEY, n int)");
    run("CREATE TABLE tp (id int, n int) PARTITION BY RANGE (id)");
    for (sql, code) in [
        ("SELECT migrate_backfill(NULL, 'n = 1')", "22004"),
        ("SELECT migrate_backfill('tb', NULL)", "22004"),
        ("SELECT migrate_backfill('tb', '  ')", "22023"),
        ("SELECT migrate_backfill('nosuch', 'n = 1')", "42P01"),
        ("SELECT migrate_backfill('vb', 'n = 1')", "42809"),
        ("SELECT migrate_backfill('pg_class', 'relname = relname')", "0A000"),
        ("SELECT migrate_backfill('ttemp', 'n = 1')", "0A000"),
        ("SELECT migrate_backfill('tp', 'n = 1')", "0A000"),
        ("SELECT migrate_backfill('tnk', 'a = 1')", "22023"),
        ("SELECT migrate_backfill('tb', 'id = id + 1')", "22023"),
        ("SELECT migrate_backfill('tb', '(n, id) = (1, 2)')", "22023"),
        ("SELECT migrate_backfill('tb', 'nope = 1')", "42703"),
        ("SELECT migrate_backfill('tb', 'n = n +')", "42601"),
        ("SELECT migrate_backfill('tb', 'n = 1; DROP TABLE tb')", "42601"),
        ("SELECT migrate_backfill('tb', 'n = 1 FROM pg_class')", "42601"),
        ("SELECT migrate_backfill('tb', 'n = 1', 'true) RETURNING (1')", "42601"),
        ("SELECT migrate_backfill('tb', 'n = 1', 's = 1')", "42883"),
        ("SELECT migrate_backfill('tb', 'n = 1', batch_size => 0)", "22023"),
        ("SELECT migrate_backfill('tb', 'n = 1', sleep_ms => -1)", "22023"),
        ("SELECT migrate_backfill('tb', 'n = 1', lock_timeout => '-1s')", "22023"),
        ("SELECT migrate_backfill('tb', 'n = 1', max_retries => NULL)", "22004"),
        ("SELECT migrate_backfill('tb', 'n = 1', migration => ARRAY['only-one'])", "22023"),
        ("SELECT migrate_backfill('tb', 'n = 1', migration => ARRAY['a', ''])", "22023"),
    ] {
        assert_eq!(sqlstate_of(sql).as_deref(), Some(code), "{sql}");
    }
    assert_eq!(one::<i64>("SELECT count(*) FROM pgmigrate.jobs"), Some(0), "nothing was queued");
    assert_eq!(one::<i64>("SELECT count(*) FROM tb"), Some(0));
}

#[pg_test]
fn submitting_needs_the_tables_privileges() {
    run("CREATE TABLE tpriv (id int PRIMARY KEY, n int)");
    run("CREATE ROLE pgm_reader_only");
    run("GRANT SELECT ON tpriv TO pgm_reader_only");
    run("SET ROLE pgm_reader_only");
    assert_eq!(sqlstate_of("SELECT migrate_backfill('tpriv', 'n = 1')").as_deref(), Some("42501"));
    run("RESET ROLE");
}

#[pg_test]
fn control_transitions_and_their_refusals() {
    run("CREATE TABLE tctl (id int PRIMARY KEY, n int)");
    let id = submit("SELECT migrate_backfill('tctl', 'n = 1')");
    let state = || one::<String>(&format!("SELECT state FROM migrate_progress WHERE job_id = {id}")).unwrap();
    run(&format!("SELECT migrate_pause({id})"));
    assert_eq!(state(), "paused");
    assert_eq!(sqlstate_of(&format!("SELECT migrate_pause({id})")).as_deref(), Some("55000"));
    run(&format!("SELECT migrate_resume({id})"));
    assert_eq!(state(), "queued");
    assert_eq!(sqlstate_of(&format!("SELECT migrate_retry({id})")).as_deref(), Some("55000"));
    run(&format!("SELECT migrate_cancel({id})"));
    assert_eq!(state(), "cancelled");
    assert_eq!(sqlstate_of(&format!("SELECT migrate_resume({id})")).as_deref(), Some("55000"));
    assert_eq!(sqlstate_of("SELECT migrate_pause(987654)").as_deref(), Some("42704"));
    assert_eq!(sqlstate_of("SELECT migrate_pause(NULL)").as_deref(), Some("22004"));
}

#[pg_test]
fn only_the_owner_its_members_and_superusers_see_and_control_a_job() {
    run("CREATE TABLE town (id int PRIMARY KEY, n int)");
    run("CREATE ROLE pgm_owner");
    run("CREATE ROLE pgm_member IN ROLE pgm_owner");
    run("CREATE ROLE pgm_stranger");
    run("GRANT SELECT, UPDATE ON town TO pgm_owner");
    run("SET ROLE pgm_owner");
    let id = submit("SELECT migrate_backfill('town', 'n = 1')");
    run("RESET ROLE");
    run("SET ROLE pgm_stranger");
    assert_eq!(sqlstate_of(&format!("SELECT migrate_pause({id})")).as_deref(), Some("42501"));
    assert_eq!(
        one::<String>(&format!("SELECT format('%s|%s', owner, (command IS NULL)::text) FROM migrate_progress WHERE job_id = {id}")),
        Some("pgm_owner|true".into()),
        "a stranger sees the job but not its SQL"
    );
    run("RESET ROLE");
    run("SET ROLE pgm_member");
    assert!(one::<String>(&format!("SELECT command FROM migrate_progress WHERE job_id = {id}")).unwrap().contains("SET\nn = 1"));
    run(&format!("SELECT migrate_pause({id})"));
    run("RESET ROLE");
    assert_eq!(one::<String>(&format!("SELECT wait_reason FROM migrate_progress WHERE job_id = {id}")), Some("paused by pgm_member".into()));
}

#[pg_test]
fn a_job_runs_as_its_owner() {
    run("CREATE TABLE tas (id int PRIMARY KEY, who text)");
    run("INSERT INTO tas SELECT g FROM generate_series(1, 10) g");
    run("CREATE ROLE pgm_app_owner");
    run("GRANT SELECT, UPDATE ON tas TO pgm_app_owner");
    run("SET ROLE pgm_app_owner");
    let id = submit("SELECT migrate_backfill('tas', 'who = current_user')");
    run("RESET ROLE");
    // a superuser drives it here, yet every batch runs as the owner
    drive(id);
    assert_eq!(one::<String>("SELECT string_agg(DISTINCT who, ',') FROM tas"), Some("pgm_app_owner".into()));
}

#[pg_test]
fn the_submitters_search_path_is_the_jobs() {
    run("CREATE SCHEMA app");
    run("CREATE FUNCTION app.tag(i int) RETURNS text LANGUAGE sql AS $$ SELECT 'app-' || i $$");
    run("CREATE TABLE tsp (id int PRIMARY KEY, tag text)");
    run("INSERT INTO tsp SELECT g FROM generate_series(1, 5) g");
    run("SET LOCAL search_path = app, public");
    let id = submit("SELECT migrate_backfill('tsp', 'tag = tag(id)')");
    run("SET LOCAL search_path = public");
    drive(id);
    assert_eq!(one::<i64>("SELECT count(*) FROM tsp WHERE tag = 'app-' || id"), Some(5));
}

#[pg_test]
fn progress_shows_a_queued_job_and_its_schedule() {
    run("CREATE TABLE tq (id int PRIMARY KEY, n int)");
    run("INSERT INTO tq SELECT g FROM generate_series(1, 10) g");
    run("ANALYZE tq");
    let id = submit("SELECT migrate_backfill('tq', 'n = 1', run_at => now() + interval '1 hour')");
    assert_eq!(
        one::<String>(&format!(
            "SELECT format('%s|%s|%s|%s', state, (wait_reason LIKE 'scheduled for %')::text, rows_done, batch_size)
               FROM migrate_progress WHERE job_id = {id}"
        )),
        Some("queued|true|0|5000".into())
    );
}

#[pg_test]
fn a_batch_never_scans_the_whole_table() {
    // Statistics that make the where clause look selective (the column is
    // already filled) tempt the planner into a sequential scan of the whole
    // table for every batch; the batch must find its rows by ctid instead.
    run("CREATE TABLE tplan (id bigint PRIMARY KEY, amount numeric, cents bigint)");
    run("INSERT INTO tplan SELECT g, g / 100.0, g FROM generate_series(1, 200000) g");
    run("ANALYZE tplan");
    let walk = crate::engine::keyset::Walk::Key {
        columns: vec![crate::engine::keyset::KeyColumn { name: "id".into(), type_name: "bigint".into() }],
    };
    let b = crate::engine::keyset::Backfill {
        schema: "public",
        table: "tplan",
        walk: &walk,
        set_clause: "cents = (amount * 100)::bigint",
        where_clause: Some("cents IS NULL"),
    };
    let plan: Vec<String> = Spi::connect(|c| {
        c.select(
            &format!("EXPLAIN (COSTS OFF) {}", b.batch_sql(true)),
            None,
            &["100000".into(), "200000".into(), 5000i64.into()],
        )
        .unwrap()
        .map(|r| r.get::<String>(1).unwrap().unwrap_or_default())
        .collect()
    });
    let plan = plan.join("\n");
    assert!(plan.contains("Tid Scan on tplan"), "{plan}");
    assert!(!plan.contains("Seq Scan on tplan"), "{plan}");

    // The same for a table walked by block ranges.
    run("CREATE TABLE tplan2 (a int, b int)");
    run("INSERT INTO tplan2 SELECT g, g FROM generate_series(1, 200000) g");
    run("ANALYZE tplan2");
    let b = crate::engine::keyset::Backfill {
        schema: "public",
        table: "tplan2",
        walk: &crate::engine::keyset::Walk::Ctid,
        set_clause: "b = a",
        where_clause: Some("b IS NULL"),
    };
    let plan: Vec<String> = Spi::connect(|c| {
        c.select(&format!("EXPLAIN (COSTS OFF) {}", b.batch_sql(true)), None, &[10i64.into(), 20i64.into()])
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap_or_default())
            .collect()
    });
    let plan = plan.join("\n");
    assert!(plan.contains("Tid Range Scan on tplan2"), "{plan}");
    assert!(!plan.contains("Seq Scan on tplan2"), "{plan}");
}
