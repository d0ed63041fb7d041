//! Fuzz tier: thousands of generated and mutated statements, scripts and
//! backfill clauses against a real server, as a superuser and as an
//! ordinary role.  It fails on any crash of a backend (a lost connection,
//! or the server log saying a process was terminated), on any internal
//! error (SQLSTATE class XX, as an error or as a row of a trace) and on any
//! call that hangs (runs into the session's statement_timeout).
//!
//! `make test` runs it bounded (FUZZ_CASES, FUZZ_SECONDS; the seed is
//! fixed so a failure repeats); `make fuzz` runs it longer with a new seed
//! (FUZZ_SEED) each time.  Every failure is printed with the input and the
//! seed that made it.

mod common;

use common::corpus::{CORPUS, FIXTURES};
use common::Cluster;
use postgres::{Client, NoTls};
use std::time::{Duration, Instant};

/// xorshift64*: small, fast and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- what the generator knows ------------------------------------------

const TABLES: &[&str] = &[
    "plain",
    "parent_t",
    "child_t",
    "events",
    "events_2025",
    "events_default",
    "base_t",
    "inh_t",
    "lonely",
    "dom_t",
    "serial_t",
    "fk_src",
    "plain_v",
    "plain_mv",
    "seq_s",
    "public.plain",
    "s2.nosuch",
    "nosuchtable",
    "x.y.z",
    "a.b.c.d",
    "pg_catalog.pg_class",
    "pg_class",
    "\"Weird Name\"",
    "\"\"",
    "plain_a_idx",
    "ONLY plain",
    "plain *",
];

const COLUMNS: &[&str] = &[
    "a",
    "b",
    "c",
    "d",
    "e",
    "ts",
    "tsn",
    "v",
    "n",
    "id",
    "p",
    "x",
    "nosuchcol",
    "left",
    "join",
    "\"between\"",
    "ctid",
    "xmin",
    "oid",
    "tableoid",
    "\"A b\"",
];

const TYPES: &[&str] = &[
    "int",
    "bigint",
    "text",
    "varchar(20)",
    "varchar(5)",
    "numeric(12,2)",
    "numeric(2,1)",
    "timestamptz",
    "timestamp",
    "date",
    "uuid",
    "jsonb",
    "int[]",
    "posint",
    "poscheck",
    "mood",
    "nosuchtype",
    "public.nosuchtype",
    "x.y.z",
    "int4range",
    "bit(3)",
    "serial",
    "bigserial",
    "double precision",
    "interval second(2)",
    "char(1)",
    "\"char\"",
    "name",
    "regclass",
    "oid",
    "bytea",
    "tsvector",
    "point",
    "money",
    "record",
    "anyelement",
    "void",
    "trigger",
    "int4 ARRAY[3]",
    "setof int",
];

const EXPRESSIONS: &[&str] = &[
    "0",
    "'abc'",
    "''",
    "NULL",
    "now()",
    "random()",
    "gen_random_uuid()",
    "nosuchfunc()",
    "nextval('seq_s')",
    "nextval('nosuch')",
    "'1 day'::interval",
    "1/0",
    "(SELECT 1)",
    "a + 1",
    "b::int",
    "ARRAY[1,2]",
    "'{1,2'",
    "'9999999999999999999999'",
    "'2025-13-45'",
    "current_user",
    "CURRENT_TIMESTAMP(3)",
    "row(1,2)",
    "'a'::mood",
    "'z'::mood",
    "-2147483648",
    "1e400",
    "'NaN'::float8",
    "$1",
    "count(*)",
    "x.y.z",
    "(a)",
    "a IS NOT NULL",
    "e > 0",
    "b <> ''",
    "COLLATE \"C\"",
    "'x' COLLATE \"nosuch\"",
];

const FRAGMENTS: &[&str] = &[
    "(",
    ")",
    "'",
    "\"",
    "$$",
    "$q$",
    "/*",
    "*/",
    "--",
    ";",
    ",",
    " ",
    ".",
    "::",
    "[",
    "]",
    "\\",
    "E'\\",
    " DEFAULT 'abc'",
    " DEFAULT nosuchfunc()",
    " USING nosuchcol::int",
    " NOT NULL",
    "::nosuchtype",
    " CASCADE",
    " IF EXISTS",
    " IF NOT EXISTS",
    " ONLY",
    " CONCURRENTLY",
    " NOT VALID",
    " COLLATE \"C\"",
    " COLLATE \"nosuch\"",
    " WITH (fillfactor = 50)",
    " WITH (nosuch = 1)",
    " TABLESPACE pg_global",
    " TABLESPACE nosuch",
    " PARTITION BY RANGE (a)",
    " DEFAULT",
    " FOR VALUES FROM (1) TO (2)",
    " USING btree",
    " USING nosuch",
    " INCLUDE (b)",
    " WHERE a > 0",
    " RETURNING *",
    " FROM plain",
    " ON plain",
    " TO corpus_role",
    " OWNER TO nosuchrole",
    " SET SCHEMA s2",
    " RENAME TO r2",
    " ALTER COLUMN a TYPE bigint",
    " ADD COLUMN z int",
    " DROP COLUMN a",
    " SET DATA TYPE text",
    "\u{0}",
    "\u{7f}",
    "é",
    "😀",
    "\u{feff}",
];

/// One statement from templates filled with the pools above.
fn generated(r: &mut Rng) -> String {
    let t = *r.pick(TABLES);
    let c = *r.pick(COLUMNS);
    let c2 = *r.pick(COLUMNS);
    let ty = *r.pick(TYPES);
    let e = *r.pick(EXPRESSIONS);
    let e2 = *r.pick(EXPRESSIONS);
    let templates: Vec<String> = vec![
        format!("ALTER TABLE {t} ADD COLUMN {c} {ty}"),
        format!("ALTER TABLE {t} ADD COLUMN {c} {ty} DEFAULT {e}"),
        format!("ALTER TABLE {t} ADD COLUMN {c} {ty} NOT NULL DEFAULT {e}"),
        format!("ALTER TABLE {t} ADD COLUMN {c} {ty} GENERATED ALWAYS AS ({e}) STORED"),
        format!("ALTER TABLE {t} ALTER COLUMN {c} TYPE {ty}"),
        format!("ALTER TABLE {t} ALTER COLUMN {c} TYPE {ty} USING {e}"),
        format!("ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {e}"),
        format!("ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL"),
        format!("ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL"),
        format!("ALTER TABLE {t} ALTER COLUMN {c} SET STATISTICS {e}"),
        format!("ALTER TABLE {t} ALTER COLUMN {c} ADD GENERATED ALWAYS AS IDENTITY"),
        format!("ALTER TABLE {t} ADD CONSTRAINT k CHECK ({e2}) NOT VALID"),
        format!("ALTER TABLE {t} ADD CONSTRAINT k CHECK ({c} > {e})"),
        format!(
            "ALTER TABLE {t} ADD FOREIGN KEY ({c}) REFERENCES {}",
            r.pick(TABLES)
        ),
        format!("ALTER TABLE {t} ADD PRIMARY KEY ({c})"),
        format!("ALTER TABLE {t} ADD UNIQUE ({c}, {c2})"),
        format!("ALTER TABLE {t} VALIDATE CONSTRAINT {c}"),
        format!("ALTER TABLE {t} DROP CONSTRAINT {c}"),
        format!("ALTER TABLE {t} DROP COLUMN {c}"),
        format!("ALTER TABLE {t} RENAME COLUMN {c} TO {c2}"),
        format!("ALTER TABLE {t} RENAME TO {c2}"),
        format!("ALTER TABLE {t} SET SCHEMA {c2}"),
        format!(
            "ALTER TABLE {t} SET TABLESPACE {}",
            r.pick(&["pg_default", "pg_global", "nosuch"])
        ),
        format!(
            "ALTER TABLE {t} SET ACCESS METHOD {}",
            r.pick(&["heap", "btree", "nosuch"])
        ),
        format!(
            "ALTER TABLE {t} SET ({}={e})",
            r.pick(&["fillfactor", "nosuch", "toast.autovacuum_enabled"])
        ),
        format!(
            "ALTER TABLE {t} ATTACH PARTITION {} FOR VALUES FROM ({e}) TO ({e2})",
            r.pick(TABLES)
        ),
        format!(
            "ALTER TABLE {t} ATTACH PARTITION {} DEFAULT",
            r.pick(TABLES)
        ),
        format!(
            "ALTER TABLE {t} DETACH PARTITION {} CONCURRENTLY",
            r.pick(TABLES)
        ),
        format!("ALTER TABLE {t} INHERIT {}", r.pick(TABLES)),
        format!("ALTER TABLE {t} OF {ty}"),
        format!("ALTER TABLE {t} CLUSTER ON {c}"),
        format!("ALTER TABLE {t} REPLICA IDENTITY USING INDEX {c}"),
        format!(
            "ALTER TABLE {t} OWNER TO {}",
            r.pick(&["corpus_role", "nosuchrole", "public"])
        ),
        format!(
            "ALTER TABLE {t} ALTER COLUMN {c} SET COMPRESSION {}",
            r.pick(&["pglz", "lz4", "nosuch"])
        ),
        format!(
            "ALTER TABLE {t} ALTER COLUMN {c} SET STORAGE {}",
            r.pick(&["plain", "external", "nosuch"])
        ),
        format!("CREATE INDEX ON {t} ({c})"),
        format!(
            "CREATE INDEX CONCURRENTLY ix ON {t} USING {} ({c})",
            r.pick(&["btree", "gin", "hash", "nosuch"])
        ),
        format!("CREATE UNIQUE INDEX ON {t} (({e})) WHERE {e2}"),
        format!("DROP INDEX {t}"),
        format!(
            "REINDEX {} {t}",
            r.pick(&["INDEX", "TABLE", "SCHEMA", "DATABASE", "SYSTEM"])
        ),
        format!("REINDEX INDEX CONCURRENTLY {t}"),
        format!("CLUSTER {t} USING {c}"),
        format!("VACUUM {t}"),
        format!("TRUNCATE {t}"),
        format!("TRUNCATE {t} CASCADE"),
        format!(
            "LOCK {t} IN {} MODE",
            r.pick(&["ACCESS EXCLUSIVE", "SHARE", "ROW EXCLUSIVE", "NOSUCH"])
        ),
        format!(
            "COMMENT ON {} {t} IS 'x'",
            r.pick(&[
                "TABLE",
                "COLUMN",
                "INDEX",
                "SEQUENCE",
                "VIEW",
                "TYPE",
                "DOMAIN",
                "CONSTRAINT k ON"
            ])
        ),
        format!("COMMENT ON COLUMN {t}.{c} IS NULL"),
        format!(
            "ALTER DOMAIN {} ADD CHECK (VALUE > {e})",
            r.pick(&["posint", "poscheck", "nosuch", "x.y.z"])
        ),
        format!(
            "ALTER DOMAIN {} SET DEFAULT {e}",
            r.pick(&["posint", "nosuch"])
        ),
        format!(
            "ALTER DOMAIN {} VALIDATE CONSTRAINT {c}",
            r.pick(&["poscheck", "nosuch"])
        ),
        format!(
            "ALTER TYPE {} ADD VALUE {e}",
            r.pick(&["mood", "nosuch", "int"])
        ),
        format!("ALTER TYPE {} RENAME TO {c}", r.pick(&["mood", "nosuch"])),
        format!("ALTER SEQUENCE {t} RESTART"),
        format!("ALTER SEQUENCE {t} AS {ty}"),
        format!("ALTER SEQUENCE {t} OWNED BY {t}.{c}"),
        format!("CREATE TABLE {c} (LIKE {t} INCLUDING ALL)"),
        format!("CREATE TABLE {c} PARTITION OF {t} FOR VALUES FROM ({e}) TO ({e2})"),
        format!("CREATE TABLE {c} PARTITION OF {t} DEFAULT"),
        format!("CREATE TABLE {c} () INHERITS ({t})"),
        format!("CREATE TABLE {c} ({c2} {ty} DEFAULT {e} REFERENCES {t})"),
        format!("CREATE VIEW {c} AS SELECT {e} FROM {t}"),
        format!("CREATE MATERIALIZED VIEW {c} AS SELECT {e} FROM {t}"),
        format!("REFRESH MATERIALIZED VIEW CONCURRENTLY {t}"),
        format!(
            "CREATE TRIGGER tr BEFORE UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {}",
            r.pick(&["trg_fn()", "nosuch()", "now()"])
        ),
        format!("DROP TRIGGER {c} ON {t}"),
        format!("CREATE POLICY {c} ON {t} USING ({e})"),
        format!("CREATE STATISTICS {c} ON {c}, {c2} FROM {t}"),
        format!(
            "GRANT SELECT ({c}) ON {t} TO {}",
            r.pick(&["corpus_role", "nosuch", "PUBLIC"])
        ),
        format!(
            "DROP {} {t}",
            r.pick(&[
                "TABLE",
                "VIEW",
                "SEQUENCE",
                "INDEX",
                "TYPE",
                "DOMAIN",
                "MATERIALIZED VIEW",
                "SCHEMA"
            ])
        ),
        format!("UPDATE {t} SET {c} = {e} WHERE {e2}"),
        format!("DELETE FROM {t} WHERE {c} = {e}"),
        format!("INSERT INTO {t} ({c}) VALUES ({e})"),
        format!(
            "INSERT INTO {t} SELECT {e} FROM {} ON CONFLICT DO NOTHING",
            r.pick(TABLES)
        ),
        format!("WITH w AS (SELECT {e}) UPDATE {t} SET {c} = (SELECT * FROM w)"),
        format!("SELECT {e} FROM {t} FOR UPDATE"),
        format!("COPY {t} FROM STDIN"),
        format!("CREATE FUNCTION {c}() RETURNS {ty} LANGUAGE sql AS 'SELECT {e}'"),
        format!("DO $$BEGIN PERFORM {e}; END$$"),
        format!("CALL {c}({e})"),
        format!("PREPARE p AS SELECT {e}"),
        format!("EXPLAIN UPDATE {t} SET {c} = {e}"),
        format!("SET {c} = {e}"),
        "BEGIN".into(),
        "COMMIT".into(),
        "ROLLBACK".into(),
        "SAVEPOINT s".into(),
        "RELEASE SAVEPOINT s".into(),
        "ROLLBACK TO SAVEPOINT s".into(),
        "PREPARE TRANSACTION 'x'".into(),
        "COMMIT PREPARED 'x'".into(),
        "VACUUM".into(),
        "CHECKPOINT".into(),
        "LISTEN x".into(),
        "DISCARD ALL".into(),
    ];
    r.pick(&templates).clone()
}

/// A statement changed a few times: a token replaced, a fragment put in,
/// a piece cut or repeated, two statements spliced.
fn mutated(r: &mut Rng, seed: &str) -> String {
    let mut s: Vec<char> = seed.chars().collect();
    for _ in 0..1 + r.below(3) {
        let at = r.below(s.len() + 1);
        match r.below(7) {
            0 => {
                let f: Vec<char> = r.pick(FRAGMENTS).chars().collect();
                s.splice(at..at, f);
            }
            1 if !s.is_empty() => {
                let end = (at + 1 + r.below(12)).min(s.len());
                s.drain(at.min(end)..end);
            }
            2 if !s.is_empty() => {
                let end = (at + 1 + r.below(20)).min(s.len());
                let piece: Vec<char> = s[at.min(end)..end].to_vec();
                s.splice(at..at, piece);
            }
            3 => {
                s.truncate(at);
            }
            4 => {
                let other: Vec<char> = r.pick(CORPUS).chars().collect();
                let from = r.below(other.len() + 1);
                s.truncate(at);
                s.extend_from_slice(&other[from..]);
            }
            _ => {
                // Replace one word with a name, type or expression.
                let words: Vec<usize> = (0..s.len())
                    .filter(|&i| s[i].is_alphabetic() && (i == 0 || !s[i - 1].is_alphanumeric()))
                    .collect();
                if let Some(&start) = words.get(r.below(words.len().max(1))) {
                    let end = (start..s.len())
                        .find(|&i| !(s[i].is_alphanumeric() || s[i] == '_'))
                        .unwrap_or(s.len());
                    let pool: &[&str] = match r.below(4) {
                        0 => TABLES,
                        1 => COLUMNS,
                        2 => TYPES,
                        _ => EXPRESSIONS,
                    };
                    let with: Vec<char> = r.pick(pool).chars().collect();
                    s.splice(start..end, with);
                }
            }
        }
    }
    s.into_iter().filter(|c| *c != '\0').collect()
}

fn script(r: &mut Rng) -> String {
    let n = 1 + r.below(4);
    let parts: Vec<String> = (0..n)
        .map(|_| match r.below(3) {
            0 => (*r.pick(CORPUS)).to_string(),
            1 => generated(r),
            _ => {
                let seed = if r.chance(50) {
                    (*r.pick(CORPUS)).to_string()
                } else {
                    generated(r)
                };
                mutated(r, &seed)
            }
        })
        .collect();
    parts.join(if r.chance(90) { ";\n" } else { " " })
}

const SET_CLAUSES: &[&str] = &[
    "n = n + 1",
    "note = left(body, 3), flag = true",
    "note = upper(note)",
    "flag = NOT flag",
    "(n, flag) = (n * 2, false)",
    "note = (SELECT max(v) FROM public.side)",
    "note = $$x$$",
    "n = DEFAULT",
];

const WHERE_CLAUSES: &[&str] = &[
    "n > 5",
    "body IS NOT NULL",
    "id % 2 = 0",
    "note IS NULL AND flag",
    "true) OR (true",
    "$$",
    "n > 0 --",
    "EXISTS (SELECT 1 FROM public.side WHERE side.v = note)",
    "n = ANY ('{1,2,3}')",
];

fn clause(r: &mut Rng, pool: &[&str]) -> String {
    let seed = *r.pick(pool);
    if r.chance(70) {
        mutated(r, seed)
    } else {
        seed.to_string()
    }
}

// ---- running -----------------------------------------------------------

struct Session {
    url: String,
    client: Client,
    who: &'static str,
}

impl Session {
    fn open(url: String, who: &'static str) -> Session {
        let mut client = Client::connect(&url, NoTls).expect("connect");
        client
            .batch_execute("SET statement_timeout = '20s'; SET client_min_messages = warning")
            .unwrap();
        Session { url, client, who }
    }
}

#[derive(Default)]
struct Tally {
    calls: u64,
    errors: u64,
    failures: Vec<String>,
}

impl Tally {
    /// Judge one call: an internal error, a hang or a lost connection is a
    /// failure; any other error is an answer.
    fn judge(
        &mut self,
        s: &mut Session,
        what: &str,
        input: &str,
        seed: u64,
        r: Result<Vec<postgres::Row>, postgres::Error>,
    ) -> Option<Vec<postgres::Row>> {
        self.calls += 1;
        match r {
            Ok(rows) => Some(rows),
            Err(e) => {
                self.errors += 1;
                let failure = match e.code() {
                    Some(code) if code.code().starts_with("XX") => {
                        Some(format!("internal error {}", common::message(&e)))
                    }
                    Some(code)
                        if code.code() == "57014"
                            && e.to_string().contains("statement timeout") =>
                    {
                        Some("hang: ran into the 20 s statement_timeout".to_string())
                    }
                    Some(_) => None,
                    None if s.client.is_closed() => {
                        Some(format!("connection lost (backend crash?): {e}"))
                    }
                    None => Some(format!("error without SQLSTATE: {e}")),
                };
                if let Some(f) = failure {
                    self.failures.push(format!(
                        "[{} as {}, seed {seed}] {f}\n    input: {input:?}",
                        what, s.who
                    ));
                    if s.client.is_closed() {
                        // Wait for the server to come back, then go on.
                        let url = s.url.clone();
                        let who = s.who;
                        *s = common::wait_until("reconnect", Duration::from_secs(60), || {
                            Client::connect(&url, NoTls)
                                .ok()
                                .map(|_| Session::open(url.clone(), who))
                        });
                    }
                }
                None
            }
        }
    }
}

const SIDE: &str = r#"
CREATE TABLE public.fz (id bigint PRIMARY KEY, n int, body text, note text, flag boolean, v varchar(10));
INSERT INTO public.fz SELECT g, g, 'body ' || g, NULL, g % 2 = 0, 'v' || g FROM generate_series(1, 200) g;
CREATE TABLE public.fz_nokey (n int, body text, note text, flag boolean);
INSERT INTO public.fz_nokey SELECT g, 'b', NULL, true FROM generate_series(1, 50) g;
CREATE TABLE public.side (v text);
INSERT INTO public.side VALUES ('x');
CREATE ROLE fuzz_user LOGIN;
GRANT USAGE, CREATE ON SCHEMA public TO fuzz_user;
GRANT SELECT, UPDATE ON public.fz, public.fz_nokey, public.side, public.plain, public.parent_t TO fuzz_user;
GRANT USAGE ON SCHEMA s2 TO fuzz_user;
ALTER TABLE public.lonely OWNER TO fuzz_user;
"#;

#[test]
fn no_input_crashes_a_backend_or_gives_an_internal_error() {
    let cases: u64 = env_or("FUZZ_CASES", 6000);
    let seconds: u64 = env_or("FUZZ_SECONDS", 150);
    let seed: u64 = env_or("FUZZ_SEED", 20261202);
    let cluster = Cluster::start("fuzz");
    let mut admin = cluster.create_db("fuzz");
    admin.batch_execute(FIXTURES).unwrap();
    admin.batch_execute(SIDE).unwrap();
    let url = cluster.url("fuzz");
    let mut sessions = [
        Session::open(url.clone(), "superuser"),
        Session::open(url.replace("user=postgres", "user=fuzz_user"), "fuzz_user"),
    ];
    drop(admin);

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tally = Tally::default();
    let mut rng = Rng(seed | 1);
    let mut done = 0u64;
    while done < cases && Instant::now() < deadline {
        done += 1;
        let s = &mut sessions[(done % 2) as usize];
        let input = script(&mut rng);
        let r = s
            .client
            .query("SELECT x::text FROM migrate_analyze($1) x", &[&input]);
        tally.judge(s, "migrate_analyze", &input, seed, r);
        if done.is_multiple_of(4) {
            let r = s
                .client
                .query("SELECT migrate_unplan(migrate_plan($1, 'fuzz'))", &[&input]);
            tally.judge(s, "migrate_plan", &input, seed, r);
        }
        if done.is_multiple_of(8) {
            let r = s.client.query(
                "SELECT x::text, x.error_sqlstate FROM migrate_trace($1, statement_timeout => '5s') x",
                &[&input],
            );
            if let Some(rows) = tally.judge(s, "migrate_trace", &input, seed, r) {
                for row in rows {
                    let state: Option<String> = row.get(1);
                    if state.as_deref().is_some_and(|c| c.starts_with("XX")) {
                        let text: String = row.get(0);
                        tally.failures.push(format!(
                            "[migrate_trace as {}, seed {seed}] a row reports an internal error: {text}\n    input: {input:?}",
                            s.who
                        ));
                    }
                }
            }
        }
        if done.is_multiple_of(3) {
            let set = clause(&mut rng, SET_CLAUSES);
            let filter = if rng.chance(80) {
                Some(clause(&mut rng, WHERE_CLAUSES))
            } else {
                None
            };
            let table = if rng.chance(80) {
                "public.fz"
            } else {
                "public.fz_nokey"
            };
            let shown = format!("{table}: SET {set:?} WHERE {filter:?}");
            let r = s.client.query(
                "SELECT x::text FROM migrate_estimate($1::text::regclass, $2, $3, sample_rows => 20) x",
                &[&table, &set, &filter],
            );
            tally.judge(s, "migrate_estimate", &shown, seed, r);
            let r = s.client.query(
                "SELECT migrate_cancel(migrate_backfill($1::text::regclass, $2, $3,
                        run_at => pg_catalog.now() + interval '100 years'))",
                &[&table, &set, &filter],
            );
            tally.judge(s, "migrate_backfill", &shown, seed, r);
        }
    }

    let log = cluster.log();
    for line in log.lines() {
        if line.contains("terminated by signal")
            || line.contains("was terminated")
            || line.contains("PANIC")
            || line.contains("non-unwinding")
            || line.contains("panicked")
        {
            tally.failures.push(format!("server log: {line}"));
        }
    }
    println!(
        "fuzz: seed {seed}, {done} inputs, {} calls, {} errors answered cleanly, {} failures",
        tally.calls,
        tally.errors,
        tally.failures.len()
    );
    assert!(
        done >= cases.min(500),
        "only {done} inputs ran before the deadline"
    );
    assert!(
        tally.failures.is_empty(),
        "{} failures (seed {seed}); the first ones:\n{}",
        tally.failures.len(),
        tally
            .failures
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
