//! Trojans: a role that may create objects in a schema on a superuser's
//! search_path plants look-alikes of every operator and function the
//! extension uses, ahead of pg_catalog, then every function, procedure,
//! view and job kind is driven as that superuser and as an ordinary role.
//! A trojan that runs raises a WARNING that names it (the server log keeps
//! it whatever the transaction does afterwards); the test fails on any.
//!
//! What the extension uses is read from its own sources, not from a hand
//! list: the operator symbols and the names called like functions in the
//! SQL it runs (sql/*.sql, and the string literals of src/**/*.rs), each
//! matched against pg_catalog.  For every pg_catalog operator and function
//! of those names whose argument types a PL/pgSQL function can take, the
//! trojan has the same name and signature (so on a search_path that lists
//! the trojan schema before pg_catalog it wins) and otherwise does what the
//! original does.  Variadic "any" functions (format, concat) get fixed
//! arity text overloads, which beat them; aggregates get trojan aggregates.

mod common;

use common::{project_root, wait_until, Cluster};
use postgres::{Client, NoTls};
use std::collections::BTreeSet;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

/// Every file of SQL the extension runs: the install script's pieces and
/// the Rust sources (their string literals).
fn sources() -> Vec<(String, String)> {
    let mut out = vec![];
    let mut dirs = vec![project_root().join("sql"), project_root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "sql" || e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let text = if path.extension().unwrap() == "rs" {
                    string_literals(&text)
                } else {
                    text
                };
                out.push((path.display().to_string(), text));
            }
        }
    }
    out
}

/// The contents of the string literals of a Rust file ("..." and r#"..."#),
/// one per line.
fn string_literals(rust: &str) -> String {
    let b: Vec<char> = rust.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        // Skip comments.
        if b[i] == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            continue;
        }
        // Character literals such as '"' are not strings.
        if b[i] == '\'' && b.get(i + 2) == Some(&'\'') {
            i += 3;
            continue;
        }
        if b[i] == '\'' && b.get(i + 1) == Some(&'\\') && b.get(i + 3) == Some(&'\'') {
            i += 4;
            continue;
        }
        if b[i] == 'r'
            && (b.get(i + 1) == Some(&'#') || b.get(i + 1) == Some(&'"'))
            && (i == 0 || !(b[i - 1].is_alphanumeric() || b[i - 1] == '_'))
        {
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) == Some(&'"') {
                j += 1;
                let start = j;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                        break;
                    }
                    j += 1;
                }
                out.extend(&b[start..j.min(b.len())]);
                out.push('\n');
                i = j + 1 + hashes;
                continue;
            }
        }
        if b[i] == '"' {
            let mut j = i + 1;
            let start = j;
            while j < b.len() && b[j] != '"' {
                if b[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            out.extend(&b[start..j.min(b.len())]);
            out.push('\n');
            i = j + 1;
            continue;
        }
        i += 1;
    }
    out
}

/// Operator symbols and the words called like functions, as SQL's lexer
/// would cut them.
fn used(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    const OP: &str = "+-*/<>=~!@#%^&|`?";
    let chars: Vec<char> = text.chars().collect();
    let (mut ops, mut calls) = (BTreeSet::new(), BTreeSet::new());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if OP.contains(c) {
            let start = i;
            while i < chars.len() && OP.contains(chars[i]) {
                i += 1;
            }
            let op: String = chars[start..i].iter().collect();
            // Comments are not operators; an operator ending in + or - is
            // cut as PostgreSQL cuts it.
            for part in op.split("--").next().unwrap_or("").split("/*") {
                if !part.is_empty() {
                    ops.insert(part.to_string());
                    if part.len() > 1 {
                        ops.insert(part.trim_end_matches(['+', '-']).to_string());
                    }
                }
            }
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect::<String>().to_lowercase();
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            if chars.get(j) == Some(&'(') {
                calls.insert(word);
            }
            continue;
        }
        i += 1;
    }
    ops.remove("");
    (ops, calls)
}

/// The SQL that plants the trojans, built from the catalog.
fn plant_sql(c: &mut Client, ops: &BTreeSet<String>, calls: &BTreeSet<String>) -> Vec<String> {
    let ops: Vec<String> = ops.iter().cloned().collect();
    let calls: Vec<String> = calls.iter().cloned().collect();
    // Types a PL/pgSQL function may take and return.
    const PLAIN: &str = "t.typtype IN ('b', 'e', 'r', 'm', 'd') OR t.typname IN ('anyelement', 'anyarray', 'anynonarray', 'anyenum', 'anyrange', 'anymultirange', 'anycompatible', 'anycompatiblearray', 'anycompatiblenonarray', 'anycompatiblerange', 'record')";
    let mut sql: Vec<String> = vec![];
    let mut n = 0;
    for row in c
        .query(
            &format!(
                "SELECT o.oprname, o.oprleft::regtype::text, o.oprright::regtype::text, o.oprresult::regtype::text, o.oprleft = 0
                   FROM pg_operator o
                  WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oprname = ANY ($1)
                    AND o.oprright <> 0
                    AND (o.oprleft = 0 OR EXISTS (SELECT 1 FROM pg_type t WHERE t.oid = o.oprleft AND ({PLAIN})))
                    AND EXISTS (SELECT 1 FROM pg_type t WHERE t.oid = o.oprright AND ({PLAIN}))
                    AND EXISTS (SELECT 1 FROM pg_type t WHERE t.oid = o.oprresult AND ({PLAIN}))
                    AND o.oprleft NOT IN ('record'::regtype) AND o.oprright NOT IN ('record'::regtype)
                  ORDER BY 1, 2, 3"
            ),
            &[&ops],
        )
        .unwrap()
    {
        let (name, left, right, result, prefix): (String, String, String, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        n += 1;
        let f = format!("trojan.op_{n}");
        if prefix {
            sql.push(format!(
                "CREATE FUNCTION {f}(r {right}) RETURNS {result} LANGUAGE plpgsql AS $t$
                 BEGIN RAISE WARNING 'TROJAN operator % (%) ran as %', '{name}', '{right}', current_user;
                       RETURN OPERATOR(pg_catalog.{name}) r; END $t$;
                 CREATE OPERATOR trojan.{name} (RIGHTARG = {right}, FUNCTION = {f});\n"
            ));
        } else {
            sql.push(format!(
                "CREATE FUNCTION {f}(l {left}, r {right}) RETURNS {result} LANGUAGE plpgsql AS $t$
                 BEGIN RAISE WARNING 'TROJAN operator % (%, %) ran as % (backend doing: %)', '{name}', '{left}', '{right}', current_user, pg_catalog.left(pg_catalog.current_query(), 200);
                       RETURN l OPERATOR(pg_catalog.{name}) r; END $t$;
                 CREATE OPERATOR trojan.{name} (LEFTARG = {left}, RIGHTARG = {right}, FUNCTION = {f});\n"
            ));
        }
    }
    // Functions: same name and argument types.
    for row in c
        .query(
            &format!(
                "SELECT p.proname, (SELECT string_agg(format_type(u.t, NULL), ', ' ORDER BY u.ord)
                                      FROM unnest(p.proargtypes) WITH ORDINALITY u(t, ord)), p.pronargs,
                        pg_get_function_result(p.oid), p.proretset,
                        (SELECT string_agg(format('a%s', i), ', ') FROM generate_series(1, p.pronargs) i)
                   FROM pg_proc p
                  WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY ($1)
                    AND p.prokind = 'f' AND p.provariadic = 0
                    AND NOT EXISTS (SELECT 1 FROM unnest(p.proargtypes) a JOIN pg_type t ON t.oid = a
                                     WHERE NOT ({PLAIN}))
                    AND EXISTS (SELECT 1 FROM pg_type t WHERE t.oid = p.prorettype
                                   AND ({PLAIN} OR t.typname = 'void'))
                  ORDER BY 1, 2"
            ),
            &[&calls],
        )
        .unwrap()
    {
        let (name, args, nargs, result, set, list): (String, Option<String>, i16, String, bool, Option<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
        let args = args.unwrap_or_default();
        let types: Vec<&str> = if args.is_empty() { vec![] } else { split_args(&args) };
        if types.len() != nargs as usize {
            continue;
        }
        let list = list.unwrap_or_default();
        let params: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("a{} {t}", i + 1)).collect();
        let warn = format!(
            "RAISE WARNING 'TROJAN function %(%) ran as %', '{name}', '{}', current_user;",
            args.replace('\'', "''")
        );
        let body = if set {
            format!("BEGIN {warn} RETURN QUERY SELECT * FROM pg_catalog.{name}({list}); END")
        } else if result == "void" {
            format!("BEGIN {warn} PERFORM pg_catalog.{name}({list}); END")
        } else {
            format!("BEGIN {warn} RETURN pg_catalog.{name}({list}); END")
        };
        sql.push(format!(
            "CREATE FUNCTION trojan.{name}({}) RETURNS {result} LANGUAGE plpgsql AS $t${body}$t$;\n",
            params.join(", ")
        ));
        n += 1;
    }
    // Variadic "any" functions: fixed text overloads beat them.
    for name in ["format", "concat", "concat_ws"] {
        if !calls.contains(&name.to_string()) {
            continue;
        }
        for arity in 2..=6 {
            let params: Vec<String> = (1..=arity).map(|i| format!("a{i} text")).collect();
            let args: Vec<String> = (1..=arity).map(|i| format!("a{i}")).collect();
            sql.push(format!(
                "CREATE FUNCTION trojan.{name}({}) RETURNS text LANGUAGE plpgsql AS $t$
                 BEGIN RAISE WARNING 'TROJAN function {name}/{arity} ran as %', current_user;
                       RETURN pg_catalog.{name}({}); END $t$;\n",
                params.join(", "),
                args.join(", ")
            ));
            n += 1;
        }
    }
    // Aggregates.
    for row in c
        .query(
            &format!(
                "SELECT p.proname, format_type(p.proargtypes[0], NULL), a.aggtranstype::regtype::text,
                        format_type(p.prorettype, NULL)
                   FROM pg_proc p JOIN pg_aggregate a ON a.aggfnoid = p.oid
                  WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY ($1)
                    AND p.prokind = 'a' AND p.pronargs <= 1 AND a.aggkind = 'n'
                    AND NOT EXISTS (SELECT 1 FROM unnest(p.proargtypes) x JOIN pg_type t ON t.oid = x WHERE NOT ({PLAIN}))
                  ORDER BY 1, 2"
            ),
            &[&calls],
        )
        .unwrap()
    {
        let (name, arg, _trans, result): (String, Option<String>, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        n += 1;
        match arg {
            None => sql.push(format!(
                "CREATE FUNCTION trojan.agg_{n}(s {result}) RETURNS {result} LANGUAGE plpgsql AS $t$
                 BEGIN RAISE WARNING 'TROJAN aggregate {name}(*) ran as %', current_user; RETURN s; END $t$;
                 CREATE AGGREGATE trojan.{name}(*) (SFUNC = trojan.agg_{n}, STYPE = {result}, INITCOND = '0');\n"
            )),
            Some(arg) if arg == "anyarray" || arg == "anyelement" || arg == "anynonarray" || arg == "anycompatible" => {}
            Some(arg) => sql.push(format!(
                "CREATE FUNCTION trojan.agg_{n}(s {result}, v {arg}) RETURNS {result} LANGUAGE plpgsql AS $t$
                 BEGIN RAISE WARNING 'TROJAN aggregate {name}({arg}) ran as %', current_user; RETURN s; END $t$;
                 CREATE AGGREGATE trojan.{name}({arg}) (SFUNC = trojan.agg_{n}, STYPE = {result});\n"
            )),
        }
    }
    sql
}

/// Split "a integer, b text[], character varying" style argument lists
/// (no names in identity arguments of pg_catalog functions).
fn split_args(args: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in args.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(args[start..].trim());
    out
}

/// Each trojan that ran, with the statement that called it (from the
/// CONTEXT and STATEMENT lines that follow its WARNING in the server log).
fn trojans_that_ran(cluster: &Cluster) -> Vec<String> {
    let log = cluster.log();
    let lines: Vec<&str> = log.lines().collect();
    // The backend of a log line: "... UTC [pid] ...".  Continuation lines
    // (a tab first) belong to the line before them.
    let pid_of = |line: &str| -> Option<String> {
        let start = line.find(" [")? + 2;
        let end = start + line[start..].find(']')?;
        Some(line[start..end].to_string())
    };
    let mut seen = vec![];
    for (i, line) in lines.iter().enumerate() {
        let Some(what) = line
            .split("WARNING:  ")
            .nth(1)
            .filter(|w| w.starts_with("TROJAN"))
        else {
            continue;
        };
        let pid = pid_of(line);
        // The caller: the innermost SQL statement in the context that is
        // not the trojan itself, else the client's statement; read only
        // from this backend's lines that follow the warning.
        let mut caller = String::new();
        let mut backend = pid.clone();
        for next in lines.iter().skip(i + 1).take(40) {
            if !next.starts_with('\t') {
                backend = pid_of(next);
            }
            if backend != pid {
                continue;
            }
            if next.contains("WARNING:") {
                break;
            }
            let text = next.trim_start_matches('\t');
            let found = text
                .split("SQL statement \"")
                .nth(1)
                .or_else(|| text.split("STATEMENT:  ").nth(1));
            if let Some(sql) = found {
                caller = sql.chars().take(160).collect();
                break;
            }
        }
        // The warning's own line (time and backend) tells one run of a
        // trojan from another.
        let stamp: String = line.chars().take(40).collect();
        seen.push(format!("{what}\n      in: {caller}\n      at: {stamp}"));
    }
    seen.sort();
    seen.dedup();
    seen
}

fn state(c: &mut Client, id: i64) -> String {
    c.query_one("SELECT state FROM pgmigrate.jobs WHERE job_id = $1", &[&id])
        .unwrap()
        .get(0)
}

fn wait_end(c: &mut Client, id: i64) -> String {
    wait_until(&format!("job {id} to end"), LONG, || {
        let s = state(c, id);
        matches!(s.as_str(), "succeeded" | "failed" | "cancelled").then_some(s)
    })
}

/// The tables a role works on, made with a safe search_path (the user's
/// own SQL below uses no operator or function, so that any trojan that
/// runs was called by pg_migrate, not by the user's text).
fn tables(c: &mut Client, prefix: &str) {
    c.batch_execute(&format!(
        "BEGIN;
         SET LOCAL search_path = pg_catalog, public;
         CREATE TABLE public.{prefix}_items (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, note text,
                                             code varchar(20), flag boolean NOT NULL DEFAULT true, gap int);
         INSERT INTO public.{prefix}_items (id, code) SELECT g, 'c' || g FROM generate_series(1, 300) g;
         CREATE TABLE public.{prefix}_codes (code varchar(20) PRIMARY KEY, note text, flag boolean NOT NULL DEFAULT true);
         INSERT INTO public.{prefix}_codes (code) SELECT 'k' || g FROM generate_series(1, 300) g;
         CREATE TABLE public.{prefix}_nokey (n int, note text, flag boolean NOT NULL DEFAULT true);
         INSERT INTO public.{prefix}_nokey (n) SELECT g FROM generate_series(1, 300) g;
         CREATE TABLE public.{prefix}_parts (id bigint NOT NULL, note text, flag boolean NOT NULL DEFAULT true,
                                             PRIMARY KEY (id)) PARTITION BY RANGE (id);
         CREATE TABLE public.{prefix}_parts_1 PARTITION OF public.{prefix}_parts FOR VALUES FROM (0) TO (150);
         CREATE TABLE public.{prefix}_parts_2 PARTITION OF public.{prefix}_parts DEFAULT;
         INSERT INTO public.{prefix}_parts (id) SELECT g FROM generate_series(1, 300) g;
         CREATE TABLE public.{prefix}_django (id serial, app varchar(255), name varchar(255), applied timestamptz);
         INSERT INTO public.{prefix}_django (app, name, applied) VALUES ('shop', '0001_initial', now());
         ANALYZE public.{prefix}_items, public.{prefix}_codes, public.{prefix}_nokey, public.{prefix}_parts;
         COMMIT;"
    ))
    .unwrap();
}

fn run(c: &mut Client, problems: &mut Vec<String>, sql: &str) {
    if let Err(e) = c.batch_execute(sql) {
        problems.push(format!("{sql}: {}", common::message(&e)));
    }
}

/// Everything a user can do, as the role of `c`, on its tables.
fn drive(c: &mut Client, admin: &mut Client, prefix: &str, superuser: bool) -> Vec<String> {
    let mut problems = vec![];
    let t = format!("public.{prefix}_items");
    let v = format!("public.{prefix}_codes");
    let k = format!("public.{prefix}_nokey");
    // History.
    if superuser {
        run(c, &mut problems, &format!(
            "SELECT migrate_finish(migrate_start('{prefix}', '0001', checksum => 'abc'));
             SELECT migrate_record('{prefix}', '0002', checksum => 'def', duration => interval '1 s');
             SELECT migrate_applied('{prefix}', '0001');
             SELECT migrate_require('{prefix}', '0002');
             SELECT migrate_unapply('{prefix}', '0002', reason => 'test');
             SELECT migrate_import_django('public.{prefix}_django');"
        ));
    } else {
        run(
            c,
            &mut problems,
            &format!("SELECT migrate_applied('{prefix}', '0001')"),
        );
    }
    // Backfills: a bigint key, a varchar key (cut into slices), no key
    // (cut into block ranges), a partitioned table in slices; run by
    // workers.
    let p = format!("public.{prefix}_parts");
    let mut jobs = vec![];
    for (table, set, filter, slices) in [
        (t.as_str(), "note = 'x', flag = false", Some("flag"), ""),
        (
            v.as_str(),
            "note = 'x'",
            Some("note IS NULL"),
            ", parallel => 2",
        ),
        (k.as_str(), "note = 'y'", Some("flag"), ", parallel => 2"),
        (p.as_str(), "note = 'p'", Some("flag"), ", parallel => 2"),
    ] {
        let link = if superuser {
            format!(", migration => ARRAY['{prefix}', 'b_{}']", jobs.len())
        } else {
            String::new()
        };
        match c.query_one(
            &format!("SELECT migrate_backfill('{table}', $1, $2, batch_size => 50{link}{slices})"),
            &[&set, &filter],
        ) {
            Ok(r) => jobs.push(r.get::<_, i64>(0)),
            Err(e) => problems.push(format!("backfill of {table}: {}", common::message(&e))),
        }
        run(
            c,
            &mut problems,
            &format!(
                "SELECT * FROM migrate_estimate('{table}', $${set}$$, $${}$$, sample_rows => 100)",
                filter.unwrap_or("true")
            ),
        );
    }
    for id in &jobs {
        let end = wait_end(admin, *id);
        if end != "succeeded" {
            let e: Option<String> = admin
                .query_one("SELECT error FROM pgmigrate.jobs WHERE job_id = $1", &[id])
                .map(|r| r.get(0))
                .unwrap_or(None);
            problems.push(format!("job {id} {end}: {e:?}"));
        }
    }
    // Column changes: one that succeeds, one that finds a NULL row (and
    // names it), one driven by CALL migrate_run.
    for (table, column, expected, session) in [
        (t.as_str(), "code", "succeeded", false),
        (t.as_str(), "gap", "failed", true),
        (v.as_str(), "note", "succeeded", true),
    ] {
        match c.query_one(
            "SELECT migrate_set_not_null($1::text::regclass, $2)",
            &[&table, &column],
        ) {
            Ok(r) => {
                let id: i64 = r.get(0);
                if session {
                    // A job that fails makes its CALL migrate_run fail too.
                    if let Err(e) = c.batch_execute(&format!("CALL migrate_run({id})")) {
                        if expected != "failed" {
                            problems
                                .push(format!("CALL migrate_run({id}): {}", common::message(&e)));
                        }
                    }
                }
                let end = wait_end(admin, id);
                if end != expected {
                    problems.push(format!("NOT NULL job {id} on {table}.{column}: {end}"));
                }
            }
            Err(e) => problems.push(format!(
                "migrate_set_not_null on {table}: {}",
                common::message(&e)
            )),
        }
    }
    // Constraints, chained by gates: a CHECK, a UNIQUE (an index job, then
    // the constraint), a PRIMARY KEY on a nullable column (a NOT NULL job,
    // an index job, the constraint), a FOREIGN KEY that waits for it (and,
    // as a superuser, for a migration), one driven by CALL migrate_run.
    let mut pk = None;
    for (table, definition, session) in [
        (t.as_str(), "CHECK (flag IS NOT NULL)".to_string(), true),
        (t.as_str(), "UNIQUE (code)".to_string(), false),
        (k.as_str(), "PRIMARY KEY (n)".to_string(), false),
        (
            k.as_str(),
            format!("FOREIGN KEY (n) REFERENCES {t} (id)"),
            false,
        ),
    ] {
        let gate = match (pk, superuser) {
            (Some(id), true) => format!(
                ", after_jobs => ARRAY[{id}::bigint], after_migration => ARRAY['{prefix}', '0001']"
            ),
            (Some(id), false) => format!(", after_jobs => ARRAY[{id}::bigint]"),
            _ => String::new(),
        };
        match c.query_one(
            &format!("SELECT migrate_add_constraint($1::text::regclass, $2{gate})"),
            &[&table, &definition],
        ) {
            Ok(r) => {
                let id: i64 = r.get(0);
                if definition.starts_with("PRIMARY") {
                    pk = Some(id);
                }
                if session {
                    run(c, &mut problems, &format!("CALL migrate_run({id})"));
                }
                let end = wait_end(admin, id);
                if end != "succeeded" {
                    let e: Option<String> = admin
                        .query_one("SELECT error FROM pgmigrate.jobs WHERE job_id = $1", &[&id])
                        .map(|r| r.get(0))
                        .unwrap_or(None);
                    problems.push(format!(
                        "constraint job {id} ({definition}) on {table}: {end}: {e:?}"
                    ));
                }
            }
            Err(e) => problems.push(format!(
                "migrate_add_constraint({table}, {definition}): {}",
                common::message(&e)
            )),
        }
    }
    // Type changes: a NOT NULL column with a default (driven by CALL
    // migrate_run, which hands the waits to the workers), a primary key held
    // after its cut-over then completed, one rolled back after its cut-over.
    for (table, column, to, complete, then) in [
        (t.as_str(), "n", "bigint", "auto", ""),
        (v.as_str(), "code", "text", "manual", "complete"),
        (k.as_str(), "note", "varchar(50)", "manual", "rollback"),
    ] {
        match c.query_one(
            "SELECT migrate_alter_type($1::text::regclass, $2, $3, complete => $4)",
            &[&table, &column, &to, &complete],
        ) {
            Ok(r) => {
                let id: i64 = r.get(0);
                if complete == "auto" {
                    let _ = c.batch_execute(&format!("CALL migrate_run({id})"));
                } else {
                    let held =
                        wait_until(&format!("job {id} held after its cut-over"), LONG, || {
                            let s = state(admin, id);
                            (s == "paused" || matches!(s.as_str(), "failed" | "cancelled"))
                                .then_some(s)
                        });
                    if held != "paused" {
                        problems.push(format!("type change job {id} on {table}.{column}: {held}"));
                        continue;
                    }
                    run(c, &mut problems, &format!("SELECT migrate_{then}({id})"));
                }
                let end = wait_end(admin, id);
                if end != "succeeded" {
                    let e: Option<String> = admin
                        .query_one("SELECT error FROM pgmigrate.jobs WHERE job_id = $1", &[&id])
                        .map(|r| r.get(0))
                        .unwrap_or(None);
                    problems.push(format!(
                        "type change job {id} ({column} to {to}) on {table}: {end}: {e:?}"
                    ));
                }
            }
            Err(e) => problems.push(format!(
                "migrate_alter_type({table}, {column}): {}",
                common::message(&e)
            )),
        }
    }
    // Control, CALL migrate_run and migrate_wait.
    for table in [&t, &v] {
        let id: i64 = match c.query_one(
            &format!(
                "SELECT migrate_backfill('{table}', 'note = ''z''', batch_size => 50,
                                         run_at => '2100-01-01')"
            ),
            &[],
        ) {
            Ok(r) => r.get(0),
            Err(e) => {
                problems.push(format!("backfill of {table}: {}", common::message(&e)));
                continue;
            }
        };
        run(
            c,
            &mut problems,
            &format!(
            "SELECT migrate_pause({id}); SELECT migrate_resume({id}); SELECT migrate_pause({id});
             SELECT migrate_cancel({id}); SELECT migrate_retry({id}); SELECT migrate_pause({id});"
        ),
        );
        run(c, &mut problems, &format!("CALL migrate_run({id})"));
        run(c, &mut problems, &format!("CALL migrate_wait({id})"));
    }
    // Index jobs.
    for sql in [
        format!("SELECT migrate_create_index('CREATE INDEX {prefix}_code_idx ON {t} (code) WHERE code IS NOT NULL')"),
        format!("SELECT migrate_reindex('public.{prefix}_code_idx')"),
        format!("SELECT migrate_drop_index('public.{prefix}_code_idx')"),
        // A partitioned table's: statements pg_migrate writes itself.
        format!("SELECT migrate_create_index('CREATE INDEX {prefix}_parts_idx ON public.{prefix}_parts (lower(note), id) WHERE note IS NOT NULL')"),
        format!("SELECT migrate_reindex('public.{prefix}_parts_idx')"),
        format!("SELECT migrate_drop_index('public.{prefix}_parts_idx')"),
    ] {
        match c.query_one(&sql, &[]) {
            Ok(r) => {
                let id: i64 = r.get(0);
                let end = wait_end(admin, id);
                if end != "succeeded" {
                    problems.push(format!("{sql}: job {id} {end}"));
                }
            }
            Err(e) => problems.push(format!("{sql}: {}", common::message(&e))),
        }
    }
    // Lock risk.
    let script = format!(
        "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS z int;
         ALTER TABLE {t} ALTER COLUMN code TYPE varchar(30);
         ALTER TABLE {t} ADD CONSTRAINT {prefix}_note_chk CHECK (note IS NOT NULL) NOT VALID;
         ALTER TABLE {v} ALTER COLUMN note SET NOT NULL;
         UPDATE {t} SET note = NULL WHERE flag"
    );
    run(
        c,
        &mut problems,
        &format!(
            "SELECT * FROM migrate_analyze($${script}$$);
         SELECT * FROM migrate_trace($${script}$$);
         SELECT migrate_unplan(migrate_plan($${script}$$, 'n'));
         SELECT * FROM migrate_blockers('{t}');"
        ),
    );
    let link = if superuser {
        format!(", migration => ARRAY['{prefix}', 'exec']")
    } else {
        String::new()
    };
    run(
        c,
        &mut problems,
        &format!("CALL migrate_exec($${script}$${link})"),
    );
    // Every view the extension has (read from the catalog, so a new one is
    // not missed).
    let views: Vec<String> = admin
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c
               JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
              WHERE c.relkind = 'v'
                AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_migrate')
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(views.len() >= 10, "the extension's views: {views:?}");
    for view in views {
        run(c, &mut problems, &format!("SELECT * FROM {view}"));
    }
    problems
}

#[test]
fn no_trojan_on_the_search_path_runs_for_any_function_view_or_job() {
    let (mut ops, mut calls) = (BTreeSet::new(), BTreeSet::new());
    for (_, text) in sources() {
        let (o, f) = used(&text);
        ops.extend(o);
        calls.extend(f);
    }
    let cluster = Cluster::start("trojan");
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE DATABASE trojan").unwrap();
    admin
        .batch_execute("CREATE ROLE mallory LOGIN; CREATE ROLE alice LOGIN;")
        .unwrap();
    let mut c = cluster.connect("trojan");
    c.batch_execute(
        "CREATE EXTENSION pg_migrate;
         CREATE SCHEMA trojan AUTHORIZATION mallory;
         GRANT USAGE ON SCHEMA trojan TO PUBLIC;
         GRANT CREATE, USAGE ON SCHEMA public TO alice;",
    )
    .unwrap();
    let plant = plant_sql(&mut c, &ops, &calls);
    // Mallory plants them: an ordinary role, in its own schema.  A few
    // signatures cannot be copied (reserved names, odd types); they are
    // counted, not fatal.
    let mut mallory = Client::connect(
        &cluster
            .url("trojan")
            .replace("user=postgres", "user=mallory"),
        NoTls,
    )
    .unwrap();
    let mut planted = 0;
    let mut refused = vec![];
    for one in &plant {
        match mallory.batch_execute(one) {
            Ok(()) => planted += 1,
            Err(e) => refused.push(format!(
                "{}: {}",
                common::message(&e),
                one.lines().next().unwrap_or("")
            )),
        }
    }
    println!(
        "planted {planted} trojans; {} could not be planted",
        refused.len()
    );
    for r in refused.iter().take(10) {
        println!("  {r}");
    }
    assert!(
        planted >= 50 && ops.contains("=") && calls.contains("count"),
        "found {planted} trojans to plant from {} operators and {} names",
        ops.len(),
        calls.len()
    );
    // The trojans are live: a plain query on this search_path runs one.
    c.batch_execute("SET search_path = trojan, pg_catalog, public; SELECT 1 = 1;")
        .unwrap();
    assert!(
        !trojans_that_ran(&cluster).is_empty(),
        "the planted trojans must be able to run"
    );
    c.batch_execute("RESET search_path").unwrap();
    let before = trojans_that_ran(&cluster);

    // The superuser and alice work with the trojan schema first.
    c.batch_execute("ALTER ROLE postgres SET search_path = trojan, pg_catalog, public")
        .unwrap();
    c.batch_execute("ALTER ROLE alice SET search_path = trojan, pg_catalog, public")
        .unwrap();
    let mut su = cluster.connect("trojan");
    tables(&mut su, "su");
    let mut alice = Client::connect(
        &cluster.url("trojan").replace("user=postgres", "user=alice"),
        NoTls,
    )
    .unwrap();
    tables(&mut alice, "alice");
    let mut watcher = cluster.connect("trojan");
    watcher
        .batch_execute("SET search_path = pg_catalog")
        .unwrap();
    let mut problems = drive(&mut su, &mut watcher, "su", true);
    problems.extend(drive(&mut alice, &mut watcher, "alice", false));

    let ran: Vec<String> = trojans_that_ran(&cluster)
        .into_iter()
        .filter(|t| !before.contains(t))
        .collect();
    assert!(
        problems.is_empty() && ran.is_empty(),
        "driving the extension failed:\n{}\n\n{} trojans ran ({} planted):\n{}",
        problems.join("\n"),
        ran.len(),
        planted,
        ran.join("\n")
    );
}

/// The SQL of `text` with comments and string literals blanked and each
/// function body marked: (text to check, whether it is a body that runs
/// under a pinned search_path).  Bodies of functions and procedures that
/// carry `SET search_path = pg_catalog, pg_temp` are resolved at each call
/// under that path; everything else (views, defaults, checks, index
/// predicates, procedures that commit) is resolved where it is created or
/// called, so it must name every operator and function by schema.
fn install_pieces(text: &str) -> Vec<(String, bool)> {
    let b: Vec<char> = text.chars().collect();
    let mut statements: Vec<Vec<(String, bool)>> = vec![vec![(String::new(), false)]];
    let mut i = 0;
    let push = |st: &mut Vec<Vec<(String, bool)>>, c: char| {
        st.last_mut().unwrap().last_mut().unwrap().0.push(c)
    };
    while i < b.len() {
        let c = b[i];
        if c == '-' && b.get(i + 1) == Some(&'-') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
            continue;
        }
        if c == '\'' {
            i += 1;
            while i < b.len() {
                if b[i] == '\'' && b.get(i + 1) == Some(&'\'') {
                    i += 2;
                    continue;
                }
                if b[i] == '\'' {
                    break;
                }
                i += 1;
            }
            i += 1;
            push(&mut statements, '\'');
            push(&mut statements, '\'');
            continue;
        }
        if c == '$' {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_alphanumeric() || b[j] == '_') {
                j += 1;
            }
            if b.get(j) == Some(&'$') {
                let tag: String = b[i..=j].iter().collect();
                let rest: String = b[j + 1..].iter().collect();
                let end = rest.find(&tag).expect("closed dollar quote");
                // The body: a piece of its own, linted after it is known
                // whether its statement pins search_path.
                let st = statements.last_mut().unwrap();
                st.push((rest[..end].to_string(), true));
                st.push((String::new(), false));
                i = j + 1 + rest[..end].chars().count() + tag.chars().count();
                continue;
            }
        }
        if c == ';' {
            statements.push(vec![(String::new(), false)]);
            i += 1;
            continue;
        }
        push(&mut statements, c);
        i += 1;
    }
    let mut out = vec![];
    for st in statements {
        let header: String = st
            .iter()
            .filter(|p| !p.1)
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let pinned = header.contains("SET search_path = pg_catalog, pg_temp");
        for (piece, body) in st {
            if body {
                // A body is SQL too: blank its own comments and literals.
                for (inner, _) in install_pieces(&piece) {
                    out.push((inner, pinned));
                }
            } else {
                out.push((piece, false));
            }
        }
    }
    out
}

/// Every operator, call or keyword of `sql` that PostgreSQL resolves by
/// name on the search_path without a schema.
fn unqualified(sql: &str) -> Vec<String> {
    const OP: &str = "+-*/<>=~!@#%^&|`?";
    // Words followed by "(" that are syntax, not a function looked up by
    // name (or a definition that names its own object).
    const SYNTAX: &[&str] = &[
        "coalesce",
        "greatest",
        "least",
        "exists",
        "any",
        "all",
        "array",
        "values",
        "row",
        "cast",
        "filter",
        "over",
        "check",
        "unique",
        "key",
        "references",
        "on",
        "as",
        "and",
        "or",
        "not",
        "returns",
        "table",
        "numeric",
        "varchar",
        "char",
        "character",
        "decimal",
        "interval",
        "timestamp",
        "time",
        "select",
        "from",
        "where",
        "with",
        "setof",
        "if",
        "elsif",
        "exception",
        "while",
        "loop",
        "return",
        "perform",
        "then",
        "else",
        "when",
        "case",
        "operator",
        "by",
        "into",
        "partition",
        "constraint",
        "lateral",
        "join",
        "default",
    ];
    let c: Vec<char> = sql.chars().collect();
    let mut problems = vec![];
    let words_before = |i: usize| -> String {
        let s: String = c[..i].iter().collect();
        s.trim_end().to_lowercase()
    };
    let mut i = 0;
    while i < c.len() {
        if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if OP.contains(c[i]) {
            let start = i;
            while i < c.len() && OP.contains(c[i]) {
                i += 1;
            }
            let op: String = c[start..i].iter().collect();
            let before = words_before(start);
            let ok = before.ends_with("operator(pg_catalog.")
                || (op == "=" && before.ends_with(':'))
                || op == "=>"
                || (op == "="
                    && ["search_path", "errcode", "hint", "detail", "message"]
                        .iter()
                        .any(|w| before.ends_with(w)))
                || (op == "*"
                    && (before.ends_with('(')
                        || before.ends_with('.')
                        || before.ends_with("select")
                        || before.ends_with(',')));
            if !ok {
                problems.push(format!("operator {op} after \"…{}\"", tail(&before)));
            }
            continue;
        }
        if c[i].is_alphabetic() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect::<String>().to_lowercase();
            let before = words_before(start);
            let qualified = before.ends_with('.');
            let mut j = i;
            while j < c.len() && c[j].is_whitespace() {
                j += 1;
            }
            let next = c.get(j).copied();
            let defining = ["function", "procedure", "aggregate"]
                .iter()
                .any(|w| before.ends_with(w));
            if next == Some('(') && !qualified && !defining && !SYNTAX.contains(&word.as_str()) {
                problems.push(format!("call {word}( after \"…{}\"", tail(&before)));
            }
            // Constructs that look an operator up by name.
            let rest: String = c[i..].iter().take(12).collect::<String>().to_lowercase();
            let by_name = match word.as_str() {
                "between" | "like" | "ilike" | "similar" | "nullif" => true,
                "in" => next == Some('('),
                "using" => next == Some('('),
                "distinct" => rest.trim_start().starts_with("from"),
                "case" => !rest.trim_start().starts_with("when"),
                _ => false,
            };
            if by_name {
                problems.push(format!(
                    "{} after \"…{}\"",
                    word.to_uppercase(),
                    tail(&before)
                ));
            }
            continue;
        }
        i += 1;
    }
    problems
}

fn tail(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    chars[chars.len().saturating_sub(60)..]
        .iter()
        .collect::<String>()
        .replace('\n', " ")
}

/// The install script is safe where others may create objects: what it
/// creates resolves operators and functions at install time (views,
/// defaults, checks, index predicates) or at call time without a pinned
/// search_path (procedures that commit), so each is named by schema; a
/// role that planted look-alikes in the schema the extension is created
/// in would otherwise have them bound into views that run as their owner.
#[test]
fn the_install_script_names_every_operator_and_function_by_schema() {
    let mut problems = vec![];
    let mut checked = 0;
    for entry in std::fs::read_dir(project_root().join("sql")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "sql") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (piece, pinned) in install_pieces(&text) {
            if pinned {
                continue;
            }
            checked += piece.len();
            for p in unqualified(&piece) {
                problems.push(format!(
                    "{}: {p}",
                    path.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    assert!(checked > 10_000, "read only {checked} characters of SQL");
    assert!(
        problems.is_empty(),
        "{} unqualified names:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The lint above finds what it must: each construct PostgreSQL resolves
/// by name is reported, each qualified form passes.
#[test]
fn the_install_lint_knows_each_construct() {
    for bad in [
        "SELECT a = b",
        "SELECT x || 'y'",
        "SELECT count(*)",
        "SELECT now()",
        "SELECT a IN ('x')",
        "SELECT a BETWEEN 1 AND 2",
        "SELECT a IS DISTINCT FROM b",
        "SELECT nullif(a, 0)",
        "SELECT CASE a WHEN 1 THEN 2 END",
        "SELECT * FROM t JOIN u USING (id)",
        "SELECT j.spec->>'x'",
        "SELECT a LIKE 'x'",
    ] {
        let found: Vec<String> = install_pieces(bad)
            .into_iter()
            .flat_map(|(p, _)| unqualified(&p))
            .collect();
        assert!(!found.is_empty(), "not reported: {bad}");
    }
    for good in [
        "SELECT a OPERATOR(pg_catalog.=) b",
        "SELECT pg_catalog.count(*), t.*",
        "SELECT a OPERATOR(pg_catalog.=) ANY (ARRAY['x']::pg_catalog.text[])",
        "SELECT CASE WHEN a THEN 1 END, coalesce(a, b), greatest(a, b)",
        "SELECT 'a = b -- not code', \"weird=name\" -- a = b",
        "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT a + 1 $$",
    ] {
        let found: Vec<String> = install_pieces(good).into_iter().filter(|p| !p.1).flat_map(|(p, _)| unqualified(&p)).collect();
        assert!(found.is_empty(), "reported in {good}: {found:?}");
    }
}
