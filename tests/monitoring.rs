//! The monitoring pack, for real: Debian's prometheus-postgres-exporter
//! with monitoring/postgres_exporter/queries.yaml and prometheus-sql-exporter
//! with its configuration scrape a server with jobs running, failed, stuck
//! behind an old transaction and recurring; the metrics carry the values the
//! database has; promtool checks the alert rules, and `promtool test rules`
//! on the scraped series shows the failed job and the stuck job firing
//! their alerts.

mod common;

use common::{project_root, wait_until, Cluster};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The samples of metrics whose name starts with `prefix`: full series
/// (name and labels) to value.
fn samples(text: &str, prefix: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The one sample of `name` whose labels include all of `labels`.
fn one(s: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> (String, f64) {
    let found: Vec<_> = s
        .iter()
        .filter(|(k, _)| {
            k.starts_with(&format!("{name}{{")) && labels.iter().all(|l| k.contains(l))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?} in {s:#?}");
    (found[0].0.clone(), *found[0].1)
}

fn job(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[test]
fn exporters_scrape_the_right_values_and_the_alert_rules_fire_on_them() {
    let cluster = Cluster::start_with("monitoring", &["pg_migrate.max_workers=4"]);
    let mut c = cluster.create_db("mon");
    c.batch_execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, s text);
         INSERT INTO t (id) SELECT g FROM generate_series(1, 20000) g;
         CREATE TABLE v (id bigint PRIMARY KEY, s text);
         ANALYZE t;",
    )
    .unwrap();
    let failed = job(&mut c, "SELECT migrate_backfill('t', 'n = n / (id - id)')");
    wait_until("the failing job to fail", Duration::from_secs(60), || {
        let s: String = c
            .query_one(
                "SELECT state FROM migrate_progress WHERE job_id = $1",
                &[&failed],
            )
            .unwrap()
            .get(0);
        (s == "failed").then_some(())
    });
    let running = job(
        &mut c,
        "SELECT migrate_backfill('t', 'n = n + 1', batch_size => 100, max_rows_per_second => 200)",
    );
    // An index build held up by an old transaction: stuck.
    let mut old = cluster.connect("mon");
    old.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM v")
        .unwrap();
    let stuck = job(
        &mut c,
        "SELECT migrate_create_index('CREATE INDEX v_s_idx ON v (s)')",
    );
    let recurring = job(
        &mut c,
        "SELECT migrate_reindex('t_pkey', schedule => '0 3 * * 0')",
    );
    wait_until(
        "the build to wait for the old transaction",
        Duration::from_secs(60),
        || {
            let r: Option<String> = c
                .query_one(
                    "SELECT wait_reason FROM migrate_progress WHERE job_id = $1",
                    &[&stuck],
                )
                .unwrap()
                .get(0);
            r.filter(|r| r.starts_with("the build waits for"))
                .map(|_| ())
        },
    );

    // postgres_exporter with the pack's queries file.
    let port = free_port();
    let queries = project_root().join("monitoring/postgres_exporter/queries.yaml");
    let _pe = Exporter(
        Command::new("prometheus-postgres-exporter")
            .env(
                "DATA_SOURCE_NAME",
                format!(
                    "postgresql://postgres@127.0.0.1:{}/mon?sslmode=disable",
                    cluster.port
                ),
            )
            .args([
                &format!("--extend.query-path={}", queries.display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--disable-default-metrics",
                "--disable-settings-metrics",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-postgres-exporter (scripts/setup.sh installs it)"),
    );
    let text = wait_until(
        "postgres_exporter to serve pg_migrate's metrics",
        Duration::from_secs(60),
        || scrape(port).filter(|t| t.contains("pg_migrate_job_rows_done{")),
    );
    let s = samples(&text, "pg_migrate_");
    let rows_done: i64 = c
        .query_one(
            "SELECT rows_done FROM migrate_progress WHERE job_id = $1",
            &[&running],
        )
        .unwrap()
        .get(0);
    let (_, scraped) = one(
        &s,
        "pg_migrate_job_rows_done",
        &[&format!("job_id=\"{running}\""), "kind=\"backfill\""],
    );
    assert!(
        scraped > 0.0 && scraped <= rows_done as f64 && scraped <= 20000.0,
        "rows_done {scraped} (now {rows_done})"
    );
    let (_, total) = one(
        &s,
        "pg_migrate_job_rows_total",
        &[&format!("job_id=\"{running}\"")],
    );
    let db_total: i64 = c
        .query_one(
            "SELECT rows_total FROM migrate_progress WHERE job_id = $1",
            &[&running],
        )
        .unwrap()
        .get(0);
    assert_eq!(total, db_total as f64);
    assert_eq!(
        one(
            &s,
            "pg_migrate_ended_jobs",
            &["kind=\"backfill\"", "state=\"failed\""]
        )
        .1,
        1.0
    );
    assert_eq!(
        one(
            &s,
            "pg_migrate_ended_jobs_last_hour",
            &["kind=\"backfill\"", "state=\"failed\""]
        )
        .1,
        1.0
    );
    let (stuck_series, idle) = one(
        &s,
        "pg_migrate_job_idle_seconds",
        &[
            &format!("job_id=\"{stuck}\""),
            "kind=\"create_index\"",
            "state=\"running\"",
        ],
    );
    assert!(idle >= 0.0);
    assert_eq!(
        one(
            &s,
            "pg_migrate_recurring_last_success_timestamp",
            &[&format!("job_id=\"{recurring}\"")]
        )
        .1,
        0.0
    );
    // The index being built is invalid until it is done, but not left behind.
    assert_eq!(one(&s, "pg_migrate_database_invalid_indexes", &[]).1, 0.0);
    assert_eq!(
        one(&s, "pg_migrate_database_migrations_running", &[]).1,
        0.0
    );
    // Labels stay few: one series per metric for each active job.
    let active: i64 = c
        .query_one("SELECT count(*) FROM migrate_progress WHERE parent_job IS NULL AND state IN ('queued', 'running', 'waiting', 'paused')", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        s.keys()
            .filter(|k| k.starts_with("pg_migrate_job_rows_done{"))
            .count() as i64,
        active
    );

    // promtool: the rules are valid, and on these series the failed job
    // and the stuck build fire their alerts.
    let rules = project_root().join("monitoring/prometheus/alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (failed_series, _) = one(&s, "pg_migrate_ended_jobs_last_hour", &["state=\"failed\""]);
    let with_target = |series: &str| series.replacen('{', "{instance=\"db:9187\",job=\"pg\",", 1);
    let stuck_labels = with_target(&stuck_series);
    let stuck_exp: String = stuck_labels
        [stuck_labels.find('{').unwrap() + 1..stuck_labels.len() - 1]
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            format!("{k}: {v}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let test = format!(
        "rule_files: ['{rules}']
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: '{failed}'
        values: '1x30'
      - series: '{stuck}'
        values: '{idle}+60x30'
    alert_rule_test:
      - eval_time: 2m
        alertname: PgMigrateJobFailed
        exp_alerts:
          - exp_labels: {{severity: warning, instance: 'db:9187', kind: backfill}}
            exp_annotations:
              summary: 'a pg_migrate backfill job failed on db:9187'
              description: \"SELECT job_id, error FROM migrate_progress WHERE state = 'failed' says why; migrate_retry(job) runs it again once fixed.\"
      - eval_time: 10m
        alertname: PgMigrateJobStuck
        exp_alerts: []
      - eval_time: 25m
        alertname: PgMigrateJobStuck
        exp_alerts:
          - exp_labels: {{severity: warning, {stuck_exp}}}
            exp_annotations:
              summary: 'pg_migrate job {stuck_id} (create_index of public.v) has made no progress for 15 minutes'
              description: 'migrate_progress.wait_reason and phase say what it waits for (an old transaction, a lock).'
",
        rules = rules.display(),
        failed = with_target(&failed_series),
        stuck = stuck_labels,
        idle = idle.floor(),
        stuck_id = stuck,
    );
    let file = cluster.dir.join("alerts_test.yml");
    std::fs::write(&file, test).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The Grafana dashboard's queries are valid PromQL (promtool checks
    // each as a recording rule) and use only metrics the exporter served.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project_root().join("monitoring/grafana/pg_migrate.json"))
            .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().replace("$instance", ".*"))
        })
        .collect();
    assert_eq!(exprs.len(), 11);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        for name in e
            .split(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
            .filter(|w| w.starts_with("pg_migrate_"))
        {
            assert!(
                text.contains(&format!("{name}{{")),
                "the dashboard uses {name}, which the exporter does not serve"
            );
        }
        rules.push_str(&format!(
            "      - record: dashboard_{i}\n        expr: '{}'\n",
            e.replace('\'', "''")
        ));
    }
    let file = cluster.dir.join("dashboard_rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dashboard queries: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Debian's prometheus-sql-exporter with the pack's configuration.
    let port = free_port();
    let config = std::fs::read_to_string(
        project_root().join("monitoring/sql_exporter/prometheus-sql-exporter.yml"),
    )
    .unwrap()
    .replace(
        "postgres://monitor@127.0.0.1:5432/appdb",
        &format!("postgres://postgres@127.0.0.1:{}/mon", cluster.port),
    );
    let config_file = cluster.dir.join("sql-exporter.yml");
    std::fs::write(&config_file, config).unwrap();
    let _se = Exporter(
        Command::new("prometheus-sql-exporter")
            .arg("-config.file")
            .arg(&config_file)
            .args(["-web.listen-address", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-sql-exporter (scripts/setup.sh installs it)"),
    );
    let text = wait_until(
        "sql_exporter to serve pg_migrate's metrics",
        Duration::from_secs(60),
        || scrape(port).filter(|t| t.contains("sql_pg_migrate_ended{")),
    );
    let s = samples(&text, "sql_pg_migrate_");
    assert_eq!(
        one(
            &s,
            "sql_pg_migrate_ended",
            &["col=\"jobs\"", "state=\"failed\""]
        )
        .1,
        1.0
    );
    assert_eq!(
        one(
            &s,
            "sql_pg_migrate_job",
            &["col=\"rows_total\"", &format!("job_id=\"{running}\"")]
        )
        .1,
        db_total as f64
    );

    old.batch_execute("ROLLBACK").unwrap();
    c.batch_execute(&format!("SELECT migrate_cancel({running})"))
        .unwrap();
}
