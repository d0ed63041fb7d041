// In-process tests of the lock-risk analysis: decisions that need the
// catalog (a proven NOT NULL, an in-place type change, names created
// earlier in a script), and the guards of the internal functions (the
// agreement with real locks is tested against a real server in
// tests/locks.rs).

fn analyzed(sql: &str, expr: &str) -> Vec<String> {
    Spi::connect(|c| {
        let mut out = vec![];
        for row in c.select(
            &format!("SELECT ({expr})::text FROM migrate_analyze({}) ORDER BY statement, relation::text", literal(sql)),
            None,
            &[],
        )? {
            out.push(row.get::<String>(1)?.unwrap_or_else(|| "NULL".into()));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap()
}

fn lk_table() {
    run("CREATE TABLE lk (id bigint PRIMARY KEY, a int, b text, v varchar(10), n numeric(8,2))");
}

#[pg_test]
fn a_valid_check_constraint_spares_set_not_null_its_scan() {
    lk_table();
    assert_eq!(analyzed("ALTER TABLE lk ALTER COLUMN a SET NOT NULL", "scans"), vec!["true"]);
    // A NOT VALID one proves nothing; a valid one (even within a larger
    // condition) does, as PostgreSQL's prover sees it.
    run("ALTER TABLE lk ADD CONSTRAINT lk_a_nn CHECK (a IS NOT NULL) NOT VALID");
    assert_eq!(analyzed("ALTER TABLE lk ALTER COLUMN a SET NOT NULL", "scans"), vec!["true"]);
    run("ALTER TABLE lk VALIDATE CONSTRAINT lk_a_nn");
    assert_eq!(analyzed("ALTER TABLE lk ALTER COLUMN a SET NOT NULL", "scans"), vec!["false"]);
    run("ALTER TABLE lk ADD CONSTRAINT lk_b_chk CHECK (b IS NOT NULL AND length(b) > 0)");
    assert_eq!(analyzed("ALTER TABLE lk ALTER COLUMN b SET NOT NULL", "scans"), vec!["false"]);
    assert_eq!(analyzed("ALTER TABLE lk ALTER COLUMN b SET NOT NULL", "risk"), vec!["low"]);
}

#[pg_test]
fn type_changes_rewrite_as_postgres_decides() {
    lk_table();
    let rewrites = |to: &str| analyzed(&format!("ALTER TABLE lk ALTER COLUMN {to}"), "rewrites");
    assert_eq!(rewrites("v TYPE varchar(20)"), vec!["false"]);
    assert_eq!(rewrites("v TYPE text"), vec!["false"]);
    assert_eq!(rewrites("v TYPE varchar(5)"), vec!["true"]);
    assert_eq!(rewrites("n TYPE numeric(10,2)"), vec!["false"]);
    assert_eq!(rewrites("n TYPE numeric(10,3)"), vec!["true"]);
    assert_eq!(rewrites("a TYPE bigint"), vec!["true"]);
    assert_eq!(rewrites("a TYPE int USING a"), vec!["false"]);
    assert_eq!(rewrites("a TYPE int USING a + 0"), vec!["true"]);
}

#[pg_test]
fn defaults_rewrite_only_when_volatile() {
    lk_table();
    let add = |col: &str| analyzed(&format!("ALTER TABLE lk ADD COLUMN {col}"), "rewrites");
    assert_eq!(add("c int DEFAULT 0"), vec!["false"]);
    assert_eq!(add("c timestamptz DEFAULT now()"), vec!["false"]);
    assert_eq!(add("c float8 DEFAULT random()"), vec!["true"]);
    assert_eq!(add("c bigserial"), vec!["true"]);
    assert_eq!(add("c int GENERATED ALWAYS AS (a + 1) STORED"), vec!["true"]);
    // NOT NULL without a default checks every row (a scan).
    assert_eq!(analyzed("ALTER TABLE lk ADD COLUMN c int NOT NULL", "scans"), vec!["true"]);
    assert_eq!(analyzed("ALTER TABLE lk ADD COLUMN c int NOT NULL DEFAULT 1", "scans"), vec!["false"]);
}

#[pg_test]
fn relations_created_earlier_in_the_script_are_new() {
    let risks = analyzed(
        "CREATE TABLE fresh (id int); CREATE INDEX ON fresh (id); ALTER TABLE fresh RENAME TO fresher; ALTER TABLE fresher ADD COLUMN x float8 DEFAULT random()",
        "risk",
    );
    assert_eq!(risks, vec!["none", "none", "none", "none"]);
    assert_eq!(
        sqlstate_of("SELECT * FROM migrate_analyze('CREATE INDEX ON not_there (id)')"),
        Some("42P01".into())
    );
}

#[pg_test]
fn lock_modes_conflict_as_postgres_documents() {
    let conflicts = Spi::get_one::<i64>(
        "SELECT count(*) FILTER (WHERE pgmigrate.lock_conflicts(a, b))
           FROM unnest(ARRAY['AccessShareLock','RowShareLock','RowExclusiveLock','ShareUpdateExclusiveLock',
                             'ShareLock','ShareRowExclusiveLock','ExclusiveLock','AccessExclusiveLock']) a,
                unnest(ARRAY['ACCESS SHARE','ROW SHARE','ROW EXCLUSIVE','SHARE UPDATE EXCLUSIVE',
                             'SHARE','SHARE ROW EXCLUSIVE','EXCLUSIVE','ACCESS EXCLUSIVE']) b",
    )
    .unwrap();
    // The table in the PostgreSQL manual has 38 conflicting ordered pairs.
    assert_eq!(conflicts, Some(38));
    assert_eq!(Spi::get_one::<bool>("SELECT pgmigrate.lock_conflicts('bogus', 'ShareLock')").unwrap(), None);
}

#[pg_test]
fn no_role_can_record_or_finish_a_migrate_exec_run_it_did_not_begin() {
    run("CREATE ROLE lk_stranger");
    let run_id = Spi::get_one::<i64>("SELECT migrate_start('lk', '0001')").unwrap().unwrap();
    run("SET ROLE lk_stranger");
    // No exec run was begun in this session: attempts cannot be forged,
    // runs cannot be finished or raised, whatever the id.
    for id in [run_id, 1, 0, -1] {
        for sql in [
            format!("SELECT pgmigrate._exec_finish({id})"),
            format!("SELECT * FROM pgmigrate._exec_attempt({id}, 1)"),
            format!("SELECT pgmigrate._exec_raise({id})"),
        ] {
            assert_eq!(sqlstate_of(&sql), Some("42501".into()), "{sql}");
        }
    }
    // Internal functions the procedures do not call are closed to PUBLIC.
    assert_eq!(
        sqlstate_of("SELECT pgmigrate.refuse_history_change()"),
        Some("42501".into())
    );
    run("RESET ROLE");
    let status = Spi::get_one::<String>("SELECT status FROM migrate_history WHERE app = 'lk'").unwrap();
    assert_eq!(status, Some("running".into()));
}

#[pg_test]
fn identifiers_in_recipes_are_quoted_exactly_as_postgresql_quotes_them() {
    // Every key word of this server, and names around them.
    let words: Vec<String> = Spi::connect(|c| {
        c.select("SELECT word FROM pg_get_keywords()", None, &[])
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect()
    });
    assert!(words.len() > 400, "{} key words", words.len());
    let mut names = words.clone();
    names.extend(["orders", "Orders", "1st", "a b", "x\"y", "_ok", "é", "left_join"].map(String::from));
    for w in names {
        let theirs = Spi::get_one_with_args::<String>("SELECT quote_ident($1)", &[w.as_str().into()])
            .unwrap()
            .unwrap();
        assert_eq!(crate::engine::keyset::display_ident(&w), theirs, "{w}");
    }
}
