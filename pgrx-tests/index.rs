// In-process tests of index jobs at submit: what is checked, refused and
// queued (the worker that runs them is tested against a real server in
// tests/index.rs).

fn index_job_field(id: i64, expr: &str) -> Option<String> {
    Spi::get_one::<String>(&format!("SELECT ({expr})::text FROM pgmigrate.jobs WHERE job_id = {id}")).unwrap()
}

fn create_index_sqlstate(sql: &str) -> Option<String> {
    sqlstate_of(&format!("SELECT migrate_create_index({})", literal(sql)))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn ix_table() {
    run("CREATE TABLE ix (id bigint PRIMARY KEY, email text NOT NULL, n int, tags text[], created timestamptz)");
}

#[pg_test]
fn a_create_index_is_queued_concurrently_and_named() {
    ix_table();
    let id = submit("SELECT migrate_create_index('create index ix_n on ix (n) where n > 0')");
    assert_eq!(index_job_field(id, "kind"), Some("create_index".into()));
    assert_eq!(index_job_field(id, "relation"), Some("public.ix".into()));
    assert_eq!(
        index_job_field(id, "command"),
        Some("CREATE INDEX CONCURRENTLY \"ix_n\" ON ix (n) where n > 0".into())
    );
    assert_eq!(index_job_field(id, "spec->>'name'"), Some("ix_n".into()));
    assert_eq!(index_job_field(id, "state"), Some("queued".into()));
    assert_eq!(index_job_field(id, "batch_size"), None);
    // Already CONCURRENTLY, UNIQUE, IF NOT EXISTS, comments and a
    // semicolon: kept as written, in the same order.
    let id = submit(
        "SELECT migrate_create_index($$ /* hi */ CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_email ON ONLY public.ix USING btree (lower(email)) INCLUDE (n) WITH (fillfactor = 80);$$)",
    );
    assert_eq!(
        index_job_field(id, "command"),
        Some("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS \"ix_email\" ON ONLY public.ix USING btree (lower(email)) INCLUDE (n) WITH (fillfactor = 80)".into())
    );
    assert_eq!(index_job_field(id, "spec->>'if_not_exists'"), Some("true".into()));
}

#[pg_test]
fn a_missing_name_is_the_one_postgres_would_choose() {
    ix_table();
    run("CREATE INDEX ix_n_idx ON ix (id)"); // taken: the next one gets a number
    for sql in [
        "CREATE INDEX ON ix (n)",
        "CREATE INDEX ON ix (email, n)",
        "CREATE INDEX ON ix (lower(email))",
        "CREATE INDEX ON ix ((n + 1), (n * 2))",
        "CREATE INDEX ON ix (n) INCLUDE (email)",
        "CREATE UNIQUE INDEX ON ix (email)",
        "CREATE INDEX ON ix USING gin (tags)",
        "CREATE INDEX ON ix (n, n)",
    ] {
        // What PostgreSQL names it, in a subtransaction rolled back.
        let postgres_name = crate::sys::subtransaction(false, || {
            run(sql);
            one::<String>(
                "SELECT c.relname::text FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid
                  WHERE i.indrelid = 'ix'::regclass ORDER BY c.oid DESC LIMIT 1",
            )
        })
        .unwrap();
        let id = submit(&format!("SELECT migrate_create_index({})", literal(sql)));
        assert_eq!(index_job_field(id, "spec->>'name'"), postgres_name, "{sql}");
    }
}

#[pg_test]
fn bad_create_index_statements_are_refused_before_anything_is_queued() {
    ix_table();
    run("CREATE TABLE ix_parted (id int, at date) PARTITION BY RANGE (at)");
    run("CREATE TEMP TABLE ix_temp (id int)");
    run("CREATE VIEW ix_view AS SELECT * FROM ix");
    run("CREATE INDEX ix_taken ON ix (n)");
    for (sql, code) in [
        ("SELECT 1", "22023"),
        ("CREATE INDEX a ON ix (n); CREATE INDEX b ON ix (id)", "22023"),
        ("DROP TABLE ix", "22023"),
        ("CREATE INDEX ON ix (n", "42601"),
        ("CREATE INDEX ON nowhere (n)", "42P01"),
        ("CREATE INDEX ON ix (nope)", "42703"),
        ("CREATE INDEX ON ix (lower(nope))", "42703"),
        ("CREATE INDEX ON ix (n) INCLUDE (nope)", "42703"),
        ("CREATE INDEX ON ix (n) WHERE nope > 1", "42703"),
        ("CREATE INDEX ON ix ((n + random()))", "42P17"),
        ("CREATE INDEX ON ix (n) WHERE created < now()", "42P17"),
        ("CREATE INDEX ON ix USING nosuch (n)", "42704"),
        ("CREATE UNIQUE INDEX ON ix USING hash (n)", "0A000"),
        ("CREATE INDEX ON ix (n nosuch_ops)", "42704"),
        ("CREATE INDEX ON ix (email COLLATE \"nosuch\")", "42704"),
        ("CREATE INDEX ON ix (n) TABLESPACE nosuch", "42704"),
        ("CREATE INDEX ix_taken ON ix (id)", "42P07"),
        ("CREATE INDEX ON ONLY ix_parted (id)", "0A000"),
        ("CREATE INDEX ON ix_temp (id)", "0A000"),
        ("CREATE INDEX ON ix_view (id)", "0A000"),
        ("CREATE INDEX ON pg_class (relname)", "0A000"),
        ("CREATE INDEX ON ix (xmin)", "0A000"),
        ("", "22023"),
    ] {
        assert_eq!(create_index_sqlstate(sql).as_deref(), Some(code), "{sql}");
    }
    assert_eq!(one::<i64>("SELECT count(*) FROM pgmigrate.jobs"), Some(0));
    // IF NOT EXISTS with a taken name is queued: the worker does nothing.
    assert_eq!(create_index_sqlstate("CREATE INDEX IF NOT EXISTS ix_taken ON ix (id)"), None);
}

#[pg_test]
fn only_the_tables_owner_may_queue_an_index_job() {
    ix_table();
    run("CREATE INDEX ix_n ON ix (n)");
    run("CREATE ROLE pgm_ix_stranger");
    run("GRANT SELECT, INSERT, UPDATE ON ix TO pgm_ix_stranger");
    run("SET ROLE pgm_ix_stranger");
    assert_eq!(create_index_sqlstate("CREATE INDEX ON ix (email)").as_deref(), Some("42501"));
    assert_eq!(sqlstate_of("SELECT migrate_drop_index('ix_n')").as_deref(), Some("42501"));
    assert_eq!(sqlstate_of("SELECT migrate_reindex('ix_n')").as_deref(), Some("42501"));
    run("RESET ROLE");
    run("CREATE ROLE pgm_ix_owner");
    run("ALTER TABLE ix OWNER TO pgm_ix_owner");
    run("GRANT pgm_ix_owner TO pgm_ix_stranger");
    run("SET ROLE pgm_ix_stranger");
    let id = submit("SELECT migrate_create_index('CREATE INDEX ON ix (email)')");
    run("RESET ROLE");
    assert_eq!(
        index_job_field(id, "owner::regrole"),
        Some("pgm_ix_stranger".into()),
        "a member of the owner's role queues as itself"
    );
}

#[pg_test]
fn drop_and_reindex_check_their_index() {
    ix_table();
    run("CREATE INDEX ix_n ON ix (n)");
    run("ALTER TABLE ix ADD CONSTRAINT ix_email_key UNIQUE (email)");
    run("CREATE EXTENSION IF NOT EXISTS btree_gist");
    run("CREATE TABLE ix_booking (room int, during tstzrange, EXCLUDE USING gist (room WITH =, during WITH &&))");
    assert_eq!(sqlstate_of("SELECT migrate_drop_index('ix')").as_deref(), Some("42809"));
    assert_eq!(sqlstate_of("SELECT migrate_drop_index('ix_email_key')").as_deref(), Some("2BP01"));
    assert_eq!(sqlstate_of("SELECT migrate_drop_index('pg_class_oid_index')").as_deref(), Some("0A000"));
    assert_eq!(sqlstate_of("SELECT migrate_drop_index(NULL)").as_deref(), Some("22004"));
    assert_eq!(
        sqlstate_of("SELECT migrate_reindex('ix_booking_room_during_excl')").as_deref(),
        Some("0A000")
    );
    assert_eq!(sqlstate_of("SELECT migrate_reindex('ix_n', schedule => 'every day')").as_deref(), Some("22023"));
    let id = submit("SELECT migrate_drop_index('ix_n')");
    assert_eq!(index_job_field(id, "kind"), Some("drop_index".into()));
    assert_eq!(index_job_field(id, "index_oid = 'ix_n'::regclass"), Some("true".into()));
    assert_eq!(index_job_field(id, "relid = 'ix'::regclass"), Some("true".into()));
    assert_eq!(index_job_field(id, "command"), Some("DROP INDEX CONCURRENTLY IF EXISTS public.ix_n".into()));
    // A schedule sets the first run at its next match (here 03:00 in the
    // session's time zone) when run_at is not given.
    run("SET TimeZone = 'UTC'");
    let id = submit("SELECT migrate_reindex('ix_email_key', schedule => '0 3 * * *')");
    assert_eq!(index_job_field(id, "command"), Some("REINDEX INDEX CONCURRENTLY public.ix_email_key".into()));
    assert_eq!(
        index_job_field(id, "run_at > now() AND run_at <= now() + interval '1 day' AND to_char(run_at AT TIME ZONE 'UTC', 'HH24:MI') = '03:00'"),
        Some("true".into())
    );
    assert_eq!(index_job_field(id, "spec->>'schedule'"), Some("0 3 * * *".into()));
}

#[pg_test]
fn index_job_options_are_checked() {
    ix_table();
    let base = "migrate_create_index('CREATE INDEX ON ix (n)'";
    for (options, code) in [
        ("retry_delay => '10 ms'", "22023"),
        ("retry_delay => NULL", "22004"),
        ("max_retries => 101", "22023"),
        ("max_retries => -1", "22023"),
        ("max_wait => '-1 s'", "22023"),
        ("maintenance_work_mem => 'lots'", "22023"),
        ("maintenance_work_mem => '10kB'", "22023"),
        ("window_start => '0 1 * * *'", "22004"),
        ("window_start => '0 1 * *', window_length => '1 hour'", "22023"),
        ("migration => ARRAY['only-one']", "22023"),
    ] {
        assert_eq!(sqlstate_of(&format!("SELECT {base}, {options})")).as_deref(), Some(code), "{options}");
    }
    let id = submit(&format!(
        "SELECT {base}, max_wait => '30 s', max_retries => 0, retry_delay => '5 min', maintenance_work_mem => '256MB', window_start => '0 1 * * *', window_length => '4 hours')"
    ));
    assert_eq!(index_job_field(id, "spec->>'max_wait_ms'"), Some("30000".into()));
    assert_eq!(index_job_field(id, "spec->>'retry_delay_ms'"), Some("300000".into()));
    assert_eq!(index_job_field(id, "spec->>'max_retries'"), Some("0".into()));
    assert_eq!(index_job_field(id, "spec->'window'->>'length_secs'"), Some("14400".into()));
    assert_eq!(
        index_job_field(id, "(SELECT s->>1 FROM jsonb_array_elements(spec->'settings') s WHERE s->>0 = 'maintenance_work_mem')"),
        Some("256MB".into())
    );
}

#[pg_test]
fn an_index_job_shows_in_progress_and_is_controlled_like_any_job() {
    ix_table();
    let id = submit("SELECT migrate_create_index('CREATE INDEX ix_n ON ix (n)', run_at => now() + interval '1 day')");
    assert_eq!(
        one::<String>(&format!(
            "SELECT format('%s|%s|%s|%s|%s', kind, state, index_name, rows_done IS NULL AND percent IS NULL, wait_reason LIKE 'scheduled for %') FROM migrate_progress WHERE job_id = {id}"
        )),
        Some("create_index|queued|public.ix_n|t|t".into())
    );
    run(&format!("SELECT migrate_pause({id})"));
    assert_eq!(index_job_field(id, "state"), Some("paused".into()));
    run(&format!("SELECT migrate_resume({id})"));
    run(&format!("SELECT migrate_cancel({id})"));
    assert_eq!(index_job_field(id, "state"), Some("cancelled".into()));
    run(&format!("SELECT migrate_retry({id})"));
    assert_eq!(index_job_field(id, "state"), Some("queued".into()));
    assert_eq!(one::<i64>("SELECT count(*) FROM migrate_index_builds"), Some(0));
}
