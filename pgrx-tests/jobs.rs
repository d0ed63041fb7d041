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
    assert!(job_field(id, "spec").unwrap().contains(
        r#""columns": [{"name": "tenant", "has_max": true, "type_name": "pg_catalog.int4"}, {"name": "seq", "has_max": true, "type_name": "pg_catalog.int4"}]"#
    ));
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
        Some("queued|true|0|1000".into())
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
        columns: vec![crate::engine::keyset::KeyColumn { name: "id".into(), type_name: "bigint".into(), has_max: true }],
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
            &format!("EXPLAIN (COSTS OFF) {}", b.batch(true).update),
            None,
            &["100000".into(), "105000".into()],
        )
        .unwrap()
        .map(|r| r.get::<String>(1).unwrap().unwrap_or_default())
        .collect()
    });
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan using tplan_pkey on tplan") || plan.contains("Bitmap Index Scan on tplan_pkey"), "{plan}");
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
        c.select(&format!("EXPLAIN (COSTS OFF) {}", b.batch(true).update), None, &[10i64.into(), 20i64.into()])
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap_or_default())
            .collect()
    });
    let plan = plan.join("\n");
    assert!(plan.contains("Tid Range Scan on tplan2"), "{plan}");
    assert!(!plan.contains("Seq Scan on tplan2"), "{plan}");
}

#[pg_test]
fn adaptive_batches_grow_at_most_fourfold_and_a_fixed_size_stays() {
    run("CREATE TABLE ta (id int PRIMARY KEY, n int NOT NULL DEFAULT 0)");
    run("INSERT INTO ta (id) SELECT g FROM generate_series(1, 60000) g");
    let id = submit("SELECT migrate_backfill('ta', 'n = n + 1', target_batch_ms => 1000)");
    drive(id);
    assert_eq!(one::<i64>("SELECT count(*) FROM ta WHERE n <> 1"), Some(0));
    let sizes: Vec<i64> = Spi::connect(|c| {
        c.select(&format!("SELECT batch_size::bigint FROM migrate_batches WHERE job_id = {id} ORDER BY batch_no"), None, &[])
            .unwrap()
            .map(|r| r.get::<i64>(1).unwrap().unwrap())
            .collect()
    });
    assert_eq!(sizes[0], 1000, "the first batch of an adaptive job");
    assert!(sizes.len() >= 3, "{sizes:?}");
    for w in sizes.windows(2) {
        assert!(w[1] as f64 <= (w[0] as f64 * 4.0).ceil(), "grew too fast: {sizes:?}");
        assert!(w[1] >= w[0] / 2, "shrank too fast: {sizes:?}");
    }
    assert!(sizes.iter().skip(1).any(|s| *s > 1000), "it grew: {sizes:?}");

    let fixed = submit("SELECT migrate_backfill('ta', 'n = n + 1', batch_size => 7000)");
    drive(fixed);
    assert_eq!(
        one::<String>(&format!(
            "SELECT string_agg(DISTINCT batch_size::text, ',') FROM migrate_batches WHERE job_id = {fixed} AND rows_covered = 7000"
        )),
        Some("7000".into())
    );
    assert_eq!(one::<i64>("SELECT count(*) FROM ta WHERE n <> 2"), Some(0));
}

#[pg_test]
fn skip_records_failing_rows_and_goes_on() {
    run("CREATE TABLE tskip (id int PRIMARY KEY, d int NOT NULL, r int)");
    run("INSERT INTO tskip (id, d) SELECT g, CASE WHEN g IN (5, 2500, 2501) THEN 0 ELSE 1 END FROM generate_series(1, 4000) g");
    let id = submit("SELECT migrate_backfill('tskip', 'r = 10 / d', batch_size => 1000, on_error => 'skip')");
    assert_eq!(drive(id), crate::engine::jobs::JobState::Succeeded);
    assert_eq!(one::<i64>("SELECT count(*) FROM tskip WHERE r = 10"), Some(3997));
    assert_eq!(one::<i64>("SELECT count(*) FROM tskip WHERE r IS NULL"), Some(3));
    assert_eq!(
        one::<String>(&format!("SELECT string_agg(key::text || ':' || sqlstate, ' ' ORDER BY key[1]::int) FROM migrate_skipped WHERE job_id = {id}")),
        Some("{5}:22012 {2500}:22012 {2501}:22012".into())
    );
    assert_eq!(
        one::<String>(&format!("SELECT format('%s|%s|%s', rows_done, rows_updated, skipped) FROM migrate_progress WHERE job_id = {id}")),
        Some("4000|3997|3".into())
    );
}

#[pg_test]
fn batch_history_is_bounded() {
    run("SET pg_migrate.batch_history = 3");
    run("CREATE TABLE th (id int PRIMARY KEY, n int)");
    run("INSERT INTO th SELECT g FROM generate_series(1, 1000) g");
    let id = submit("SELECT migrate_backfill('th', 'n = 1', batch_size => 100)");
    drive(id);
    assert_eq!(
        one::<String>(&format!("SELECT string_agg(batch_no::text, ',' ORDER BY batch_no) FROM migrate_batches WHERE job_id = {id}")),
        Some("8,9,10".into())
    );
    assert_eq!(
        one::<String>(&format!("SELECT format('%s..%s', after_key, last_key) FROM migrate_batches WHERE job_id = {id} AND batch_no = 10")),
        Some("{900}..{1000}".into())
    );
}

#[pg_test]
fn windows_are_read_on_the_submitters_clock() {
    use crate::engine::pace::{PaceOptions, WindowSpec};
    let resolved = |cron: &str, secs: i64| {
        crate::runner::pace::resolve(&PaceOptions {
            window: Some(WindowSpec { cron: cron.into(), length_secs: secs }),
            ..Default::default()
        })
    };
    // always open: every minute, for an hour
    assert!(crate::runner::pace::window_closed(&resolved("* * * * *", 3600), "UTC").is_none());
    // 29 February at 03:00, for an hour: closed now, opens in a leap year
    let (why, until) = crate::runner::pace::window_closed(&resolved("0 3 29 2 *", 3600), "Asia/Tokyo").unwrap();
    assert!(why.starts_with("outside its maintenance window (0 3 29 2 * for 1 h); it opens at "), "{why}");
    assert!(why.ends_with("-02-29 03:00 Asia/Tokyo"), "{why}");
    run("SET LOCAL TimeZone = 'UTC'");
    let shown: String = Spi::get_one_with_args("SELECT $1::text", &[until.into()]).unwrap().unwrap();
    assert!(shown.ends_with("-02-28 18:00:00+00"), "03:00 in Tokyo is 18:00 UTC the day before: {shown}");
}

#[pg_test]
fn estimate_extrapolates_a_sample() {
    run("CREATE TABLE test_est (id bigint PRIMARY KEY, amount numeric NOT NULL, cents bigint)");
    run("INSERT INTO test_est (id, amount, cents) SELECT g, g / 100.0, CASE WHEN g % 4 = 0 THEN NULL ELSE g END FROM generate_series(1, 200000) g");
    run("ANALYZE test_est");
    let row = one::<String>(
        "SELECT format('%s|%s|%s', rows_total, rows_to_update BETWEEN 40000 AND 60000, estimated_wal_bytes > 0)
           FROM migrate_estimate('test_est', 'cents = (amount * 100)::bigint', 'cents IS NULL', sample_rows => 5000)",
    );
    assert_eq!(row, Some("200000|t|t".into()));
    // the sample was rolled back
    assert_eq!(one::<i64>("SELECT count(*) FROM test_est WHERE cents IS NULL"), Some(50000));
    assert_eq!(sqlstate_of("SELECT * FROM migrate_estimate('test_est', 'cents = 1', sample_rows => 0)").as_deref(), Some("22023"));
    assert_eq!(sqlstate_of("SELECT * FROM migrate_estimate('test_est', 'id = 1')").as_deref(), Some("22023"));
    assert_eq!(sqlstate_of("SELECT * FROM migrate_estimate('test_est', 'cents = 100 / (id - id)')").as_deref(), Some("22012"));
}

#[pg_test]
fn pacing_options_are_checked() {
    run("CREATE TABLE topt (id int PRIMARY KEY, n int)");
    run("CREATE TABLE topt_nokey (a int, b int)");
    for (sql, code) in [
        ("SELECT migrate_backfill('topt', 'n = 1', window_start => '0 1 * * *')", "22004"),
        ("SELECT migrate_backfill('topt', 'n = 1', window_length => '1 hour')", "22004"),
        ("SELECT migrate_backfill('topt', 'n = 1', window_start => '0 25 * * *', window_length => '1 hour')", "22023"),
        ("SELECT migrate_backfill('topt', 'n = 1', window_start => '0 1 * * *', window_length => '30 s')", "22023"),
        ("SELECT migrate_backfill('topt', 'n = 1', on_error => 'ignore')", "22023"),
        ("SELECT migrate_backfill('topt', 'n = 1', on_error => NULL)", "22023"),
        ("SELECT migrate_backfill('topt', 'n = 1', target_batch_ms => 5)", "22023"),
        ("SELECT migrate_backfill('topt', 'n = 1', max_batch_size => 0)", "22023"),
        ("SELECT migrate_backfill('topt', 'n = 1', max_slot_wal => 'lots')", "22023"),
        ("SELECT migrate_backfill('topt', 'n = 1', max_replay_lag => '-1 s')", "22023"),
        ("SELECT migrate_backfill('topt_nokey', 'b = 1', 'b IS NULL', on_error => 'skip')", "0A000"),
    ] {
        assert_eq!(sqlstate_of(sql).as_deref(), Some(code), "{sql}");
    }
    let id = submit(
        "SELECT migrate_backfill('topt', 'n = 1', max_slot_wal => '2GB', max_wal_per_second => '10 MB',
                                 max_replay_lag => '1.5 s', max_rows_per_second => 5000, pause_during_vacuum => true,
                                 window_start => '0 1 * * *', window_length => '4 hours', target_batch_ms => 500)",
    );
    let spec = job_field(id, "(spec->'pace')").unwrap();
    for part in [
        r#""max_slot_wal_bytes": 2147483648"#,
        r#""max_wal_bytes_per_second": 10485760"#,
        r#""max_replay_lag_ms": 1500"#,
        r#""max_rows_per_second": 5000"#,
        r#""pause_during_vacuum": true"#,
        r#""window": {"cron": "0 1 * * *", "length_secs": 14400}"#,
        r#""target_batch_ms": 500"#,
    ] {
        assert!(spec.contains(part), "{part} in {spec}");
    }
}

#[pg_test]
fn a_new_kind_is_one_module_and_one_registration() {
    // kinds/example.rs and its line in kinds! are all the example kind has:
    // the install script copied its facts, the drivers run it, the views
    // describe it.
    assert_eq!(
        one::<String>("SELECT format('%s|%s|%s|%s', noun, session, table_lock, counts_rows) FROM pgmigrate.kinds WHERE kind = 'example'"),
        Some("example job|t|AccessShareLock|t".into())
    );
    run("CREATE TABLE t_example (id int)");
    let relid = one::<pg_sys::Oid>("SELECT 't_example'::regclass::oid").unwrap();
    let id = crate::kinds::example::queue(relid, 25, 10);
    assert_eq!(
        one::<String>(&format!("SELECT format('%s|%s', what, lock_mode) FROM migrate_lock_risk WHERE id = {id}")),
        Some("example|AccessShareLock".into()),
        "the lock-risk view takes the lock from the kind's facts"
    );
    assert_eq!(drive(id), crate::engine::jobs::JobState::Succeeded);
    assert_eq!(
        one::<String>(&format!(
            "SELECT format('%s|%s|%s|%s|%s', kind, state, rows_done, percent, index_name IS NULL) FROM migrate_progress WHERE job_id = {id}"
        )),
        Some("example|succeeded|25|100.0|t".into())
    );
    assert_eq!(job_field(id, "batches"), Some("3".into()), "10 + 10 + 5");
    // A kind the build does not know (a row from a newer version) fails
    // the step with its reason; it is not taken for another kind.
    run("INSERT INTO pgmigrate.kinds VALUES ('from_the_future', 'job', true, 'AccessShareLock', false, NULL, true, false, 'x')");
    let future = crate::kinds::example::queue(relid, 5, 1);
    run(&format!("UPDATE pgmigrate.jobs SET kind = 'from_the_future' WHERE job_id = {future}"));
    assert_eq!(drive(future), crate::engine::jobs::JobState::Failed);
    assert!(job_field(future, "error").unwrap().contains("does not know"));
}

#[pg_test]
fn every_kind_has_its_own_name_and_its_facts_are_installed() {
    use crate::kinds::Kind;
    let all = Kind::all();
    assert!(all.len() >= 4);
    let mut names: Vec<&str> = all.iter().map(|k| k.name()).collect();
    for k in &all {
        assert_eq!(Kind::from_name(k.name()), Some(*k));
        assert!(!k.imp().facts().noun.is_empty());
        assert!(!k.imp().facts().orphaned.is_empty());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), all.len(), "two kinds share a name");
    assert_eq!(Kind::from_name("no such kind"), None);
    // The install script copied every kind, and nothing else.
    assert_eq!(
        one::<String>("SELECT string_agg(kind, ',' ORDER BY kind) FROM pgmigrate.kinds"),
        Some(names.join(","))
    );
}

#[pg_test]
fn set_not_null_refuses_what_it_cannot_do_with_its_sqlstate() {
    run("CREATE TABLE nn (id int PRIMARY KEY, v int)");
    run("CREATE VIEW nnv AS SELECT * FROM nn");
    run("CREATE TABLE nnp (id int, v int) PARTITION BY RANGE (id)");
    run("CREATE TEMP TABLE nnt (id int PRIMARY KEY, v int)");
    run("CREATE ROLE nn_other");
    for (sql, code) in [
        ("SELECT migrate_set_not_null(NULL, 'v')", "22004"),
        ("SELECT migrate_set_not_null('nn', NULL)", "22004"),
        ("SELECT migrate_set_not_null('nosuch', 'v')", "42P01"),
        ("SELECT migrate_set_not_null('nn', 'nosuch')", "42703"),
        ("SELECT migrate_set_not_null('nn', 'ctid')", "42703"),
        ("SELECT migrate_set_not_null('nnv', 'v')", "42809"),
        ("SELECT migrate_set_not_null('nnp', 'v')", "0A000"),
        ("SELECT migrate_set_not_null('nnt', 'v')", "0A000"),
        ("SELECT migrate_set_not_null('pg_class', 'relname')", "0A000"),
        ("SELECT migrate_set_not_null('nn', 'v', lock_timeout => '0')", "22023"),
        ("SELECT migrate_set_not_null('nn', 'v', max_retries => -1)", "22023"),
    ] {
        assert_eq!(sqlstate_of(sql).as_deref(), Some(code), "{sql}");
    }
    // Only the table's owner (or a member of its role) may change it.
    run("GRANT SELECT, UPDATE ON nn TO nn_other");
    run("SET LOCAL ROLE nn_other");
    assert_eq!(sqlstate_of("SELECT migrate_set_not_null('nn', 'v')").as_deref(), Some("42501"));
    run("RESET ROLE");
    assert_eq!(one::<i64>("SELECT count(*) FROM pgmigrate.jobs WHERE kind = 'set_not_null'"), Some(0), "nothing queued");
}

#[pg_test]
fn set_not_null_runs_in_four_recorded_steps_and_names_a_null_row() {
    run("CREATE TABLE nn2 (id int PRIMARY KEY, \"left\" int)");
    run("INSERT INTO nn2 SELECT g, g FROM generate_series(1, 1000) g");
    run("UPDATE nn2 SET \"left\" = NULL WHERE id = 700");
    let id = submit("SELECT migrate_set_not_null('nn2', 'left')");
    assert_eq!(drive(id), crate::engine::jobs::JobState::Failed);
    let error = one::<String>(&format!("SELECT format('%s|%s|%s', error_sqlstate, error, error_detail) FROM pgmigrate.jobs WHERE job_id = {id}"));
    assert_eq!(
        error,
        Some("23514|column \"left\" of public.nn2 has NULL values|Failing row: (id)=(700).".into())
    );
    // The failed job leaves the table as it found it: no helper check (it
    // would refuse updates of the rows still NULL), and a retry starts over.
    assert_eq!(job_field(id, "cursor"), Some("{0}".into()));
    assert_eq!(one::<i64>("SELECT count(*) FROM pg_constraint WHERE conrelid = 'nn2'::regclass AND contype = 'c'"), Some(0));
    assert_eq!(sqlstate_of("UPDATE nn2 SET id = id WHERE id = 700"), None);
    assert!(one::<String>(&format!("SELECT error_detail FROM pgmigrate.jobs WHERE job_id = {id}")).is_some());
    // Fixed and retried, the job runs its steps again.
    run("UPDATE nn2 SET \"left\" = 0 WHERE id = 700");
    run(&format!("SELECT migrate_retry({id})"));
    assert_eq!(drive(id), crate::engine::jobs::JobState::Succeeded);
    assert_eq!(one::<bool>("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'nn2'::regclass AND attname = 'left'"), Some(true));
    assert_eq!(one::<i64>("SELECT count(*) FROM pg_constraint WHERE conrelid = 'nn2'::regclass AND contype = 'c'"), Some(0), "the helper check is gone");
    assert_eq!(
        one::<String>(&format!("SELECT format('%s|%s|%s', kind, state, rows_done IS NULL) FROM migrate_progress WHERE job_id = {id}")),
        Some("set_not_null|succeeded|t".into())
    );
    // The job's plan, as it shows: four statements, identifiers quoted.
    assert_eq!(
        job_field(id, "command"),
        Some(
            "ALTER TABLE public.nn2 ADD CONSTRAINT nn2_left_not_null CHECK (\"left\" IS NOT NULL) NOT VALID;\n\
             ALTER TABLE public.nn2 VALIDATE CONSTRAINT nn2_left_not_null;\n\
             ALTER TABLE public.nn2 ALTER COLUMN \"left\" SET NOT NULL;\n\
             ALTER TABLE public.nn2 DROP CONSTRAINT IF EXISTS nn2_left_not_null;"
                .into()
        )
    );
    // A column NOT NULL already: nothing to do.
    let again = submit("SELECT migrate_set_not_null('nn2', 'left')");
    assert_eq!(drive(again), crate::engine::jobs::JobState::Succeeded);
}

#[pg_test]
fn add_constraint_refuses_what_it_cannot_do_with_its_sqlstate() {
    run("CREATE TABLE ac (id int PRIMARY KEY, v int, w int)");
    run("CREATE TABLE acr (id int PRIMARY KEY)");
    run("CREATE VIEW acv AS SELECT * FROM ac");
    run("CREATE TABLE acp (id int, v int) PARTITION BY RANGE (id)");
    run("CREATE ROLE ac_other");
    for (sql, code) in [
        ("SELECT migrate_add_constraint(NULL, 'CHECK (v > 0)')", "22004"),
        ("SELECT migrate_add_constraint('ac', NULL)", "22004"),
        ("SELECT migrate_add_constraint('ac', '  ')", "22023"),
        ("SELECT migrate_add_constraint('ac', 'CHECK (nosuch > 0)')", "42703"),
        ("SELECT migrate_add_constraint('ac', 'CHECK (v > ''x'')')", "22P02"),
        ("SELECT migrate_add_constraint('ac', 'FOREIGN KEY (v) REFERENCES nosuch (id)')", "42P01"),
        ("SELECT migrate_add_constraint('ac', 'FOREIGN KEY (v) REFERENCES acr (id) ON DELETE RESTRICT, ADD CHECK (true)')", "42601"),
        ("SELECT migrate_add_constraint('ac', 'CHECK (true); SELECT 1')", "42601"),
        ("SELECT migrate_add_constraint('ac', 'CHECK (true) /* hides what follows')", "42601"),
        ("SELECT migrate_add_constraint('ac', 'x int')", "42601"),
        ("SELECT migrate_add_constraint('ac', 'EXCLUDE USING btree (v WITH =)')", "0A000"),
        ("SELECT migrate_add_constraint('ac', 'UNIQUE (v) USING INDEX TABLESPACE pg_default')", "0A000"),
        ("SELECT migrate_add_constraint('ac', 'PRIMARY KEY (v)')", "42P16"),
        ("SELECT migrate_add_constraint('ac', 'UNIQUE (nosuch)')", "42703"),
        ("SELECT migrate_add_constraint('ac', 'CONSTRAINT ac_pkey CHECK (true)')", "42710"),
        ("SELECT migrate_add_constraint('ac', 'UNIQUE USING INDEX nosuch')", "42704"),
        ("SELECT migrate_add_constraint('acv', 'CHECK (v > 0)')", "42809"),
        ("SELECT migrate_add_constraint('acp', 'CHECK (v > 0)')", "0A000"),
        ("SELECT migrate_add_constraint('ac', 'CHECK (v > 0)', lock_timeout => '0')", "22023"),
        ("SELECT migrate_add_constraint('ac', 'CHECK (v > 0)', after_jobs => ARRAY[-5::bigint])", "42704"),
        ("SELECT migrate_add_constraint('ac', 'CHECK (v > 0)', after_migration => ARRAY['a', 'b', 'c'])", "22023"),
    ] {
        assert_eq!(sqlstate_of(sql).as_deref(), Some(code), "{sql}");
    }
    run("GRANT SELECT, UPDATE, REFERENCES ON ac TO ac_other");
    run("GRANT CREATE ON SCHEMA public TO ac_other");
    run("SET LOCAL ROLE ac_other");
    assert_eq!(sqlstate_of("SELECT migrate_add_constraint('ac', 'CHECK (v > 0)')").as_deref(), Some("42501"));
    // On its own table, a foreign key needs REFERENCES on the other table,
    // as PostgreSQL checks it for the caller.
    run("CREATE TABLE ac_mine (id int PRIMARY KEY, r int)");
    assert_eq!(
        sqlstate_of("SELECT migrate_add_constraint('ac_mine', 'FOREIGN KEY (r) REFERENCES acr (id)')").as_deref(),
        Some("42501")
    );
    run("RESET ROLE");
    run("DROP TABLE ac_mine");
    // Nothing was queued, and the dry runs left no constraint behind.
    assert_eq!(one::<i64>("SELECT count(*) FROM pgmigrate.jobs"), Some(0));
    assert_eq!(one::<i64>("SELECT count(*) FROM pg_constraint WHERE conrelid = 'ac'::regclass"), Some(1));
}

#[pg_test]
fn a_foreign_key_is_added_not_valid_then_validated_and_a_broken_row_fails_it() {
    run("CREATE TABLE acp2 (id int PRIMARY KEY)");
    run("INSERT INTO acp2 SELECT generate_series(1, 100)");
    run("CREATE TABLE acc2 (id int PRIMARY KEY, p int)");
    run("INSERT INTO acc2 SELECT g, 1 + g % 100 FROM generate_series(1, 1000) g");
    run("INSERT INTO acc2 VALUES (5000, 777)");
    let id = submit("SELECT migrate_add_constraint('acc2', 'FOREIGN KEY (p) REFERENCES acp2 (id)')");
    assert_eq!(
        job_field(id, "command"),
        Some(
            "ALTER TABLE public.acc2 ADD CONSTRAINT acc2_p_fkey FOREIGN KEY (p) REFERENCES public.acp2(id) NOT VALID;\n\
             ALTER TABLE public.acc2 VALIDATE CONSTRAINT acc2_p_fkey;"
                .into()
        )
    );
    assert_eq!(drive(id), crate::engine::jobs::JobState::Failed);
    assert_eq!(
        one::<String>(&format!("SELECT format('%s|%s', error_sqlstate, error_detail) FROM pgmigrate.jobs WHERE job_id = {id}")),
        Some("23503|Key (p)=(777) is not present in table \"acp2\".".into())
    );
    assert_eq!(one::<i64>("SELECT count(*) FROM pg_constraint WHERE conrelid = 'acc2'::regclass AND contype = 'f'"), Some(0));
    assert_eq!(job_field(id, "cursor"), Some("{0}".into()));
    run("DELETE FROM acc2 WHERE id = 5000");
    run(&format!("SELECT migrate_retry({id})"));
    assert_eq!(drive(id), crate::engine::jobs::JobState::Succeeded);
    assert_eq!(
        one::<bool>("SELECT convalidated FROM pg_constraint WHERE conrelid = 'acc2'::regclass AND conname = 'acc2_p_fkey'"),
        Some(true)
    );
}

#[pg_test]
fn a_check_already_added_not_valid_is_only_validated() {
    run("CREATE TABLE acc3 (id int PRIMARY KEY, p int)");
    run("INSERT INTO acc3 SELECT g, g FROM generate_series(1, 100) g");
    let id = submit("SELECT migrate_add_constraint('acc3', 'CONSTRAINT acc3_p_pos CHECK (p > 0)')");
    // As after a crash between the two steps: the constraint is there, NOT
    // VALID, and the cursor still says step one.
    run("ALTER TABLE acc3 ADD CONSTRAINT acc3_p_pos CHECK (p > 0) NOT VALID");
    // Step one again would fail (42710: the constraint exists): it is
    // skipped, and the validation runs.
    assert_eq!(drive(id), crate::engine::jobs::JobState::Succeeded);
    assert_eq!(one::<bool>("SELECT convalidated FROM pg_constraint WHERE conname = 'acc3_p_pos'"), Some(true));
}

#[pg_test]
fn gates_hold_a_job_until_the_job_and_the_migration_it_waits_for() {
    run("CREATE TABLE g1 (id int PRIMARY KEY, v int)");
    run("INSERT INTO g1 SELECT g, NULL FROM generate_series(1, 100) g");
    let fill = submit("SELECT migrate_backfill('g1', 'v = id')");
    let nn = submit(&format!(
        "SELECT migrate_set_not_null('g1', 'v', after_jobs => ARRAY[{fill}::bigint], after_migration => ARRAY['app', '0002'])"
    ));
    let reason = |id: i64| one::<String>(&format!("SELECT wait_reason FROM migrate_progress WHERE job_id = {id}"));
    assert_eq!(reason(nn), Some(format!("waits for job {fill} (backfill queued) to succeed")));
    // A job it waits for that fails says so, with the ways out.
    run(&format!("SELECT migrate_cancel({fill})"));
    assert_eq!(
        reason(nn),
        Some(format!(
            "waits for job {fill}, which was cancelled: migrate_retry({fill}) runs it again, or migrate_cancel({nn}) gives up this one"
        ))
    );
    run(&format!("SELECT migrate_retry({fill})"));
    assert_eq!(drive(fill), crate::engine::jobs::JobState::Succeeded);
    assert_eq!(reason(nn), Some("waits for migration app.0002 to be applied (now: not recorded)".into()));
    run("SELECT migrate_start('app', '0002') AS run");
    assert_eq!(reason(nn), Some("waits for migration app.0002 to be applied (now: running)".into()));
    run("SELECT migrate_finish(run_id) FROM migrate_history WHERE app = 'app' AND name = '0002'");
    // (migrate_progress would say "scheduled for" here: in this test's one
    // transaction now() is earlier than the job's run_at.)
    assert_eq!(one::<String>(&format!("SELECT pgmigrate.gate_closed({nn})")), None);
    assert_eq!(one::<i64>("SELECT count(*) FROM pgmigrate.jobs j WHERE pgmigrate.gate_closed(j.job_id) IS NOT NULL"), Some(0));
    assert_eq!(drive(nn), crate::engine::jobs::JobState::Succeeded);
    // Any role may read why a job waits (the function is public, and reads
    // only what the public views show).
    run("CREATE ROLE g_other");
    run("SET LOCAL ROLE g_other");
    assert_eq!(one::<i64>(&format!("SELECT count(*) FROM migrate_progress WHERE job_id = {nn}")), Some(1));
    assert_eq!(sqlstate_of("SELECT * FROM pgmigrate.gates"), Some("42501".into()));
    run("RESET ROLE");
}

#[pg_test]
fn a_type_change_rolled_back_before_it_ran_closes_its_history_entry() {
    run("CREATE TABLE rb (id bigint PRIMARY KEY, score int)");
    let id = submit("SELECT migrate_alter_type('rb', 'score', 'bigint', migration => ARRAY['app', '0007_score.altertype1'])");
    assert_eq!(
        one::<String>("SELECT status FROM migrate_history WHERE app = 'app' AND name = '0007_score.altertype1'"),
        Some("running".into())
    );
    run(&format!("SELECT migrate_rollback({id})"));
    assert_eq!(job_field(id, "state"), Some("cancelled".into()));
    assert_eq!(
        one::<String>(&format!(
            "SELECT status || ': ' || (error LIKE 'job {id} was rolled back by %')::text \
               FROM migrate_history WHERE app = 'app' AND name = '0007_score.altertype1'"
        )),
        Some("failed: true".into())
    );
    // So the migration that queued it can be reversed in the history too.
    run("SELECT migrate_unapply('app', '0007_score.altertype1')");
}
