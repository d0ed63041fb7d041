// In-process tests of the migration history (included into `mod tests` in
// src/lib.rs).  Each test runs in a transaction that pgrx rolls back.

fn one<T: FromDatum + IntoDatum>(sql: &str) -> Option<T> {
    Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Run `sql` in a subtransaction; its SQLSTATE if it failed, None if not.
fn sqlstate_of(sql: &str) -> Option<String> {
    Spi::get_one_with_args::<String>("SELECT tests.sqlstate_of($1)", &[sql.into()]).unwrap()
}

fn status_of(app: &str, name: &str) -> Option<String> {
    Spi::get_one_with_args::<String>(
        "SELECT status FROM migrate_history WHERE app = $1 AND name = $2",
        &[app.into(), name.into()],
    )
    .unwrap_or(None)
}

#[pg_test]
fn start_then_finish_applies() {
    let id: i64 = one("SELECT migrate_start('shop', '0001_initial', 'c1', 'create tables')").unwrap();
    assert_eq!(status_of("shop", "0001_initial").as_deref(), Some("running"));
    assert_eq!(one::<bool>("SELECT migrate_applied('shop', '0001_initial')"), Some(false));
    run(&format!("SELECT migrate_finish({id})"));
    assert_eq!(status_of("shop", "0001_initial").as_deref(), Some("applied"));
    assert_eq!(one::<bool>("SELECT migrate_applied('shop', '0001_initial')"), Some(true));
    run("SELECT migrate_require('shop', '0001_initial')");
    // the run is one row with its checksum, description and who ran it
    assert_eq!(
        one::<String>(
            "SELECT format('%s|%s|%s|%s', checksum, description, (applied_by = current_user)::text, run_id)
               FROM migrate_history WHERE name = '0001_initial'"
        ),
        Some(format!("c1|create tables|true|{id}"))
    );
    // and two events in the log
    assert_eq!(
        one::<String>("SELECT string_agg(event, ',' ORDER BY event_id) FROM migrate_events"),
        Some("started,applied".into())
    );
}

#[pg_test]
fn start_records_who_and_where() {
    run("SET application_name = 'deploy-42'");
    one::<i64>("SELECT migrate_start('shop', '0002')");
    assert_eq!(
        one::<String>(
            "SELECT format('%s|%s|%s|%s', (role_name = current_user)::text, (session_role = session_user)::text,
                                          (pid = pg_backend_pid())::text, application_name)
               FROM migrate_events"
        ),
        Some("true|true|true|deploy-42".into())
    );
}

#[pg_test(error = "migration shop.0001 is already applied")]
fn start_of_applied_is_refused() {
    one::<i64>("SELECT migrate_record('shop', '0001')");
    one::<i64>("SELECT migrate_start('shop', '0001')");
}

#[pg_test]
fn force_reruns_and_says_so() {
    one::<i64>("SELECT migrate_record('shop', '0001', 'aaa')");
    one::<i64>("SELECT migrate_start('shop', '0001', 'bbb', force => true)");
    assert_eq!(
        one::<String>("SELECT string_agg(format('%s:%s', event, forced::text), ',' ORDER BY event_id) FROM migrate_events"),
        Some("recorded:false,started:true".into())
    );
    assert_eq!(one::<String>("SELECT checksum FROM migrate_history"), Some("bbb".into()));
}

#[pg_test(error = "checksum of migration shop.0001 does not match its earlier run")]
fn checksum_change_after_failure_is_refused() {
    let id: i64 = one("SELECT migrate_start('shop', '0001', 'aaa')").unwrap();
    run(&format!("SELECT migrate_finish({id}, 'failed', 'boom')"));
    one::<i64>("SELECT migrate_start('shop', '0001', 'bbb')");
}

#[pg_test]
fn failed_run_keeps_its_error_and_can_run_again() {
    let id: i64 = one("SELECT migrate_start('shop', '0003', 'aaa')").unwrap();
    run(&format!("SELECT migrate_finish({id}, 'failed', 'deadlock detected')"));
    assert_eq!(
        one::<String>("SELECT format('%s|%s', status, error) FROM migrate_history"),
        Some("failed|deadlock detected".into())
    );
    assert_eq!(one::<bool>("SELECT migrate_applied('shop', '0003')"), Some(false));
    let again: i64 = one("SELECT migrate_start('shop', '0003', 'aaa')").unwrap();
    assert!(again > id);
    run(&format!("SELECT migrate_finish({again})"));
    assert_eq!(
        one::<String>("SELECT format('%s|%s|%s', status, (error IS NULL)::text, run_id) FROM migrate_history"),
        Some(format!("applied|true|{again}"))
    );
}

#[pg_test(error = "migration run 424242 does not exist")]
fn finish_of_unknown_run_is_refused() {
    run("SELECT migrate_finish(424242)");
}

#[pg_test]
#[should_panic(expected = "is already finished")]
fn finish_twice_is_refused() {
    let id: i64 = one("SELECT migrate_start('shop', '0004')").unwrap();
    run(&format!("SELECT migrate_finish({id})"));
    run(&format!("SELECT migrate_finish({id}, 'failed')"));
}

#[pg_test(error = "an error message can only be recorded with status 'failed'")]
fn error_with_applied_is_refused() {
    let id: i64 = one("SELECT migrate_start('shop', '0004')").unwrap();
    run(&format!("SELECT migrate_finish({id}, 'applied', 'oops')"));
}

#[pg_test]
fn record_with_duration_sets_start() {
    one::<i64>("SELECT migrate_record('billing', '0007', 'x', 'add index', duration => '90 seconds')");
    assert_eq!(
        one::<String>("SELECT format('%s|%s|%s', status, duration, finished_at - started_at) FROM migrate_history"),
        Some("applied|00:01:30|00:01:30".into())
    );
}

#[pg_test]
fn unapply_then_require_then_reapply() {
    one::<i64>("SELECT migrate_record('shop', '0005')");
    run("SELECT migrate_unapply('shop', '0005', 'rolled back release 41')");
    assert_eq!(status_of("shop", "0005").as_deref(), Some("unapplied"));
    assert_eq!(one::<bool>("SELECT migrate_applied('shop', '0005')"), Some(false));
    assert_eq!(
        one::<String>("SELECT reason FROM migrate_events WHERE event = 'unapplied'"),
        Some("rolled back release 41".into())
    );
    one::<i64>("SELECT migrate_record('shop', '0005')");
    assert_eq!(status_of("shop", "0005").as_deref(), Some("applied"));
}

#[pg_test(error = "migration shop.0006 is not applied")]
fn require_of_running_migration_fails() {
    one::<i64>("SELECT migrate_start('shop', '0006')");
    run("SELECT migrate_require('shop', '0006')");
}

#[pg_test(error = "argument \"name\" is too long")]
fn overlong_name_is_refused() {
    run(&format!("SELECT migrate_start('shop', '{}')", "n".repeat(256)));
}

#[pg_test]
fn bad_input_writes_nothing() {
    for (sql, code) in [
        ("SELECT migrate_start(NULL, 'x')", "22004"),
        ("SELECT migrate_start('', 'x')", "22023"),
        ("SELECT migrate_start('a', E'x\\ty')", "22023"),
        ("SELECT migrate_record('a', 'b', '')", "22023"),
        ("SELECT migrate_record('a', 'b', duration => '-1 s')", "22023"),
        ("SELECT migrate_start('a', 'b', force => NULL)", "22004"),
        ("SELECT migrate_finish(NULL)", "22004"),
        ("SELECT migrate_finish(1, 'done')", "22023"),
        ("SELECT migrate_finish(1, NULL)", "22004"),
        ("SELECT migrate_finish(99)", "42704"),
        ("SELECT migrate_unapply('a', 'never')", "42704"),
        ("SELECT migrate_applied('a', NULL)", "22004"),
        ("SELECT migrate_require('', 'b')", "22023"),
        ("SELECT migrate_import_django(NULL)", "22004"),
    ] {
        assert_eq!(sqlstate_of(sql).as_deref(), Some(code), "{sql}");
    }
    assert_eq!(one::<i64>("SELECT count(*) FROM migrate_events"), Some(0));
}

#[pg_test]
fn identity_is_restored_after_each_call() {
    run("CREATE ROLE pgm_deployer");
    run("GRANT EXECUTE ON FUNCTION migrate_start, migrate_finish TO pgm_deployer");
    run("SET ROLE pgm_deployer");
    let id: i64 = one("SELECT migrate_start('shop', '0008')").unwrap();
    assert_eq!(one::<String>("SELECT current_user::text"), Some("pgm_deployer".into()));
    run(&format!("SELECT migrate_finish({id})"));
    assert_eq!(one::<String>("SELECT current_user::text"), Some("pgm_deployer".into()));
    run("RESET ROLE");
    assert_eq!(one::<String>("SELECT applied_by::text FROM migrate_history"), Some("pgm_deployer".into()));
}

#[pg_test(error = "permission denied for function migrate_start")]
fn writing_needs_a_grant() {
    run("CREATE ROLE pgm_app");
    run("SET ROLE pgm_app");
    run("SELECT migrate_start('shop', '0009')");
}

#[pg_test]
fn reading_needs_no_grant() {
    one::<i64>("SELECT migrate_record('shop', '0010')");
    run("CREATE ROLE pgm_reader");
    run("SET ROLE pgm_reader");
    assert_eq!(one::<bool>("SELECT migrate_applied('shop', '0010')"), Some(true));
    run("SELECT migrate_require('shop', '0010')");
    assert_eq!(one::<i64>("SELECT count(*) FROM migrate_history"), Some(1));
    assert_eq!(one::<i64>("SELECT applied FROM migrate_status WHERE app = 'shop'"), Some(1));
    assert_eq!(one::<i64>("SELECT count(*) FROM migrate_events"), Some(1));
    // but the tables behind the views stay closed
    assert_eq!(sqlstate_of("SELECT * FROM pgmigrate.events").as_deref(), Some("42501"));
}

#[pg_test]
fn a_hostile_search_path_changes_nothing() {
    // An operator in public that makes every text comparison true would make
    // a lookup match the wrong migration if our SQL resolved it.
    run("CREATE FUNCTION public.always(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true'");
    run("CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.always)");
    run("SET search_path = public, pg_catalog");
    one::<i64>("SELECT migrate_record('shop', '0011')");
    assert_eq!(one::<bool>("SELECT migrate_applied('shop', 'something-else')"), Some(false));
    assert_eq!(one::<bool>("SELECT migrate_applied('shop', '0011')"), Some(true));
}

#[pg_test]
fn history_is_append_only() {
    one::<i64>("SELECT migrate_record('shop', '0012')");
    for sql in ["UPDATE pgmigrate.events SET app = 'x'", "DELETE FROM pgmigrate.events", "TRUNCATE pgmigrate.events"] {
        assert_eq!(sqlstate_of(sql).as_deref(), Some("0A000"), "{sql}");
    }
    assert_eq!(one::<i64>("SELECT count(*) FROM pgmigrate.events"), Some(1));
}

#[pg_test]
fn django_import_is_idempotent_and_keeps_what_is_known() {
    run("CREATE TABLE django_migrations (id serial PRIMARY KEY, app varchar(255) NOT NULL,
                                         name varchar(255) NOT NULL, applied timestamptz NOT NULL)");
    run("INSERT INTO django_migrations (app, name, applied) VALUES
            ('auth', '0001_initial', '2024-01-01 10:00+00'),
            ('auth', '0002_alter_permission_name_max_length', '2024-01-01 10:00:01+00'),
            ('shop', '0001_initial', '2024-02-01 09:00+00')");
    // shop.0001_initial is already known to pg_migrate (failed): import keeps that.
    let id: i64 = one("SELECT migrate_start('shop', '0001_initial')").unwrap();
    run(&format!("SELECT migrate_finish({id}, 'failed', 'boom')"));
    assert_eq!(one::<i64>("SELECT migrate_import_django()"), Some(2));
    assert_eq!(one::<i64>("SELECT migrate_import_django()"), Some(0));
    assert_eq!(
        one::<String>("SELECT string_agg(format('%s.%s=%s', app, name, status), ' ' ORDER BY app, name) FROM migrate_history"),
        Some("auth.0001_initial=applied auth.0002_alter_permission_name_max_length=applied shop.0001_initial=failed".into())
    );
    // imported runs keep Django's timestamp
    assert_eq!(
        one::<String>("SELECT (finished_at AT TIME ZONE 'UTC')::text FROM migrate_history WHERE name LIKE '0002%'"),
        Some("2024-01-01 10:00:01".into())
    );
    assert_eq!(
        one::<String>("SELECT details->>'source' FROM migrate_events WHERE event = 'imported' LIMIT 1"),
        Some("public.django_migrations".into())
    );
}

#[pg_test(error = "relation public.not_django has no column \"applied\"")]
fn django_import_checks_the_table_shape() {
    run("CREATE TABLE not_django (app text, name text)");
    run("SELECT migrate_import_django('not_django')");
}

#[pg_test]
fn rust_lookup_matches_the_view() {
    assert!(crate::catalog::as_owner(|| crate::catalog::history::current("shop", "0013")).is_none());
    one::<i64>("SELECT migrate_record('shop', '0013')");
    one::<i64>("SELECT migrate_start('shop', '0013', force => true)");
    let cur = crate::catalog::as_owner(|| crate::catalog::history::current("shop", "0013")).unwrap();
    assert_eq!(cur.seq, 2);
    assert_eq!(cur.status, crate::engine::history::Status::Running);
    assert!(cur.backend_alive, "our own backend runs it");
}
