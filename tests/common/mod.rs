//! Harness for the client integration tests: a private PostgreSQL cluster
//! per test, started through `scripts/cluster.sh` as the `postgres` OS user
//! with pg_migrate preloaded, and removed when the test ends (also when it
//! fails).  The extension must be installed first (`make install`).
#![allow(dead_code)]

pub mod corpus;

use postgres::{Client, NoTls};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn cluster_sh(args: &[&str]) -> std::process::Output {
    Command::new(project_root().join("scripts/cluster.sh"))
        .args(args)
        .output()
        .expect("run scripts/cluster.sh")
}

pub struct Cluster {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// A new cluster with the harness defaults.
    pub fn start(name: &str) -> Cluster {
        Self::start_with(name, &[])
    }

    /// A new cluster with extra `name=value` settings.
    pub fn start_with(name: &str, settings: &[&str]) -> Cluster {
        let dir = project_root()
            .join("target/it-clusters")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self::boot(name, dir, settings)
    }

    fn boot(name: &str, dir: PathBuf, settings: &[&str]) -> Cluster {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let port_s = port.to_string();
            let mut args = vec!["start", dir.to_str().unwrap(), &port_s, "fsync=off"];
            args.extend_from_slice(settings);
            let out = cluster_sh(&args);
            if out.status.success() {
                return Cluster {
                    name: name.to_string(),
                    dir,
                    port,
                };
            }
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!("could not start cluster {name}: {last}");
    }

    /// A streaming hot standby of `primary`, from pg_basebackup.
    pub fn standby_of(primary: &Cluster, name: &str, settings: &[&str]) -> Cluster {
        let dir = project_root()
            .join("target/it-clusters")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("chown")
            .arg("postgres:")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        let data = dir.join("data");
        let out = Command::new("sudo")
            .args([
                "-u",
                "postgres",
                &format!("{PG_BIN}/pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args([
                "-p",
                &primary.port.to_string(),
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::boot(name, dir, settings)
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} application_name=pg_migrate_it",
            self.port
        )
    }

    pub fn connect(&self, db: &str) -> Client {
        let url = self.url(db);
        wait_until(
            &format!("a connection to {db}"),
            Duration::from_secs(30),
            || Client::connect(&url, NoTls).ok(),
        )
    }

    /// Create database `db` with the extension and connect to it.
    pub fn create_db(&self, db: &str) -> Client {
        let mut admin = self.connect("postgres");
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
        let mut c = self.connect(db);
        c.batch_execute("CREATE EXTENSION pg_migrate").unwrap();
        c
    }

    /// Restart the server; `mode` is fast or immediate (a crash).
    pub fn restart(&self, mode: &str) {
        let out = cluster_sh(&["restart", self.dir.to_str().unwrap(), mode]);
        assert!(
            out.status.success(),
            "restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run a PostgreSQL client program (pg_dump, pg_restore, ...) against
    /// this cluster; panics with its output when it fails.
    pub fn client_program(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(format!("{PG_BIN}/{program}"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kill -9 of backend `pid`, then wait until the postmaster has
    /// restarted every backend after the crash and accepts connections
    /// again (a connection made before it noticed would be cut).
    pub fn kill_9(&self, pid: i32) {
        let count = |log: &str| {
            (
                log.matches("all server processes terminated; reinitializing")
                    .count(),
                log.matches("database system is ready to accept connections")
                    .count(),
            )
        };
        let (crashes, ready) = count(&self.log());
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -9 {pid}");
        wait_until(
            "the server to be back after the crash",
            Duration::from_secs(120),
            || {
                let (c, r) = count(&self.log());
                (c > crashes && r > ready).then_some(())
            },
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {} server.log ---", self.name);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        cluster_sh(&["destroy", self.dir.to_str().unwrap()]);
    }
}

/// Poll `f` every 50 ms until it returns Some, or panic after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Check `f` every 50 ms for `window`; panic the first time it is false.
pub fn stays_for(what: &str, window: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        assert!(f(), "expected {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no sqlstate: {e}"))
}

/// The server's message for a failed statement.
pub fn message(e: &postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// Detail and hint of a failed statement, joined for matching.
pub fn detail_and_hint(e: &postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!("{} | {}", d.detail().unwrap_or(""), d.hint().unwrap_or("")))
        .unwrap_or_default()
}
