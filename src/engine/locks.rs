//! Lock risk as pure logic: PostgreSQL's table lock modes and which of them
//! conflict, what a mode blocks, how risky a statement is on a table of a
//! given size, and the safer recipes the analysis proposes.

use crate::engine::keyset::display_ident as quote_ident;

/// PostgreSQL's table lock modes, weakest first (their LOCKMODE numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    AccessShare = 1,
    RowShare = 2,
    RowExclusive = 3,
    ShareUpdateExclusive = 4,
    Share = 5,
    ShareRowExclusive = 6,
    Exclusive = 7,
    AccessExclusive = 8,
}

use LockMode::*;

const ALL: [LockMode; 8] = [
    AccessShare,
    RowShare,
    RowExclusive,
    ShareUpdateExclusive,
    Share,
    ShareRowExclusive,
    Exclusive,
    AccessExclusive,
];

impl LockMode {
    pub fn from_level(level: i32) -> Option<LockMode> {
        ALL.iter().copied().find(|m| *m as i32 == level)
    }

    pub fn level(self) -> i32 {
        self as i32
    }

    /// The name `pg_locks.mode` shows.
    pub fn name(self) -> &'static str {
        match self {
            AccessShare => "AccessShareLock",
            RowShare => "RowShareLock",
            RowExclusive => "RowExclusiveLock",
            ShareUpdateExclusive => "ShareUpdateExclusiveLock",
            Share => "ShareLock",
            ShareRowExclusive => "ShareRowExclusiveLock",
            Exclusive => "ExclusiveLock",
            AccessExclusive => "AccessExclusiveLock",
        }
    }

    /// The name LOCK TABLE takes.
    pub fn sql(self) -> &'static str {
        match self {
            AccessShare => "ACCESS SHARE",
            RowShare => "ROW SHARE",
            RowExclusive => "ROW EXCLUSIVE",
            ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            Share => "SHARE",
            ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            Exclusive => "EXCLUSIVE",
            AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// Either spelling, any case: `AccessExclusiveLock`, `ACCESS EXCLUSIVE`.
    pub fn from_name(s: &str) -> Option<LockMode> {
        let key: String = s
            .chars()
            .filter(|c| c.is_ascii_alphabetic())
            .collect::<String>()
            .to_ascii_lowercase();
        let key = key.strip_suffix("lock").unwrap_or(&key);
        ALL.iter().copied().find(|m| {
            m.sql()
                .chars()
                .filter(|c| c.is_ascii_alphabetic())
                .collect::<String>()
                .to_ascii_lowercase()
                == key
        })
    }

    /// PostgreSQL's conflict table (lock.c).
    pub fn conflicts_with(self, other: LockMode) -> bool {
        let (a, b) = (self.level(), other.level());
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        match lo {
            1 => hi == 8,
            2 => hi >= 7,
            3 => hi >= 5,
            4 => hi >= 4,
            5 => hi >= 6,
            _ => true,
        }
    }

    /// Does a session holding (or queued for) this mode stop plain SELECTs?
    pub fn blocks_reads(self) -> bool {
        self.conflicts_with(AccessShare)
    }

    /// ... and INSERT, UPDATE, DELETE?
    pub fn blocks_writes(self) -> bool {
        self.conflicts_with(RowExclusive)
    }
}

/// How much harm a statement can do to live traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Risk {
    None,
    Low,
    Medium,
    High,
}

impl Risk {
    pub fn name(self) -> &'static str {
        match self {
            Risk::None => "none",
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

/// What a statement does to one relation.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub mode: LockMode,
    pub rewrites: bool,
    pub scans: bool,
    /// UPDATE or DELETE: every row it changes stays locked until commit.
    pub locks_rows: bool,
    /// Created earlier in the same script (or by the statement): no other
    /// session can be using it.
    pub new_relation: bool,
    /// Estimated duration of the rewrite or scan under the lock.
    pub seconds: Option<f64>,
}

/// Rates the duration estimate assumes (MB/s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub rewrite_mb_per_second: f64,
    pub scan_mb_per_second: f64,
}

/// Estimated seconds of work under the lock: a rewrite copies the table
/// and rebuilds its indexes, a scan reads the table once.
pub fn estimate_seconds(
    table_bytes: i64,
    index_bytes: i64,
    rewrites: bool,
    scans: bool,
    rates: Rates,
) -> Option<f64> {
    let mb = |b: i64| b.max(0) as f64 / (1024.0 * 1024.0);
    if rewrites {
        Some((mb(table_bytes) + mb(index_bytes)) / rates.rewrite_mb_per_second.max(0.001))
    } else if scans {
        Some(mb(table_bytes) / rates.scan_mb_per_second.max(0.001))
    } else {
        None
    }
}

/// Above this many seconds of blocked traffic the risk is high.
pub const HIGH_SECONDS: f64 = 1.0;

/// The risk of an effect and a sentence saying why.
pub fn assess(e: &Effect) -> (Risk, String) {
    if e.new_relation {
        return (
            Risk::None,
            "The relation is created in this script: no other session uses it yet.".into(),
        );
    }
    let blocked = match (e.mode.blocks_reads(), e.mode.blocks_writes()) {
        (true, _) => "reads and writes",
        (false, true) => "writes",
        (false, false) => "",
    };
    let work = match (e.rewrites, e.scans) {
        (true, _) => "rewrites the table",
        (false, true) => "scans the table",
        _ => "",
    };
    let took = e
        .seconds
        .map(|s| {
            if s < 0.1 {
                format!(" ({})", seconds_text(s))
            } else {
                format!(" (about {})", seconds_text(s))
            }
        })
        .unwrap_or_default();
    if e.locks_rows {
        let risk = match e.seconds {
            Some(s) if s >= HIGH_SECONDS => Risk::High,
            _ => Risk::Medium,
        };
        return (
            risk,
            format!("Every row it changes stays locked until commit{took}: writers of those rows wait, and one long transaction bloats the table."),
        );
    }
    if blocked.is_empty() {
        if work.is_empty() {
            return (
                Risk::None,
                format!("{} blocks neither reads nor writes.", e.mode.sql()),
            );
        }
        return (
            Risk::Low,
            format!(
                "It {work}{took} under {}, which blocks neither reads nor writes (only other DDL and VACUUM).",
                e.mode.sql()
            ),
        );
    }
    if work.is_empty() {
        return (
            Risk::Low,
            format!(
                "{} blocks {blocked} only for a moment, but while it waits for older transactions every later query on the table queues behind it: run it with a short lock_timeout.",
                e.mode.sql()
            ),
        );
    }
    let risk = match e.seconds {
        Some(s) if s >= HIGH_SECONDS => Risk::High,
        _ => Risk::Medium,
    };
    (
        risk,
        format!(
            "It {work}{took} while holding {}, which blocks {blocked}.",
            e.mode.sql()
        ),
    )
}

/// "2.5 s", "14 min", "3.2 h".
pub fn seconds_text(s: f64) -> String {
    if s < 0.1 {
        "under 0.1 s".into()
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

use crate::error::literal as lit;

/// A name for a helper constraint, as PostgreSQL would truncate it.
pub fn helper_name(table: &str, column: &str, suffix: &str) -> String {
    let mut base = format!("{table}_{column}");
    let room = 63 - suffix.len() - 1;
    while base.len() > room {
        base.pop();
    }
    format!("{base}_{suffix}")
}

/// How to run a statement through migrate_exec.
pub fn exec_call(sql: &str) -> String {
    format!("CALL migrate_exec({}, lock_timeout => '2s');", lit(sql))
}

/// SET NOT NULL without scanning under ACCESS EXCLUSIVE.
pub fn recipe_not_null(table: &str, table_name: &str, column: &str) -> String {
    let c = helper_name(table_name, column, "not_null");
    let col = quote_ident(column);
    let con = quote_ident(&c);
    [
        format!(
            "SELECT migrate_set_not_null({}, {});  -- a job runs the four steps below, each under a short lock_timeout, and resumes after a crash; or by hand:",
            lit(table),
            lit(column)
        ),
        exec_call(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT {con} CHECK ({col} IS NOT NULL) NOT VALID"
        )),
        exec_call(&format!("ALTER TABLE {table} VALIDATE CONSTRAINT {con}")),
        exec_call(&format!("ALTER TABLE {table} ALTER COLUMN {col} SET NOT NULL")),
        exec_call(&format!("ALTER TABLE {table} DROP CONSTRAINT {con}")),
    ]
    .join("\n")
        + "\n-- VALIDATE scans under SHARE UPDATE EXCLUSIVE (reads and writes go on); SET NOT NULL then skips its scan because the valid CHECK proves it."
}

/// A column with a volatile default (or a generated value): add it plain,
/// set the default for new rows, backfill the old ones in batches.
pub fn recipe_add_column(
    table: &str,
    table_text: &str,
    column: &str,
    type_text: &str,
    default: Option<&str>,
    not_null: bool,
    table_name: &str,
) -> String {
    let col = quote_ident(column);
    let mut steps = vec![exec_call(&format!(
        "ALTER TABLE {table} ADD COLUMN {col} {type_text}"
    ))];
    if let Some(d) = default {
        steps.push(exec_call(&format!(
            "ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {d}"
        )));
        steps.push(format!(
            "SELECT migrate_backfill({}, {}, {});",
            lit(table_text),
            lit(&format!("{col} = {d}")),
            lit(&format!("{col} IS NULL"))
        ));
    }
    let mut text = steps.join("\n");
    if not_null {
        text.push_str("\n-- once the backfill is done:\n");
        text.push_str(&recipe_not_null(table, table_name, column));
    }
    text
}

/// A type change that rewrites: expand and contract, run by the server.
pub fn recipe_change_type(table_text: &str, column: &str, type_text: &str) -> String {
    [
        format!(
            "SELECT migrate_alter_type({}, {}, {});",
            lit(table_text),
            lit(column),
            lit(type_text)
        ),
        format!(
            "-- a job adds {} (kept in step by a trigger), backfills it, builds its indexes concurrently, swaps the columns in one short transaction under lock_timeout (primary key, default, foreign keys pointing at it carried over) and drops the old one; using_expr => '...' when a plain cast will not do.",
            quote_ident(&format!("{column}_pgm_new"))
        ),
        "-- migrate_progress shows its step; migrate_rollback(job) undoes it.".into(),
    ]
    .join("\n")
}

/// CHECK or FOREIGN KEY: add NOT VALID, validate separately.
pub fn recipe_not_valid(table: &str, add_constraint: &str, constraint: Option<&str>) -> String {
    let validate = match constraint {
        Some(c) => format!("ALTER TABLE {table} VALIDATE CONSTRAINT {}", quote_ident(c)),
        None => format!("ALTER TABLE {table} VALIDATE CONSTRAINT <its name>"),
    };
    let definition = add_constraint
        .strip_prefix("ADD ")
        .unwrap_or(add_constraint);
    [
        format!(
            "SELECT migrate_add_constraint({}, {});  -- a job adds it NOT VALID, then validates it, each step under a short lock_timeout, and resumes after a crash; or by hand:",
            lit(table),
            lit(definition)
        ),
        exec_call(&format!("ALTER TABLE {table} {add_constraint} NOT VALID")),
        exec_call(&validate),
    ]
    .join("\n")
        + "\n-- NOT VALID takes its lock for a moment; VALIDATE scans under SHARE UPDATE EXCLUSIVE, so reads and writes go on."
}

/// PRIMARY KEY / UNIQUE: build the index concurrently, then attach it.
/// `definition`: the constraint as migrate_add_constraint takes it.
pub fn recipe_using_index(
    table: &str,
    index_name: &str,
    unique_sql: &str,
    add_constraint: &str,
    definition: &str,
) -> String {
    [
        format!(
            "SELECT migrate_add_constraint({}, {});  -- jobs build the unique index concurrently (a primary key's nullable columns made NOT NULL first), then add the constraint on it; or by hand:",
            lit(table),
            lit(definition)
        ),
        format!("SELECT migrate_create_index({});", lit(unique_sql)),
        exec_call(&format!(
            "ALTER TABLE {table} ADD {add_constraint} USING INDEX {}",
            quote_ident(index_name)
        )),
    ]
    .join("\n")
        + "\n-- the build blocks no writes; attaching the finished index takes its lock for a moment."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_follow_postgres_table() {
        // Rows of PostgreSQL's documented conflict table, as sets of levels.
        let table: [&[i32]; 8] = [
            &[8],
            &[7, 8],
            &[5, 6, 7, 8],
            &[4, 5, 6, 7, 8],
            &[3, 4, 6, 7, 8],
            &[3, 4, 5, 6, 7, 8],
            &[2, 3, 4, 5, 6, 7, 8],
            &[1, 2, 3, 4, 5, 6, 7, 8],
        ];
        for (i, row) in table.iter().enumerate() {
            let a = LockMode::from_level(i as i32 + 1).unwrap();
            for b in ALL {
                assert_eq!(
                    a.conflicts_with(b),
                    row.contains(&b.level()),
                    "{a:?} vs {b:?}"
                );
                assert_eq!(a.conflicts_with(b), b.conflicts_with(a));
            }
        }
    }

    #[test]
    fn what_modes_block() {
        assert!(AccessExclusive.blocks_reads());
        assert!(!Exclusive.blocks_reads() && Exclusive.blocks_writes());
        assert!(Share.blocks_writes() && !Share.blocks_reads());
        assert!(!ShareUpdateExclusive.blocks_writes());
        assert!(!RowExclusive.blocks_writes());
    }

    #[test]
    fn names_both_ways() {
        for m in ALL {
            assert_eq!(LockMode::from_name(m.name()), Some(m));
            assert_eq!(LockMode::from_name(m.sql()), Some(m));
            assert_eq!(LockMode::from_name(&m.sql().to_lowercase()), Some(m));
        }
        assert_eq!(LockMode::from_name("exclusive"), Some(Exclusive));
        assert_eq!(LockMode::from_name("share"), Some(Share));
        assert_eq!(LockMode::from_name("bogus"), None);
    }

    fn effect(mode: LockMode, rewrites: bool, scans: bool, seconds: Option<f64>) -> Effect {
        Effect {
            mode,
            rewrites,
            scans,
            locks_rows: false,
            new_relation: false,
            seconds,
        }
    }

    #[test]
    fn risk_levels() {
        assert_eq!(
            assess(&effect(AccessShare, false, false, None)).0,
            Risk::None
        );
        assert_eq!(
            assess(&effect(ShareUpdateExclusive, false, true, Some(30.0))).0,
            Risk::Low
        );
        assert_eq!(
            assess(&effect(AccessExclusive, false, false, None)).0,
            Risk::Low
        );
        assert_eq!(
            assess(&effect(AccessExclusive, true, false, Some(0.2))).0,
            Risk::Medium
        );
        let (r, why) = assess(&effect(AccessExclusive, true, false, Some(120.0)));
        assert_eq!(r, Risk::High);
        assert!(why.contains("rewrites the table (about 2 min)"), "{why}");
        assert!(why.contains("blocks reads and writes"), "{why}");
        let (r, why) = assess(&effect(Share, false, true, Some(5.0)));
        assert_eq!(r, Risk::High);
        assert!(why.contains("blocks writes"), "{why}");
        let mut new = effect(AccessExclusive, true, false, Some(100.0));
        new.new_relation = true;
        assert_eq!(assess(&new).0, Risk::None);
    }

    #[test]
    fn estimates() {
        let r = Rates {
            rewrite_mb_per_second: 100.0,
            scan_mb_per_second: 400.0,
        };
        let gb = 1024 * 1024 * 1024;
        assert_eq!(estimate_seconds(gb, 0, true, false, r), Some(10.24));
        assert_eq!(estimate_seconds(gb, gb, true, true, r), Some(20.48));
        assert_eq!(estimate_seconds(gb, gb, false, true, r), Some(2.56));
        assert_eq!(estimate_seconds(gb, 0, false, false, r), None);
        assert_eq!(seconds_text(0.01), "under 0.1 s");
        assert_eq!(seconds_text(90.0), "2 min");
    }

    #[test]
    fn recipes_name_the_objects() {
        let r = recipe_not_null("public.orders", "orders", "amount");
        assert!(r.contains(
            "ADD CONSTRAINT orders_amount_not_null CHECK (amount IS NOT NULL) NOT VALID"
        ));
        assert!(r.contains("VALIDATE CONSTRAINT orders_amount_not_null"));
        assert!(r.contains("ALTER COLUMN amount SET NOT NULL"));
        assert_eq!(r.matches("CALL migrate_exec(").count(), 4);
        assert!(r.starts_with("SELECT migrate_set_not_null('public.orders', 'amount');"));
        let long = "x".repeat(70);
        assert!(helper_name(&long, "c", "not_null").len() <= 63);
        let a = recipe_add_column(
            "orders",
            "orders",
            "token",
            "uuid",
            Some("gen_random_uuid()"),
            true,
            "orders",
        );
        assert!(
            a.contains(
                "SELECT migrate_backfill('orders', 'token = gen_random_uuid()', 'token IS NULL');"
            ),
            "{a}"
        );
        assert!(a.contains("SET NOT NULL"));
        let t = recipe_change_type("orders", "left", "bigint");
        assert!(
            t.starts_with("SELECT migrate_alter_type('orders', 'left', 'bigint');"),
            "{t}"
        );
        assert!(t.contains("adds left_pgm_new"), "{t}");
        let q = exec_call("ALTER TABLE t ADD CONSTRAINT c CHECK (a <> 'x')");
        assert_eq!(
            q,
            "CALL migrate_exec('ALTER TABLE t ADD CONSTRAINT c CHECK (a <> ''x'')', lock_timeout => '2s');"
        );
    }
}
